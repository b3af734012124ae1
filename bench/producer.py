"""Producer throughput and delivery latency: AuditProducer against plain confluent-kafka.

Both send events of the same shape to the same topic with the same librdkafka tuning
(``PRODUCER_TUNING``); plain confluent-kafka gets its bytes pre-encoded, so the ratio is the price
of validation, encoding and per-event delivery results. Throughput counts until the last event
is acknowledged (flush included). Latency is librdkafka's produce-to-acknowledgement time.

    eval "$(.venv/bin/auditseal dev env --role producer)"
    .venv/bin/python bench/producer.py --events 300000

Writes real events to the topic (``audit.raw`` by default): run it against a dev stack.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from pipeline.codec import default_codec
from pipeline.config import KafkaSettings
from pipeline.generate import synthetic_events
from pipeline.producer import DEFAULT_TOPIC, PRODUCER_TUNING, AuditProducer


@dataclass(frozen=True)
class Figures:
    """What one run measured."""

    events: int
    seconds: float
    payload_bytes: int
    latencies: list[float]

    @property
    def events_per_second(self) -> float:
        """Events acknowledged per second."""
        return self.events / self.seconds

    @property
    def megabytes_per_second(self) -> float:
        """Record values (single-object bytes) acknowledged per second, in MB (10**6 bytes)."""
        return self.payload_bytes / self.seconds / 1e6

    def percentile_ms(self, fraction: float) -> float:
        """Delivery latency at ``fraction`` (0.5 for p50), in milliseconds."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    def row(self, name: str) -> str:
        """One line of the report table."""
        return (
            f"{name:<28} {self.events_per_second:>12,.0f} {self.megabytes_per_second:>8.1f} "
            f"{self.percentile_ms(0.5):>9.1f} {self.percentile_ms(0.99):>9.1f}"
        )


def measure_encoding(events: Sequence[dict]) -> float:
    """Validate+encode rate in events/s, in-process, no I/O."""
    encode = default_codec().encode
    started = time.perf_counter()
    for event in events:
        encode(event)
    return len(events) / (time.perf_counter() - started)


def run_audit_producer(settings: KafkaSettings, topic: str, events: Sequence[dict], warmup: Sequence[dict]) -> Figures:
    """Emit ``events`` through AuditProducer (validate + encode + produce) and wait for every acknowledgement."""
    with AuditProducer(settings, topic=topic) as producer:
        producer.check()
        for event in warmup:
            producer.emit(event)
        producer.flush()
        started = time.perf_counter()
        results = [producer.emit(event) for event in events]
        producer.flush()
        seconds = time.perf_counter() - started
    latencies = [result.latency for result in results if result.latency is not None]
    payload = sum(len(default_codec().encode(event)) for event in events)
    return Figures(len(events), seconds, payload, latencies)


def run_plain_producer(settings: KafkaSettings, topic: str, values: Sequence[bytes], warmup: Sequence[bytes]) -> Figures:
    """Produce pre-encoded ``values`` with confluent-kafka the way its examples do (poll(0) per message)."""
    producer = Producer(settings.client_config(**PRODUCER_TUNING))
    latencies: list[float] = []
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is None:
            latencies.append(message.latency())
        else:
            failures.append(error)

    def produce_all(batch: Sequence[bytes]) -> None:
        for value in batch:
            while True:
                try:
                    producer.produce(topic, value, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        if producer.flush(120):
            raise SystemExit("plain producer: events still unacknowledged after 120 s")

    produce_all(warmup)
    latencies.clear()
    started = time.perf_counter()
    produce_all(values)
    seconds = time.perf_counter() - started
    if failures:
        raise SystemExit(f"plain producer: {len(failures)} deliveries failed, first: {failures[0]}")
    return Figures(len(values), seconds, sum(map(len, values)), latencies)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both producers and print events/s, MB/s, latency p50/p99 and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="events per producer (default 300000)")
    parser.add_argument("--warmup", type=int, default=20_000, help="events sent before timing (default 20000)")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help=f"topic to write to (default {DEFAULT_TOPIC})")
    args = parser.parse_args(argv)

    settings = KafkaSettings.from_env()
    # Distinct events for each run, so no event_id is written twice, with the same distribution.
    audit_events = list(synthetic_events(args.events))
    audit_warmup = list(synthetic_events(args.warmup))
    encode = default_codec().encode
    plain_values = [encode(event) for event in synthetic_events(args.events)]
    plain_warmup = [encode(event) for event in synthetic_events(args.warmup)]
    # The pre-generated events are millions of live objects no real service holds; frozen, the
    # cyclic GC stops rescanning them on every collection, which would otherwise bill the producer
    # that allocates per event (AuditProducer's results) for this benchmark's own data.
    gc.collect()
    gc.freeze()

    encoding_rate = statistics.median(measure_encoding(audit_events[:50_000]) for _ in range(3))
    audit = run_audit_producer(settings, args.topic, audit_events, audit_warmup)
    plain = run_plain_producer(settings, args.topic, plain_values, plain_warmup)

    print(f"{args.events:,} events to {args.topic} at {settings.bootstrap}, {PRODUCER_TUNING['compression.type']}, "
          f"linger.ms={PRODUCER_TUNING['linger.ms']}, acks=all, idempotent")
    print(f"validate+encode in-process: {encoding_rate:,.0f} events/s")
    print(f"{'producer':<28} {'events/s':>12} {'MB/s':>8} {'p50 ms':>9} {'p99 ms':>9}")
    print(audit.row("AuditProducer"))
    print(plain.row("confluent-kafka, pre-encoded"))
    print(f"ratio AuditProducer / plain: {audit.events_per_second / plain.events_per_second:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
