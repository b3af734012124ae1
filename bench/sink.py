"""S3 sink throughput into the local S3 server, object sizes, and where the time goes.

A throwaway sealed topic (6 partitions) is filled first with real sealed records: each chain is
sealed by the sealer's ChainSealer and written by its transactional ChainWriter, a checkpoint per
2,000 entries, as the sealer role. The sink then archives that backlog in this process, with
the production defaults (20,000 records / 16 MiB / 10 s per object, deflate level 1, 4 writers)
unless told otherwise, into its own key prefix. records/s and MB/s count the records of full
objects, from the sink's first consumed record to the commit of the last full object (each
partition's tail closes ``max_age`` later, which measures the timer, not the sink); "value MB/s"
is Kafka value bytes, "object MB/s" the bytes stored, "CPU us/record" the sink process's CPU time
(every thread, librdkafka's included) per record archived. The backlog is archived alternately with the
readable object builder (``build_object(reference=True)``: the Python reference, the sink's cost before the
compiled pass) and the compiled one (production), ``--rounds`` times each, each first in every other round
(with ``--profile``, then once more under cProfile, every thread merged, for the top functions by own time).
Each run's start-up (the sink built, its group joined, up to its first consumed record) is left out of the
figure and printed beside it with its share of the run (``bench/steady.py``); the default backlog keeps it
under 5%. Before those, both builders build the same
20,000-record object in this process (wall and CPU time per record, and whether the bytes are identical).
On a busy machine the absolute figures move with the load: compare the two builders within one run.
Objects are locked for one day (a bench profile), under ``bench/``.

    .venv/bin/auditseal dev up
    .venv/bin/python -m bench.sink [--records 1800000] [--codec deflate|null] [--rounds 2] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from bench.steady import Side
from connectors.s3sink.batching import Batch, BatchLimits
from connectors.s3sink.bucket import ArchiveBucket
from connectors.s3sink.worker import S3Sink, SinkConfig
from pipeline.archive.container import ArchiveObject, build_object
from pipeline.archive.retention import ComplianceProfile, load_profiles
from pipeline.config import KafkaSettings, S3Settings
from pipeline.dev.provision import acl_binding
from pipeline.dev.stack import LocalStack
from pipeline.permissions.topology import Grant
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.sealer.output import ChainWriter
from pipeline.wire.codec import default_codec

PARTITIONS = 6
CHECKPOINT_EVERY = 2000


def make_topics(stack: LocalStack) -> tuple[str, str]:
    """A fresh (raw, sealed) topic pair: the sealer's chain writers need the raw one, the sink reads the sealed one."""
    suffix = secrets.token_hex(4)
    raw, sealed = f"bench.raw.{suffix}", f"bench.sealed.{suffix}"
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    for future in admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)
                                       for name in (raw, sealed)]).values():
        future.result(30)
    grants = [("User:sealer", Grant("topic", raw, op)) for op in ("read", "describe")]
    grants += [("User:sealer", Grant("topic", sealed, op)) for op in ("write", "read", "describe")]
    grants += [("User:sink", Grant("topic", sealed, op)) for op in ("read", "describe")]
    for future in admin.create_acls([acl_binding(principal, grant) for principal, grant in grants]).values():
        future.result(30)
    return raw, sealed


def drop_topics(stack: LocalStack, *topics: str) -> None:
    """Delete the bench topics (the archived objects stay locked for a day)."""
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    for future in admin.delete_topics(list(topics)).values():
        future.result(30)


def fill(stack: LocalStack, raw: str, topic: str, records: int) -> tuple[int, int]:
    """Seal ``records`` events over the partitions, transactionally; (records, value bytes) written."""
    codec = default_codec()
    events = [codec.encode(event) for event in synthetic_events(min(records, 50_000), seed=5)]
    key = stack.signer()
    settings = KafkaSettings.from_env(stack.env("sealer"))
    written = size = 0
    per_partition = records // PARTITIONS
    for partition in range(PARTITIONS):
        writer = ChainWriter(settings, raw_topic=raw, sealed_topic=topic, partition=partition,
                             signing_key=key)
        sealer = writer.open()
        try:
            for start in range(0, per_partition, CHECKPOINT_EVERY):
                count = min(CHECKPOINT_EVERY, per_partition - start)
                now = int(time.time() * 1_000_000)
                batch = [sealer.seal(events[(start + n) % len(events)], start + n, now) for n in range(count)]
                batch.append(sealer.checkpoint(now))
                writer.write(batch, timeout=60)
                written += len(batch)
                size += sum(len(r.value) for r in batch)
        finally:
            writer.close()
    return written, size


class TimedSink(S3Sink):
    """The sink, stopping once every record is committed; optionally profiling its writer threads."""

    def __init__(self, *args, total: int, profile: bool, reference: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reference = reference
        self.total = total
        self.committed_records = 0
        self.first_record: float | None = None
        self.full_records = self.full_bytes = 0
        self.last_full_at: float | None = None
        self.marks: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.profilers: list[cProfile.Profile] = []
        self.profile = profile
        self._local = threading.local()

    def _enqueue(self, part, batch: Batch) -> None:
        self.first_record = min(self.first_record or batch.opened_at, batch.opened_at)
        super()._enqueue(part, batch)

    def _build(self, batch: Batch) -> ArchiveObject:
        if not self.reference:
            return super()._build(batch)
        config = self.config
        return build_object(batch.topic, batch.partition, batch.records, profile=config.profile, prefix=config.prefix,
                            codec=config.codec, level=config.deflate_level, master_key=config.master_key,
                            reference=True)

    def _flush(self, batch, cancelled):
        if not self.profile:
            return super()._flush(batch, cancelled)
        profiler = getattr(self._local, "profiler", None)
        if profiler is None:
            profiler = self._local.profiler = cProfile.Profile()
            self.profilers.append(profiler)
        profiler.enable()
        try:
            return super()._flush(batch, cancelled)
        finally:
            profiler.disable()

    def _commit(self, part, archive) -> bool:
        committed = super()._commit(part, archive)
        if committed:
            records = archive.manifest.record_count
            self.committed_records += records
            if records >= self.config.limits.max_records:  # a full object: the tail waits for max_age instead
                self.full_records += records
                self.full_bytes += archive.manifest.size
                self.last_full_at = time.monotonic()
                self.marks.append((self.last_full_at, self.full_records))
            if self.committed_records >= self.total:
                self.stop.set()
        return committed


def run(stack: LocalStack, topic: str, total: int, value_bytes: int, *, codec: str, prefix: str,
        profile: bool = False, reference: bool = False, timeout: float = 900) -> dict:
    """Archive the whole topic once into ``prefix``; the figures of that run. Its start-up (the sink built,
    its consumer joined, up to the first record consumed) is apart from the figure, in ``figures["side"]``."""
    launched = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        profiles = Path(folder) / "compliance.yaml"
        profiles.write_text("version: 1\ndefault: bench\nprofiles:\n  bench: {retention: 1d, why: benchmark}\n")
        profile_entry = load_profiles(profiles).get(None)
    s3 = S3Settings.from_env(stack.env("sink"))
    config = SinkConfig(profile=profile_entry, topic=topic, group_id=f"auditseal-sink-bench-{secrets.token_hex(4)}",
                        prefix=prefix, codec=codec, limits=BatchLimits())
    sink = TimedSink(KafkaSettings.from_env(stack.env("sink")), ArchiveBucket(s3.client(), s3.bucket), config,
                     total=total, profile=profile, reference=reference)
    main_profiler = cProfile.Profile() if profile else None
    if main_profiler:
        main_profiler.enable()
    watchdog = threading.Timer(timeout, sink.stop.set)
    watchdog.start()
    cpu_started = time.process_time()
    try:
        sink.run(sink.stop)
    finally:
        watchdog.cancel()
        cpu_seconds = time.process_time() - cpu_started
        if main_profiler:
            main_profiler.disable()
    if sink.committed_records < total or sink.last_full_at is None:
        raise SystemExit(f"only {sink.committed_records} of {total} records archived within {timeout:g} s")
    # the backlog's throughput: up to the last full object (a partition's tail closes max_age later)
    seconds = sink.last_full_at - sink.first_record
    records = sink.full_records
    listing = s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=f"{prefix}{topic}/")
    sizes = [item["Size"] for page in listing for item in page.get("Contents", [])
             if not item["Key"].endswith(".manifest.json")]
    figures = {"seconds": seconds, "records": records, "records_per_s": records / seconds,
               "side": Side(records, launched, sink.first_record, sink.last_full_at, tuple(sink.marks)),
               "value_mb_per_s": value_bytes * records / total / seconds / 1e6,
               "object_mb_per_s": sink.full_bytes / seconds / 1e6, "objects": len(sizes), "sizes": sizes,
               "cpu_us_per_record": cpu_seconds / sink.committed_records * 1e6}
    if profile:
        stats = pstats.Stats(main_profiler, stream=io.StringIO())
        for profiler in sink.profilers:
            stats.add(profiler)
        out = io.StringIO()
        stats.stream = out
        stats.sort_stats("tottime").print_stats(18)
        figures["profile"] = out.getvalue()
    return figures


def builders_side_by_side(stack: LocalStack, codec: str, records: int = 20_000) -> None:
    """Build one object of ``records`` sealed records with both builders, in this process; print us/record."""
    chain = ChainSealer.resume("audit.raw/0", 0, stack.signer(), None)  # the sealer's own records, without Kafka
    events = [default_codec().encode(event) for event in synthetic_events(records, seed=5)]
    batch = []
    for n, event in enumerate(events):
        batch.append((n, 1_767_225_600_000 + n, chain.seal(event, n, 1_000 * n).value))
        if n % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
            batch.append((len(batch), 1_767_225_600_000 + n, chain.checkpoint(n).value))
    profile = ComplianceProfile("bench", days=1)
    figures = {}
    for reference in (True, False, True, False):  # interleaved: both see the same load
        wall, cpu = time.perf_counter(), time.thread_time()
        built = build_object("bench.sealed", 0, batch, profile=profile, codec=codec, reference=reference)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        best = figures.get(reference)
        if best is None or wall < best[0]:
            figures[reference] = (wall, cpu, built)
    (ref_wall, ref_cpu, ref_built), (wall, cpu, built) = figures[True], figures[False]
    same = (ref_built.body, ref_built.manifest_bytes) == (built.body, built.manifest_bytes)
    print(f"object builder, {len(batch)} records, codec {codec} (best of 2, in-process): readable "
          f"{ref_wall / len(batch) * 1e6:.1f} us/record wall, {ref_cpu / len(batch) * 1e6:.1f} CPU; compiled "
          f"{wall / len(batch) * 1e6:.1f} wall, {cpu / len(batch) * 1e6:.1f} CPU; compiled/readable "
          f"{wall / ref_wall:.2f} wall, {cpu / ref_cpu:.2f} CPU; bytes identical: {same}")
    if not same:
        raise SystemExit("the compiled builder's object differs from the readable one's")


def main(argv: list[str] | None = None) -> int:
    """Fill a topic, archive it with each builder in turn, then once under the profiler; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_800_000, help="sealed records to archive (default 1800000: 15-40 s a run "
                        "on a quiet machine; objects commit in waves of 6 x 20,000, so the first wave is the ramp)")
    parser.add_argument("--codec", default="deflate", choices=["deflate", "null"])
    parser.add_argument("--rounds", type=int, default=2, help="runs with each builder, alternating (default 2)")
    parser.add_argument("--profile", action="store_true", help="also archive the backlog once under cProfile")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a run may take (default 900)")
    args = parser.parse_args(argv)
    stack = LocalStack()
    builders_side_by_side(stack, args.codec)
    raw, topic = make_topics(stack)
    try:
        started = time.monotonic()
        total, value_bytes = fill(stack, raw, topic, args.records)
        print(f"filled {topic}: {total} sealed records ({value_bytes / 1e6:.1f} MB of values, "
              f"{value_bytes / total:.0f} B average) in {time.monotonic() - started:.1f} s")
        print(f"sink: {PARTITIONS} partitions, objects of at most 20000 records / 16 MiB / 10 s, codec {args.codec}, "
              "4 writers, COMPLIANCE 1 day, object + manifest each locked and read back before the commit")
        run_id = secrets.token_hex(3)
        results: dict[str, list[dict]] = {"readable": [], "compiled": []}
        shares: list[float] = []
        ramps: list[float] = []
        for number in range(1, args.rounds + 1):
            for name in (("readable", "compiled") if number % 2 else ("compiled", "readable")):
                figures = run(stack, topic, total, value_bytes, codec=args.codec, timeout=args.timeout,
                              prefix=f"bench/{run_id}-{name}-{number}/", reference=name == "readable")
                shares.append(figures["side"].startup_share)
                ramps.append(figures["side"].ramp_share or 0.0)
                results[name].append(figures)
                sizes = figures["sizes"]
                print(f"run {number}, {name} builder: {figures['records']} records in full objects, "
                      f"{figures['records_per_s']:,.0f} records/s, {figures['cpu_us_per_record']:.1f} CPU us/record, "
                      f"{figures['value_mb_per_s']:.1f} value MB/s, {figures['object_mb_per_s']:.1f} object MB/s "
                      f"({figures['seconds']:.2f} s); {figures['objects']} objects, size min/median/max "
                      f"{min(sizes) / 1e6:.2f}/{statistics.median(sizes) / 1e6:.2f}/{max(sizes) / 1e6:.2f} MB, "
                      f"{value_bytes / sum(sizes):.1f}x smaller than the values; {figures['side'].describe('records')}",
                      flush=True)
        rate = {name: statistics.median(f["records_per_s"] for f in runs) for name, runs in results.items()}
        cpu = {name: statistics.median(f["cpu_us_per_record"] for f in runs) for name, runs in results.items()}
        print(f"median of {args.rounds}: readable {rate['readable']:,.0f} records/s, {cpu['readable']:.1f} CPU us/record; "
              f"compiled {rate['compiled']:,.0f} records/s, {cpu['compiled']:.1f} CPU us/record; compiled/readable "
              f"{rate['compiled'] / rate['readable']:.2f}x records/s, {cpu['compiled'] / cpu['readable']:.2f} CPU per record; "
              f"ramp and tail at most {max(ramps):+.1%} of a run's figure (target < 5%); the start-up left out (sink "
              f"built to its first record) at most {max(shares):.1%} of a run")
        if not args.profile:
            return 0
        figures = run(stack, topic, total, value_bytes, codec=args.codec, prefix=f"bench/{run_id}-profiled/",
                      profile=True, timeout=args.timeout)
        print(f"profiled run (compiled builder): {figures['records_per_s']:,.0f} records/s (cProfile slows it); top "
              "functions by own time, all threads:")
        print("\n".join(line for line in figures["profile"].splitlines() if line.strip())[:6000])
    finally:
        drop_topics(stack, raw, topic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
