"""Incremental ``verify --since-state`` over 1% new data against a full ``verify --dir`` of the same archive.

The archive is synthesised into a temporary directory with the production code paths but no broker or
bucket, as ``bench/verify.py`` and ``bench/timeline.py`` do: each of 6 chains sealed by the sealer's own
ChainSealer as today's sealer writes it (v2 checkpoints, a signed tree head before each checkpoint of
2,000 entries), cut into objects of ``--object-records`` records by the sink's own ``build_object``, each
written with its manifest under the bucket's key layout. Then:

1. a full verification of ``--records`` records that writes the state file (what ``verify --dir
   --state-out`` runs), beside a plain full verification (the state's own cost);
2. ``--new-share`` (1%) more records are sealed and archived, continuing the same chains;
3. side by side, twice: a full verification of the grown archive, and the incremental one from the state
   file (``verify --since-state FILE --state-out FILE``: the state read and its anchors' signatures checked,
   the archive listed, the covered objects held to the state, the new objects verified, the consistency
   proofs, the new state written). Both must be INTACT. Target (issue 21): the incremental run costs at
   most 3% of the full one.

    .venv/bin/python -m bench.verify_incremental [--records 2000000] [--new-share 0.01] [--object-records 2000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from pipeline.archive.container import build_object
from pipeline.archive.retention import ComplianceProfile
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import Keyring, generate_signing_key
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.verifier.archive import ArchiveVerifier, DirectorySource
from pipeline.verifier.incremental import IncrementalVerifier, load_state, write_state
from pipeline.wire.codec import default_codec

PARTITIONS = 6
CHECKPOINT_EVERY = 2000
TOPIC = "audit.sealed"


class SynthesisedArchive:
    """An archive of 6 chains that can be grown: every call seals on from where the last one stopped."""

    def __init__(self, root: Path, object_records: int, seed: int = 21) -> None:
        self.root = root
        self.object_records = object_records
        codec = default_codec()
        self.events = [codec.encode(event) for event in synthetic_events(20_000, seed=seed)]
        key = generate_signing_key()
        self.now = int(time.time() * 1_000_000) - 3_600_000_000
        self.keyring = Keyring().rotate(key.public_key, self.now - 1)
        self.profile = ComplianceProfile("bench", days=1)
        self.sealers = [ChainSealer(f"audit.raw/{p}", p, key, ChainHead.genesis(f"audit.raw/{p}"),
                                    origin=f"auditseal/bench/audit.raw/{p}") for p in range(PARTITIONS)]
        self.raw = [0] * PARTITIONS
        self.offsets = [0] * PARTITIONS
        self.records = 0
        self.objects = 0

    def grow(self, entries: int) -> None:
        """Seal ``entries`` more entries over the chains (whole batches), and archive them."""
        per_chain = -(-entries // PARTITIONS)
        for partition, sealer in enumerate(self.sealers):
            pending: list[tuple[int, int, bytes]] = []

            def add(value: bytes, partition: int = partition, pending: list = pending) -> None:
                pending.append((self.offsets[partition], self.now // 1000, value))
                self.offsets[partition] += 1

            for first in range(0, per_chain, CHECKPOINT_EVERY):
                self.now += 1000
                for _ in range(min(CHECKPOINT_EVERY, per_chain - first)):
                    raw = self.raw[partition]
                    add(sealer.seal(self.events[(raw * PARTITIONS + partition) % len(self.events)], raw,
                                    self.now).value)
                    self.raw[partition] += 1
                add(sealer.tree_head(self.now).value)
                add(sealer.checkpoint(self.now).value)
                while len(pending) >= self.object_records:
                    self._write(partition, pending[:self.object_records])
                    del pending[:self.object_records]
            if pending:
                self._write(partition, pending)

    def _write(self, partition: int, records: list[tuple[int, int, bytes]]) -> None:
        obj = build_object(TOPIC, partition, records, profile=self.profile)
        path = self.root / obj.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(obj.body)
        (self.root / obj.manifest_key).write_bytes(obj.manifest_bytes)
        self.records += len(records)
        self.objects += 1


def _require_intact(report, what: str) -> None:
    if not report.intact:
        print(f"{what}: not intact: {report.as_dict()['violation_counts']}", file=sys.stderr)
        raise SystemExit(1)


def full(archive: SynthesisedArchive):
    """What ``auditseal verify --dir`` runs (minus printing); (report, seconds)."""
    started = time.perf_counter()
    report = ArchiveVerifier(archive.keyring, as_of_micros=archive.now).verify(DirectorySource(archive.root))
    return report, time.perf_counter() - started


def with_state(archive: SynthesisedArchive, state_in: Path | None, state_out: Path):
    """What ``verify --dir [--since-state FILE] --state-out FILE`` runs, reading and writing included."""
    started = time.perf_counter()
    source = DirectorySource(archive.root)
    since = load_state(state_in, archive.keyring, source.description) if state_in is not None else None
    verifier = IncrementalVerifier(archive.keyring, as_of_micros=archive.now, since=since)
    report = verifier.verify(source)
    write_state(state_out, verifier.state(report))
    return report, time.perf_counter() - started


def main() -> int:
    """Synthesise, verify with a state, grow by --new-share, then full against incremental side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000, help="sealed entries first verified (default 2000000)")
    parser.add_argument("--new-share", type=float, default=0.01, help="new entries, as a share of --records (0.01)")
    parser.add_argument("--object-records", type=int, default=2000,
                        help="records per object (default 2000, as bench/timeline.py: the sink's 10 s objects at a "
                        "steady 1,200 events/s over 6 partitions)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core: both sides alike
    with tempfile.TemporaryDirectory(prefix="auditseal-bench-incremental-") as tmp:
        archive = SynthesisedArchive(Path(tmp) / "archive", args.object_records)
        started = time.perf_counter()
        archive.grow(args.records)
        size = sum(p.stat().st_size for p in archive.root.rglob("*.avro"))
        print(f"archive: {archive.records:,} records in {archive.objects} objects ({size / 1e6:.0f} MB), "
              f"synthesised in {time.perf_counter() - started:.0f}s")
        state = Path(tmp) / "state.json"
        report, stated_s = with_state(archive, None, state)
        _require_intact(report, "full run with --state-out")
        plain, plain_s = full(archive)
        _require_intact(plain, "full run")
        print(f"full verify writing the state: {stated_s:.2f}s; plain full verify {plain_s:.2f}s "
              f"(state overhead {stated_s / plain_s - 1:+.1%}); state file {state.stat().st_size / 1e3:.0f} kB")
        before = (archive.records, archive.objects)
        archive.grow(int(args.records * args.new_share))
        new_records, new_objects = archive.records - before[0], archive.objects - before[1]
        print(f"grown by {new_records:,} records ({new_records / before[0]:.2%}) in {new_objects} new objects")
        ratios = []
        for run in (1, 2):
            grown, full_s = full(archive)
            _require_intact(grown, "full run of the grown archive")
            out = Path(tmp) / f"state-{run}.json"
            incremental, incremental_s = with_state(archive, state, out)
            _require_intact(incremental, "incremental run")
            if incremental.records != new_records or incremental.last_seq != grown.last_seq:
                print(f"incremental run read {incremental.records} records, expected {new_records}; chains "
                      f"{incremental.last_seq} vs {grown.last_seq}", file=sys.stderr)
                return 1
            ratios.append(incremental_s / full_s)
            proofs = incremental.incremental["consistency"]
            print(f"run {run}: full verify {grown.records:,} records in {full_s:.2f}s "
                  f"({grown.records / full_s:,.0f} records/s); incremental {incremental.records:,} records in "
                  f"{incremental.objects} objects, {incremental.incremental['objects_covered']} covered objects "
                  f"listed, {sum('consistent (' in p for p in proofs.values())}/{len(proofs)} consistency proofs, "
                  f"{incremental_s:.3f}s; incremental/full {incremental_s / full_s:.2%}")
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak_mb:.0f} MB; target: incremental <= 3% of full (measured {min(ratios):.2%} best, "
              f"{max(ratios):.2%} worst)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
