"""``auditseal verify --dir`` throughput on one core, against a plain fastavro read of the same files.

The archive is synthesised once into a temporary directory with the production code paths but no
broker or bucket: each of 6 chains is sealed by the sealer's own ChainSealer (a signed checkpoint
per 2,000 entries, a fresh Ed25519 key), and its records are cut into objects of 20,000 records by
the sink's own ``build_object`` (deflate level 1, the defaults), each written with its manifest
under the bucket's key layout. Then, ``--runs`` times: the verifier (``ArchiveVerifier`` over a
``DirectorySource``, which is what ``verify --dir`` runs, minus printing the report) and a plain
``fastavro.reader`` iterating every record of every object. Targets: >= 200,000 records/s and a
ratio >= 0.5. Peak RSS is the process's, from ``resource.getrusage``. The three sides (v1, v2 below, the
plain read) take turns, the order reversed every other run; each side's start-up (keyring read and every
object listed, up to the first object handed to the verifier; for the plain read, to its first record) is
printed with its share of the side's time, and the figures from the first object on beside the whole ones.

The same entries are also archived as today's sealer writes them (v2 checkpoints, a tree head before each)
and verified beside the v1 archive, the two taking turns (each first in every other run): target v2/v1 >= 0.9.
Each side is timed by the wall clock and by the process's CPU time; on a machine shared with other work the
wall clock mostly measures the neighbours, so the ratio of the best CPU times is the figure to read.

    .venv/bin/python -m bench.verify [--records 1200000] [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

import fastavro

from bench.steady import Side
from pipeline.archive.container import build_object
from pipeline.archive.retention import ComplianceProfile
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import Keyring, generate_signing_key, save_keyring
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.verifier.archive import ArchiveVerifier, DirectorySource
from pipeline.wire.codec import default_codec

PARTITIONS = 6
CHECKPOINT_EVERY = 2000
OBJECT_RECORDS = 20_000
TOPIC = "audit.sealed"


def synthesise_archive(root: Path, records: int, *, seed: int = 5, heads: bool = False) -> tuple[Path, int]:
    """Write an archive of at least ``records`` sealed entries (plus their checkpoints) under ``root``;
    returns the keyring file that verifies it and the number of archived records. ``heads``: as today's
    sealer writes it (v2 checkpoints, a tree head before each); else as the v1 sealer did."""
    codec = default_codec()
    events = [codec.encode(event) for event in synthetic_events(min(records, 20_000), seed=seed)]
    key = generate_signing_key()
    start_micros = int(time.time() * 1_000_000) - 3_600_000_000
    keyring_file = root / "keyring.json"
    save_keyring(Keyring().rotate(key.public_key, start_micros), keyring_file)
    profile = ComplianceProfile("bench", days=1)
    archive = root / "archive"
    per_chain = -(-records // PARTITIONS)
    written = 0
    for partition in range(PARTITIONS):
        chain_id = f"audit.raw/{partition}"
        sealer = ChainSealer(chain_id, partition, key, ChainHead.genesis(chain_id),
                             origin=f"auditseal/bench/{chain_id}" if heads else None)
        pending: list[tuple[int, int, bytes]] = []
        offset = 0

        def flush(partition: int = partition) -> None:
            nonlocal pending
            if pending:
                obj = build_object(TOPIC, partition, pending, profile=profile)
                path = archive / obj.key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(obj.body)
                (archive / obj.manifest_key).write_bytes(obj.manifest_bytes)
                pending = []

        for first in range(0, per_chain, CHECKPOINT_EVERY):
            now = start_micros + first
            for n in range(first, min(first + CHECKPOINT_EVERY, per_chain)):
                sealed = sealer.seal(events[(n * PARTITIONS + partition) % len(events)], n, now)
                pending.append((offset, now // 1000, sealed.value))
                offset += 1
            if heads:
                pending.append((offset, now // 1000, sealer.tree_head(now).value))
                offset += 1
            pending.append((offset, now // 1000, sealer.checkpoint(now).value))
            offset += 1
            if len(pending) >= OBJECT_RECORDS:
                written += len(pending)
                flush()
        written += len(pending)
        flush()
    return keyring_file, written


def plain_read(archive: Path, marks: dict[str, float] | None = None) -> int:
    """Iterate every record of every object with fastavro and nothing else; the record count. ``marks["first"]``:
    when the first record was read."""
    count = 0
    for path in sorted(archive.rglob("*.avro")):
        with path.open("rb") as stream:
            for _ in fastavro.reader(stream):
                if not count and marks is not None:
                    marks["first"] = time.perf_counter()
                count += 1
    return count


class _MarkedSource(DirectorySource):
    """``DirectorySource`` noting when its first entry is handed out (the keyring read, every object listed)."""

    def __init__(self, root: Path, marks: dict[str, float]) -> None:
        super().__init__(root)
        self.marks = marks

    def entries(self):
        for entry in super().entries():
            self.marks.setdefault("first", time.perf_counter())
            yield entry


def verify(archive: Path, keyring_file: Path, head_tolerance_s: float = 300, marks: dict[str, float] | None = None):
    """What ``auditseal verify --dir`` runs."""
    from pipeline.integrity.keyring import load_keyring

    source = DirectorySource(archive) if marks is None else _MarkedSource(archive, marks)
    return ArchiveVerifier(load_keyring(keyring_file), head_tolerance_s=head_tolerance_s).verify(source)


def main() -> int:
    """Synthesise, then measure twice (and profile once with --profile)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_200_000,
                        help="sealed entries to archive (default 1200000: seconds per side on a quiet core, tens loaded)")
    parser.add_argument("--runs", type=int, default=3, help="measurements of each side (default 3)")
    parser.add_argument("--profile", action="store_true", help="also show the verifier's top functions by own time (on the v2 archive)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    with tempfile.TemporaryDirectory(prefix="auditseal-bench-verify-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        keyring_file, total = synthesise_archive(root, args.records)
        archive = root / "archive"
        objects = len(list(archive.rglob("*.avro")))
        size = sum(p.stat().st_size for p in archive.rglob("*.avro"))
        print(f"archive: {total:,} records in {objects} objects ({size / 1e6:.1f} MB, deflate), "
              f"synthesised in {time.perf_counter() - started:.1f}s")
        v2_root = root / "v2"
        v2_root.mkdir()
        v2_keyring, v2_total = synthesise_archive(v2_root, args.records, heads=True)
        best = {"v1": (float("inf"), float("inf")), "v2": (float("inf"), float("inf"))}
        shares: list[float] = []
        for run in range(1, args.runs + 1):
            timed = {}
            sides: dict[str, Side] = {}
            for side in (("v1", "v2", "read") if run % 2 else ("read", "v2", "v1")):
                marks: dict[str, float] = {}
                started, cpu = time.perf_counter(), time.process_time()
                if side == "read":
                    read = plain_read(archive, marks)
                    finished = time.perf_counter()
                    read_cpu = time.process_time() - cpu
                    assert read == total
                    sides["read"] = Side(total, started, marks["first"], finished)
                    shares.append(sides["read"].startup_share)
                    continue
                if side == "v1":
                    report = verify(archive, keyring_file, marks=marks)
                else:  # synthesised an hour ago
                    report = verify(v2_root / "archive", v2_keyring, head_tolerance_s=7200, marks=marks)
                finished = time.perf_counter()
                timed[side] = (finished - started, time.process_time() - cpu)
                sides[side] = Side(report.records, started, marks["first"], finished)
                shares.append(sides[side].startup_share)
                if not report.intact or report.records != (total if side == "v1" else v2_total):
                    print(f"{side} verification failed: {report.as_dict()['violation_counts']}, {report.records} "
                          "records", file=sys.stderr)
                    return 1
                if side == "v1":
                    checkpoints = report.checkpoints
                best[side] = (min(best[side][0], timed[side][0]), min(best[side][1], timed[side][1]))
            (verify_seconds, verify_cpu), (v2_seconds, v2_cpu) = timed["v1"], timed["v2"]
            verify_rate, read_rate = total / verify_seconds, total / sides["read"].whole_s
            print(f"run {run}: verify --dir {verify_rate:,.0f} records/s ({verify_seconds:.2f}s, CPU {verify_cpu:.2f}s, "
                  f"{checkpoints} checkpoints valid); plain fastavro read {read_rate:,.0f} records/s "
                  f"({sides['read'].whole_s:.2f}s, CPU {read_cpu:.2f}s); ratio {verify_rate / read_rate:.2f}, by CPU time "
                  f"{read_cpu / verify_cpu:.2f}; start-up (to the "
                  f"first object or record) verify {sides['v1'].startup_s:.3f}s = {sides['v1'].startup_share:.2%}, "
                  f"read {sides['read'].startup_s:.3f}s = {sides['read'].startup_share:.2%}; from the first on "
                  f"(steady) verify {sides['v1'].rate:,.0f} records/s, read {sides['read'].rate:,.0f}: ratio "
                  f"{sides['v1'].rate / sides['read'].rate:.2f}")
            v2_rate = v2_total / v2_seconds
            print(f"       same entries as v2 checkpoints + tree heads (today's sealer): verify --dir "
                  f"{v2_rate:,.0f} records/s ({v2_seconds:.2f}s, CPU {v2_cpu:.2f}s); ratio v2/v1 wall clock "
                  f"{v2_rate / verify_rate:.2f}, CPU {(v2_total / v2_cpu) / (total / verify_cpu):.2f}")
        (v1_wall, v1_cpu), (v2_wall, v2_cpu) = best["v1"], best["v2"]
        print(f"v2/v1 over the best of {args.runs} runs (records/s of the same entries): CPU time "
              f"{(v2_total / v2_cpu) / (total / v1_cpu):.2f}, wall clock {(v2_total / v2_wall) / (total / v1_wall):.2f} "
              f"(target >= 0.9); best v1 {total / v1_wall:,.0f} records/s, v2 {v2_total / v2_wall:,.0f}")
        print(f"start-up at most {max(shares):.2%} of a side's time (target < 5%)")
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak_mb:.0f} MB; targets: >= 200,000 records/s, ratio >= 0.5")
        if args.profile:
            profiler = cProfile.Profile()  # the v2 archive: what heads add shows there
            profiler.runcall(verify, v2_root / "archive", v2_keyring, 7200)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
            print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
