"""Producer throughput and delivery latency: AuditProducer against plain confluent-kafka.

Both send events of the same shape to the same topic with the same librdkafka tuning
(``PRODUCER_TUNING``: idempotent, acks=all, lz4, linger) and get one delivery callback per event,
which records its latency; plain confluent-kafka gets its bytes pre-encoded, so the ratio is the
price of validation, encoding and per-event results. Plain confluent-kafka without any callback is
printed too, for transparency. Throughput counts until the last event is acknowledged (flush
included). Latency is librdkafka's produce-to-acknowledgement time. Each round runs all three;
the machine is usually shared, so compare rounds before trusting a figure.

    eval "$(.venv/bin/auditseal dev env --role producer)"
    .venv/bin/python -m bench.producer --events 300000 --rounds 2

Writes real events to the topic (``audit.raw`` by default): run it against a dev stack.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from pipeline.config import KafkaSettings
from pipeline.producer.client import DEFAULT_TOPIC, PRODUCER_TUNING, AuditProducer, DeliveryResult
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.codec import default_codec


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

    def percentile_ms(self, fraction: float) -> float | None:
        """Delivery latency at ``fraction`` (0.5 for p50), in milliseconds; None without latencies."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    def row(self, name: str) -> str:
        """One line of the report table."""
        p50, p99 = self.percentile_ms(0.5), self.percentile_ms(0.99)
        return (
            f"{name:<40} {self.events_per_second:>12,.0f} {self.megabytes_per_second:>8.1f} "
            + (f"{p50:>9.1f} {p99:>9.1f}" if p50 is not None and p99 is not None else f"{'-':>9} {'-':>9}")
        )


def measure_encoding(encode: Callable[[dict], bytes], events: Sequence[dict]) -> float:
    """Validate+encode rate of ``encode`` in events/s, in-process, no I/O."""
    started = time.perf_counter()
    for event in events:
        encode(event)
    return len(events) / (time.perf_counter() - started)


def run_audit_producer(settings: KafkaSettings, topic: str, events: Sequence[dict], warmup: Sequence[dict]) -> Figures:
    """Emit ``events`` through AuditProducer (validate + encode + produce) and wait for every acknowledgement.

    Each event's result records its latency from ``on_delivery``, as the plain producer's
    callback does; the results are not kept, as a service would not keep them either.
    """
    latencies: list[float] = []

    def on_delivery(result: DeliveryResult) -> None:
        if result.latency is not None:
            latencies.append(result.latency)

    with AuditProducer(settings, topic=topic) as producer:
        producer.check()
        for event in warmup:
            producer.emit(event)
        producer.flush()
        emit = producer.emit
        started = time.perf_counter()
        for event in events:
            emit(event, on_delivery=on_delivery)
        producer.flush()  # raises if any event failed
        seconds = time.perf_counter() - started
    payload = sum(len(default_codec().encode(event)) for event in events)
    return Figures(len(events), seconds, payload, latencies)


def run_plain_producer(
    settings: KafkaSettings, topic: str, values: Sequence[bytes], warmup: Sequence[bytes], *, callback: bool = True
) -> Figures:
    """Produce pre-encoded ``values`` with confluent-kafka the way its examples do (poll(0) per message).

    Same configuration as AuditProducer (``PRODUCER_TUNING``). With ``callback``, a delivery
    callback per message records its latency (what a per-event result needs); without, the
    figure shows what the callbacks themselves cost.
    """
    producer = Producer(settings.client_config(**PRODUCER_TUNING))
    latencies: list[float] = []
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is None:
            latencies.append(message.latency())
        else:
            failures.append(error)

    def produce_all(batch: Sequence[bytes], report: bool) -> None:
        produce, poll = producer.produce, producer.poll
        options = {"on_delivery": on_delivery} if report else {}
        for value in batch:
            while True:
                try:
                    produce(topic, value, **options)
                    break
                except BufferError:
                    poll(0.05)
            poll(0)
        if producer.flush(120):
            raise SystemExit("plain producer: events still unacknowledged after 120 s")

    produce_all(warmup, report=True)  # with a report: a failed delivery (e.g. no ACL) shows up here
    latencies.clear()
    started = time.perf_counter()
    produce_all(values, report=callback)
    seconds = time.perf_counter() - started
    if failures:
        raise SystemExit(f"plain producer: {len(failures)} deliveries failed, first: {failures[0]}")
    return Figures(len(values), seconds, sum(map(len, values)), latencies)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both producers ``--rounds`` times and print events/s, MB/s, latency p50/p99 and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="events per producer and round (default 300000)")
    parser.add_argument("--warmup", type=int, default=20_000, help="events sent before timing (default 20000)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of all three runs (default 2: the machine is usually shared)")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help=f"topic to write to (default {DEFAULT_TOPIC})")
    args = parser.parse_args(argv)

    settings = KafkaSettings.from_env()
    codec = default_codec()
    # Pre-generated, so generating them is not billed to anyone. Distinct events for each run,
    # so no event_id is written twice, with the same distribution.
    audit_events = [list(synthetic_events(args.events)) for _ in range(args.rounds)]
    audit_warmup = list(synthetic_events(args.warmup))
    plain_values = [[codec.encode(event) for event in synthetic_events(args.events)] for _ in range(2 * args.rounds)]
    plain_warmup = [codec.encode(event) for event in synthetic_events(args.warmup)]
    # The pre-generated events are millions of live objects no real service holds; frozen, the
    # cyclic GC stops rescanning them on every collection, which would otherwise bill the producer
    # that allocates per event (AuditProducer's results) for this benchmark's own data.
    gc.collect()
    gc.freeze()

    sample = audit_events[0][:50_000]
    fast_rate = statistics.median(measure_encoding(codec.encode, sample) for _ in range(3))
    checked_rate = statistics.median(measure_encoding(codec.encode_checked, sample) for _ in range(3))
    print(f"{args.events:,} events per run to {args.topic} at {settings.bootstrap}, "
          f"{PRODUCER_TUNING['compression.type']}, linger.ms={PRODUCER_TUNING['linger.ms']}, acks=all, idempotent")
    print(f"validate+encode in-process: {fast_rate:,.0f} events/s (compiled fast path), "
          f"{checked_rate:,.0f} events/s (general checked writer)")
    print(f"{'round':<6}{'producer':<40} {'events/s':>12} {'MB/s':>8} {'p50 ms':>9} {'p99 ms':>9}")
    ratios: list[tuple[float, float]] = []
    for round_number in range(args.rounds):
        audit = run_audit_producer(settings, args.topic, audit_events[round_number], audit_warmup)
        plain = run_plain_producer(settings, args.topic, plain_values[2 * round_number], plain_warmup)
        bare = run_plain_producer(settings, args.topic, plain_values[2 * round_number + 1], plain_warmup,
                                  callback=False)
        label = f"{round_number + 1:<6}"
        print(label + audit.row("AuditProducer (validate+encode+result)"))
        print(label + plain.row("confluent-kafka, pre-encoded, callback"))
        print(label + bare.row("confluent-kafka, pre-encoded, no callback"))
        ratios.append((audit.events_per_second / plain.events_per_second,
                       audit.events_per_second / bare.events_per_second))
    for round_number, (with_callback, without) in enumerate(ratios, start=1):
        print(f"round {round_number}: ratio AuditProducer / plain with callback {with_callback:.2f} "
              f"(/ plain without callback {without:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
