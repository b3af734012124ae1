"""``verify --dir --jobs 2`` against one job over the same archive, side by side.

The archive is synthesised as in ``bench/verify_incremental.py`` (6 chains sealed by the sealer's own
ChainSealer as today's sealer writes them, objects built by the sink's own ``build_object``). Then, in
``--rounds`` rounds, each side first in turn: the one-job verification (what ``verify --dir`` runs) and the
N-job one (``verify_parallel``, what ``verify --dir --jobs N`` runs). The reports must be identical. Besides
the wall-clock ratio, which other work on the machine distorts (two processes take a larger share of
contended cores than one), it prints the ratio from CPU time: the one-job run's CPU seconds over the
parent's (listing, merging: serial) plus the busiest worker's, i.e. the speed-up on free cores if the
workers' CPU time holds. Peak RSS is the parent's and the largest worker's (``resource.getrusage``). Target (issue 21): 2 jobs at least 1.7x
one job on this 2-core machine; the figure depends on what else the machine runs (say so beside it).

    .venv/bin/python -m bench.verify_jobs [--records 1200000] [--jobs 2] [--object-records 2000] [--rounds 4]
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
    parser.add_argument("--rounds", type=int, default=4, help="rounds of both sides, alternating (default 4)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="auditseal-bench-jobs-") as tmp:
        archive = SynthesisedArchive(Path(tmp) / "archive", args.object_records)
        started = time.perf_counter()
        archive.grow(args.records)
        print(f"archive: {archive.records:,} records in {archive.objects} objects, synthesised in "
              f"{time.perf_counter() - started:.0f}s; {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f} before the runs")
        speedups, projected = [], []
        for run in range(1, args.rounds + 1):
            sides = {}
            for side in ((1, args.jobs) if run % 2 else (args.jobs, 1)):  # each side first in turn
                stats: dict = {}
                started, cpu = time.perf_counter(), time.process_time()
                result = verify_parallel(ArchiveVerifier(archive.keyring, as_of_micros=archive.now),
                                         DirectorySource(archive.root), side, stats)
                sides[side] = (result, time.perf_counter() - started, time.process_time() - cpu, stats)
            (one, one_s, one_cpu, _), (many, many_s, parent_cpu, stats) = sides[1], sides[args.jobs]
            if not one.intact or many.as_dict() != one.as_dict():
                print(f"reports differ or not intact: {one.as_dict()['violation_counts']} / "
                      f"{many.as_dict()['violation_counts']}", file=sys.stderr)
                return 1
            speedups.append(one_s / many_s)
            # what the run would take on free cores: the parent's own (serial) CPU, then the busiest worker's
            workers = stats["worker_cpu_s"]
            projected.append(one_cpu / (parent_cpu + max(workers.values())))
            print(f"run {run}: 1 job {one.records / one_s:,.0f} records/s ({one_s:.2f}s, {one_cpu:.2f} CPU-s); "
                  f"{args.jobs} jobs {many.records / many_s:,.0f} records/s ({many_s:.2f}s; parent {parent_cpu:.2f} "
                  f"CPU-s, workers {', '.join(f'{s:.2f}' for s in sorted(workers.values()))} CPU-s over "
                  f"{stats['units']} partitions); same report; wall-clock speed-up {one_s / many_s:.2f}x, from CPU "
                  f"time {projected[-1]:.2f}x (load average {os.getloadavg()[0]:.1f})")
        parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"peak RSS: parent {parent_mb:.0f} MB, largest worker {worker_mb:.0f} MB; target: {args.jobs} jobs >= "
              f"1.7x one job (wall clock {min(speedups):.2f}x-{max(speedups):.2f}x; from CPU time "
              f"{min(projected):.2f}x-{max(projected):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
