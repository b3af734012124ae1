"""``auditseal timeline --dir`` with the manifests' query index against a full scan of the same archive.

The archive is synthesised into a temporary directory with the production code paths but no broker or
bucket (as ``bench/verify.py`` does): synthetic events spread evenly over ``--days`` days, each of 6 chains
sealed by the sealer's own ChainSealer (a signed checkpoint per 2,000 entries), cut into objects of
``--object-records`` records by the sink's own ``build_object`` (which writes the query index), each written
with its manifest under the bucket's key layout. Then, side by side, for a one-actor, one-day query and a
one-resource query over the whole period: the timeline reading only the objects the index allows
(``build_timeline``, what ``auditseal timeline --dir`` runs) and the same timeline reading every object
(``--no-index``). Both answers must be identical and complete. Targets (issue 20): the one-actor, one-day
query reads at most 5% of the objects and answers at least 20x faster than the full scan.

    .venv/bin/python -m bench.timeline [--events 2000000] [--days 60] [--object-records 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from pipeline.archive.container import build_object
from pipeline.archive.retention import ComplianceProfile
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import Keyring, generate_signing_key
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.timeline.query import TimelineQuery
from pipeline.timeline.scan import build_timeline
from pipeline.verifier.archive import DirectorySource
from pipeline.wire.codec import default_codec

PARTITIONS = 6
CHECKPOINT_EVERY = 2000
TOPIC = "audit.sealed"
DAY = 86_400_000_000
START = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def synthesise(root: Path, events: int, days: int, object_records: int) -> tuple[Keyring, Counter, int]:
    """Write the archive; returns its keyring, the events per actor, and the number of objects."""
    codec = default_codec()
    key = generate_signing_key()
    keyring = Keyring().rotate(key.public_key, START - DAY)
    profile = ComplianceProfile("bench", days=1)
    sealers = [ChainSealer(f"audit.raw/{p}", p, key, ChainHead.genesis(f"audit.raw/{p}")) for p in range(PARTITIONS)]
    pending: list[list[tuple[int, int, bytes]]] = [[] for _ in range(PARTITIONS)]
    seqs, offsets, batch = [0] * PARTITIONS, [0] * PARTITIONS, [0] * PARTITIONS
    actors: Counter = Counter()
    objects = 0
    spacing = days * DAY // events

    def flush(partition: int) -> None:
        nonlocal objects
        obj = build_object(TOPIC, partition, pending[partition], profile=profile)
        path = root / obj.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(obj.body)
        (root / obj.manifest_key).write_bytes(obj.manifest_bytes)
        pending[partition] = []
        objects += 1

    def add(partition: int, value: bytes, micros: int) -> None:
        pending[partition].append((offsets[partition], micros // 1000, value))
        offsets[partition] += 1
        if len(pending[partition]) >= object_records:
            flush(partition)

    for n, event in enumerate(synthetic_events(events, seed=20)):
        event["occurred_at"] = START + n * spacing
        actors[event["actor"]["id"]] += 1
        partition = n % PARTITIONS
        sealed = sealers[partition].seal(codec.encode(event), seqs[partition], event["occurred_at"])
        seqs[partition] += 1
        add(partition, sealed.value, event["occurred_at"])
        batch[partition] += 1
        if batch[partition] == CHECKPOINT_EVERY:
            add(partition, sealers[partition].checkpoint(event["occurred_at"]).value, event["occurred_at"])
            batch[partition] = 0
    for partition in range(PARTITIONS):
        if batch[partition]:
            add(partition, sealers[partition].checkpoint(START + days * DAY).value, START + days * DAY)
        if pending[partition]:
            flush(partition)
    return keyring, actors, objects


def measure(root: Path, keyring: Keyring, query: TimelineQuery, name: str) -> tuple[float, float]:
    """Run ``query`` with and without the index; print both sides; return (objects share read, speed-up)."""
    started = time.perf_counter()
    indexed = build_timeline(DirectorySource(root), query, keyring)
    indexed_s = time.perf_counter() - started
    started = time.perf_counter()
    full = build_timeline(DirectorySource(root), query, keyring, use_index=False)
    full_s = time.perf_counter() - started
    same = [e.head.event_id for e in indexed.events] == [e.head.event_id for e in full.events]
    if not (same and indexed.complete and full.complete):
        print(f"{name}: answers differ or are incomplete: {len(indexed.events)} vs {len(full.events)} events, "
              f"problems {indexed.problems[:3]} / {full.problems[:3]}", file=sys.stderr)
        raise SystemExit(1)
    share = indexed.objects_read / indexed.objects_total
    print(f"{name}: {len(indexed.events)} events, all verified, same answer both ways\n"
          f"  with the index: {indexed.objects_read}/{indexed.objects_total} objects read ({share:.1%}), "
          f"{indexed.records_read:,} records, {indexed_s:.2f}s\n"
          f"  full scan:      {full.objects_read}/{full.objects_total} objects read, {full.records_read:,} records, "
          f"{full_s:.2f}s\n"
          f"  speed-up {full_s / indexed_s:.1f}x")
    return share, full_s / indexed_s


def main() -> int:
    """Synthesise, then measure each query both ways."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000, help="sealed events to archive (default 2000000)")
    parser.add_argument("--days", type=int, default=60, help="days the events are spread over (default 60)")
    parser.add_argument("--object-records", type=int, default=2000,
                        help="records per archive object (default 2000; the sink closes objects at 20,000 records "
                        "or 10 s, so at a steady 1,200 events/s over 6 partitions its objects hold 2,000)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    with tempfile.TemporaryDirectory(prefix="auditseal-bench-timeline-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        keyring, actors, objects = synthesise(root, args.events, args.days, args.object_records)
        size = sum(p.stat().st_size for p in root.rglob("*.avro"))
        print(f"archive: {args.events:,} events over {args.days} days in {objects} objects ({size / 1e6:.0f} MB), "
              f"synthesised in {time.perf_counter() - started:.0f}s")
        actor = next(name for name, _ in actors.most_common() if name.startswith("usr_"))
        day = START + (args.days // 2) * DAY
        share, speedup = measure(root, keyring, TimelineQuery.of(actor=actor, since_micros=day, until_micros=day + DAY),
                                 f"one actor ({actor}), one day")
        resource = next(iter(build_timeline(DirectorySource(root), TimelineQuery.of(
            actor=actor, since_micros=day, until_micros=day + DAY), keyring).events)).head.resource_id
        measure(root, keyring, TimelineQuery.of(resource=resource), f"one resource ({resource}), all {args.days} days")
        print(f"targets (one actor, one day): <= 5% of objects read (measured {share:.1%}), >= 20x faster than a full "
              f"scan (measured {speedup:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
