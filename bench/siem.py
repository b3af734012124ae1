"""SIEM path throughput, side by side in one run: the sealer, the bridge behind it, and export.

1. N events are produced to a fresh raw topic (6 partitions); one sealer worker seals the backlog
   (events/s = N / time from its first sealed event to its last, as ``bench.sealer`` measures it).
2. One bridge worker (``auditseal siem-bridge``) then publishes that sealed backlog as OCSF JSON:
   records/s = sealed records / time from the first OCSF document committed to the last.
   Target: at least 0.5 of the sealer's rate.
3. The sealed records are archived to a local folder in the sink's layout (20,000 records an object),
   and ``auditseal export --from dir --format ocsf`` (and ``json``) writes them to /dev/null:
   records/s as the command reports them. Target: 100,000 records/s. The OCSF export is run again with
   the readable mapping alone (``AUDITSEAL_SIEM_NATIVE=0``), the compiled writer's baseline.

Runs on the local stack (``auditseal dev up``) on throwaway topics: ``python -m bench.siem``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

from bench.sealer import PARTITIONS, produce, throughput
from pipeline.archive.container import build_object
from pipeline.archive.retention import load_profiles
from pipeline.config import KafkaSettings
from pipeline.dev.stack import LocalStack
from tests.support.sealing import REPO, create_topics, delete_topics
from tests.support.siem import create_ocsf_topic, delete_ocsf_topic, start_bridge

OBJECT_RECORDS = 20_000


def _read_all(stack: LocalStack, topic: str, role: str, on_record=None, target: int | None = None,
              timeout: float = 900) -> tuple[int, float | None, float | None]:
    """(records, first seen, last seen) of a topic read as ``role`` from the start: to its end, or to ``target``."""
    consumer = Consumer(KafkaSettings.from_env(stack.env(role)).client_config(**{
        "group.id": f"auditseal-{role}-bench-{os.getpid()}-{time.monotonic_ns()}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": target is None}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen, first, last, done = 0, None, None, set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if target is None and len(done) == PARTITIONS or target is not None and seen >= target:
                break
            for message in consumer.consume(10_000, 0.5):
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        done.add(message.partition())
                        continue
                    raise RuntimeError(message.error().str())
                seen += 1
                first = first or time.monotonic()
                last = time.monotonic()
                if on_record is not None:
                    on_record(message)
    finally:
        consumer.close()
    if target is not None and seen < target:
        raise TimeoutError(f"{topic}: {seen} of {target} records within {timeout}s")
    return seen, first, last


def _archive(stack: LocalStack, sealed_topic: str, folder: Path) -> int:
    """Write the sealed topic to ``folder`` in the sink's key layout; the number of records."""
    by_partition: dict[int, list] = {}
    total, _, _ = _read_all(stack, sealed_topic, "verifier", on_record=lambda m: by_partition.setdefault(
        m.partition(), []).append((m.offset(), m.timestamp()[1], m.value())))
    profile = load_profiles(None).get("soc2")
    for partition, records in by_partition.items():
        for start in range(0, len(records), OBJECT_RECORDS):
            archived = build_object(sealed_topic, partition, records[start:start + OBJECT_RECORDS], profile=profile)
            path = folder / archived.key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(archived.body)
            (folder / archived.manifest_key).write_bytes(archived.manifest_bytes)
    return total


def _export(folder: Path, format: str, native: bool = True) -> tuple[float, str]:
    env = dict(os.environ, AUDITSEAL_ACCESS_SPOOL=str(folder / "spool"), AUDITSEAL_SIEM_NATIVE="1" if native else "0")
    result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "export", "--from", "dir", "--dir",
                             str(folder), "--format", format, "--out", os.devnull], cwd=REPO, capture_output=True,
                            text=True, timeout=1800, env=env)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    summary = result.stderr.strip().splitlines()[-1]
    return float(re.search(r"\(([\d,]+) records/s\)", summary).group(1).replace(",", "")), summary


def main() -> None:
    """Run the three measurements and print their figures beside their targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    stack = LocalStack()
    topics = create_topics(stack, partitions=PARTITIONS)
    ocsf_topic = create_ocsf_topic(stack, topics)
    try:
        started = time.monotonic()
        produce(stack, topics.raw, args.events)
        print(f"produced {args.events} events in {time.monotonic() - started:.1f}s")
        seal_argv = [sys.executable, "-m", "pipeline.cli.main", "seal", "--raw-topic", topics.raw,
                     "--sealed-topic", topics.sealed, "--app-id", topics.app_id, "--metrics-port", "0"]
        sealer_rate, sealer_rss, sealer_s = throughput(stack, topics, args.events, seal_argv, topics.sealed,
                                                       "verifier")
        print(f"sealer:  {sealer_rate:10,.0f} events/s  ({args.events} in {sealer_s:.1f}s)  peak RSS {sealer_rss:.0f} MB")
        sealed, _, _ = _read_all(stack, topics.sealed, "verifier")
        bridge = start_bridge(stack, topics, ocsf_topic, f"auditseal-ocsf-bridge-bench-{os.getpid()}")
        try:
            published, first, last = _read_all(stack, ocsf_topic, "siem", target=sealed)
        finally:
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(60)
        bridge_s = max(last - first, 1e-9)
        bridge_rate = published / bridge_s
        print(f"bridge:  {bridge_rate:10,.0f} records/s ({published} sealed records in {bridge_s:.1f}s)")
        print(f"ratio bridge / sealer: {bridge_rate / sealer_rate:.2f}  (target >= 0.5)")
        with tempfile.TemporaryDirectory(prefix="auditseal-bench-siem-") as folder:
            archived = _archive(stack, topics.sealed, Path(folder))
            rates = {}
            for format, native in (("ocsf", True), ("json", True), ("ocsf", False)):
                rate, summary = _export(Path(folder), format, native)
                rates[format, native] = rate
                mapping = "" if native else " (readable mapping only)"
                print(f"export --format {format}{mapping} from a local archive of {archived} records: {rate:10,.0f} "
                      f"records/s (target >= 100,000)\n    {summary}")
            print(f"ratio export ocsf compiled / readable mapping: {rates['ocsf', True] / rates['ocsf', False]:.1f}")
    finally:
        delete_ocsf_topic(stack, ocsf_topic)
        delete_topics(stack, topics)


if __name__ == "__main__":
    main()
