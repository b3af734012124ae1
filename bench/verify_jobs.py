"""``verify --dir --jobs 2`` against one job over the same archive, side by side.

The archive is synthesised as in ``bench/verify_incremental.py`` (6 chains sealed by the sealer's own
ChainSealer as today's sealer writes them, objects built by the sink's own ``build_object``). Then, twice
and alternately: the one-job verification (``ArchiveVerifier.verify``, what ``verify --dir`` runs) and the
N-job one (``verify_parallel``, what ``verify --dir --jobs N`` runs). The reports must be identical. Peak RSS
is the parent's and the largest worker's (``resource.getrusage``). Target (issue 21): 2 jobs at least 1.7x
one job on this 2-core machine; the figure depends on what else the machine runs (say so beside it).

    .venv/bin/python -m bench.verify_jobs [--records 1200000] [--jobs 2] [--object-records 2000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench.verify_incremental import SynthesisedArchive
from pipeline.verifier.archive import ArchiveVerifier, DirectorySource
from pipeline.verifier.parallel import verify_parallel


def main() -> int:
    """Synthesise, then one job and N jobs, alternately, twice."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_200_000, help="sealed entries to archive (default 1200000)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of the parallel run (default 2)")
    parser.add_argument("--object-records", type=int, default=2000, help="records per object (default 2000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="auditseal-bench-jobs-") as tmp:
        archive = SynthesisedArchive(Path(tmp) / "archive", args.object_records)
        started = time.perf_counter()
        archive.grow(args.records)
        print(f"archive: {archive.records:,} records in {archive.objects} objects, synthesised in "
              f"{time.perf_counter() - started:.0f}s; {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f} before the runs")
        speedups = []
        for run in (1, 2):
            started = time.perf_counter()
            one = ArchiveVerifier(archive.keyring, as_of_micros=archive.now).verify(DirectorySource(archive.root))
            one_s = time.perf_counter() - started
            started = time.perf_counter()
            many = verify_parallel(ArchiveVerifier(archive.keyring, as_of_micros=archive.now),
                                   DirectorySource(archive.root), args.jobs)
            many_s = time.perf_counter() - started
            if not one.intact or many.as_dict() != one.as_dict():
                print(f"reports differ or not intact: {one.as_dict()['violation_counts']} / "
                      f"{many.as_dict()['violation_counts']}", file=sys.stderr)
                return 1
            speedups.append(one_s / many_s)
            print(f"run {run}: 1 job {one.records / one_s:,.0f} records/s ({one_s:.2f}s); {args.jobs} jobs "
                  f"{many.records / many_s:,.0f} records/s ({many_s:.2f}s); same report; speed-up "
                  f"{one_s / many_s:.2f}x (load average {os.getloadavg()[0]:.1f})")
        parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"peak RSS: parent {parent_mb:.0f} MB, largest worker {worker_mb:.0f} MB; target: {args.jobs} jobs >= "
              f"1.7x one job (measured {min(speedups):.2f}x-{max(speedups):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
