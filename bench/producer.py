"""Producer throughput and delivery latency: AuditProducer against plain confluent-kafka.

Both send events of the same shape to the same topic with the same librdkafka tuning
(``PRODUCER_TUNING``: idempotent, acks=all, lz4, linger) and get one delivery callback per event,
which records its latency; plain confluent-kafka gets its bytes pre-encoded, so the ratio is the
price of validation, encoding and per-event results. Plain confluent-kafka without any callback is
printed too, for transparency. Latency is librdkafka's produce-to-acknowledgement time.

Each side runs for ``--seconds`` (default 20), cycling through a pool of ``--pool`` distinct events
generated (and, for plain confluent-kafka, encoded) beforehand, so generating them is billed to nobody;
an event id therefore repeats every ``--pool`` events of a side. The side's start-up is its client's
construction, ``check()`` (AuditProducer), the connection and ``--warmup`` events sent and acknowledged:
it is excluded from the figure and printed beside it (``bench/steady.py``), as its share of the side's
whole time. The figure counts from the end of the warm-up until the last event is acknowledged (flush
included); "ramp" is what the first and last seconds (the flush) cost it against the rate over the middle
10-90% of the acknowledgements (sampled every 5,000 events from the producer's queue length). "CPU us" is
the process's CPU time per event over the same span (every thread: librdkafka's too), the measure the
neighbours on a shared machine disturb least; the ratio is printed by it as well. Each round runs all three sides, the order rotating from round to round (a burst of load
elsewhere hits each side in turn); the ratios are per round, with their median: the machine is usually
shared, so the ratio within a round is the figure to read, not the absolute rates.

    eval "$(.venv/bin/auditseal dev env --role producer)"
    .venv/bin/python -m bench.producer [--seconds 20] [--rounds 3]     # --seconds 5 --rounds 1: a quick look

Writes real events to the topic (``audit.raw`` by default): run it against a dev stack.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import cycle, islice

from confluent_kafka import KafkaError, Message, Producer

from bench.steady import Side, median
from pipeline.config import KafkaSettings
from pipeline.producer.client import DEFAULT_TOPIC, PRODUCER_TUNING, AuditProducer, DeliveryResult
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.codec import default_codec


@dataclass(frozen=True)
class Figures:
    """What one run measured."""

    side: Side
    payload_bytes: int
    latencies: list[float]
    cpu_s: float  # the process's CPU time (every thread, librdkafka's too) from the end of the warm-up to the end

    @property
    def cpu_us_per_event(self) -> float:
        """The process's CPU microseconds per event acknowledged."""
        return self.cpu_s / max(self.side.count, 1) * 1e6

    @property
    def events(self) -> int:
        """Events sent and acknowledged after the warm-up."""
        return self.side.count

    @property
    def seconds(self) -> float:
        """From the end of the warm-up to the last acknowledgement."""
        return self.side.steady_s

    @property
    def events_per_second(self) -> float:
        """Events acknowledged per second, after the warm-up."""
        return self.side.rate

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
            + f" {self.side.steady_s:>7.1f} {self.side.startup_s:>8.2f} {self.side.startup_share:>7.1%}"
            + (f" {ramp:>+7.1%}" if (ramp := self.side.ramp_share) is not None else f" {'-':>7}")
            + f" {self.cpu_us_per_event:>7.2f}"
        )


def measure_encoding(encode: Callable[[dict], bytes], events: Sequence[dict]) -> float:
    """Validate+encode rate of ``encode`` in events/s, in-process, no I/O."""
    started = time.perf_counter()
    for event in events:
        encode(event)
    return len(events) / (time.perf_counter() - started)


def _timed(pool: Sequence, seconds: float, pending: Callable[[], int], marks: list[tuple[float, int]],
           check_every: int = 5_000) -> Iterator:
    """``pool``'s items over and over until ``seconds`` have passed (the clock read every ``check_every``);
    at each check, (time, events acknowledged so far) is appended to ``marks``, from ``pending()`` (the
    producer's queue: sent and not yet acknowledged)."""
    started = time.perf_counter()
    deadline = started + seconds
    marks.append((started, 0))
    items = cycle(pool)
    sent = 0
    while True:
        yield from islice(items, check_every)
        sent += check_every
        now = time.perf_counter()
        marks.append((now, sent - pending()))
        if now >= deadline:
            return


def run_audit_producer(settings: KafkaSettings, topic: str, pool: Sequence[dict], warmup: Sequence[dict],
                       seconds: float) -> Figures:
    """Emit ``pool``'s events through AuditProducer (validate + encode + produce) for ``seconds``, then wait for
    every acknowledgement.

    Each event's result records its latency from ``on_delivery``, as the plain producer's
    callback does; the results are not kept, as a service would not keep them either.
    """
    latencies: list[float] = []

    def on_delivery(result: DeliveryResult) -> None:
        if result.latency is not None:
            latencies.append(result.latency)

    launched = time.perf_counter()
    with AuditProducer(settings, topic=topic) as producer:
        producer.check()
        for event in warmup:
            producer.emit(event)
        producer.flush()
        emit = producer.emit
        sent = 0
        marks: list[tuple[float, int]] = []
        cpu = time.process_time()
        for event in _timed(pool, seconds, producer.__len__, marks):
            emit(event, on_delivery=on_delivery)
            sent += 1
        producer.flush()  # raises if any event failed
        finished = time.perf_counter()
        cpu = time.process_time() - cpu
    encode = default_codec().encode
    mean_size = sum(len(encode(event)) for event in pool) / len(pool)
    marks.append((finished, sent))
    return Figures(Side(sent, launched, marks[0][0], finished, tuple(marks)), int(mean_size * sent), latencies, cpu)


def run_plain_producer(
    settings: KafkaSettings, topic: str, pool: Sequence[bytes], warmup: Sequence[bytes], seconds: float, *,
    callback: bool = True,
) -> Figures:
    """Produce ``pool``'s pre-encoded values for ``seconds`` with confluent-kafka the way its examples do
    (poll(0) per message).

    Same configuration as AuditProducer (``PRODUCER_TUNING``). With ``callback``, a delivery
    callback per message records its latency (what a per-event result needs); without, the
    figure shows what the callbacks themselves cost.
    """
    launched = time.perf_counter()
    producer = Producer(settings.client_config(**PRODUCER_TUNING))
    latencies: list[float] = []
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is None:
            latencies.append(message.latency())
        else:
            failures.append(error)

    def produce_all(batch: Iterable[bytes], report: bool) -> tuple[int, int]:
        produce, poll = producer.produce, producer.poll
        options = {"on_delivery": on_delivery} if report else {}
        count = 0
        for value in batch:
            while True:
                try:
                    produce(topic, value, **options)
                    break
                except BufferError:
                    poll(0.05)
            poll(0)
            count += 1
        if producer.flush(120):
            raise SystemExit("plain producer: events still unacknowledged after 120 s")
        return count

    produce_all(warmup, report=True)  # with a report: a failed delivery (e.g. no ACL) shows up here
    latencies.clear()
    marks: list[tuple[float, int]] = []
    cpu = time.process_time()
    sent = produce_all(_timed(pool, seconds, producer.__len__, marks), report=callback)
    finished = time.perf_counter()
    cpu = time.process_time() - cpu
    marks.append((finished, sent))
    if failures:
        raise SystemExit(f"plain producer: {len(failures)} deliveries failed, first: {failures[0]}")
    mean_size = sum(map(len, pool)) / len(pool)
    return Figures(Side(sent, launched, marks[0][0], finished, tuple(marks)), int(mean_size * sent), latencies, cpu)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the three sides ``--rounds`` times and print events/s, MB/s, latency p50/p99, start-up and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="timed seconds per side and round, after the warm-up (default 20)")
    parser.add_argument("--pool", type=int, default=200_000,
                        help="distinct events each side cycles through (default 200000)")
    parser.add_argument("--warmup", type=int, default=20_000, help="events sent before timing (default 20000)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of all three sides, the order rotating (default 3: the machine is usually shared)")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help=f"topic to write to (default {DEFAULT_TOPIC})")
    args = parser.parse_args(argv)

    settings = KafkaSettings.from_env()
    codec = default_codec()
    # Pre-generated, so generating them is not billed to anyone; distinct pools with the same distribution.
    audit_pool = list(synthetic_events(args.pool, seed=11))
    audit_warmup = list(synthetic_events(args.warmup, seed=12))
    plain_pool = [codec.encode(event) for event in synthetic_events(args.pool, seed=13)]
    plain_warmup = [codec.encode(event) for event in synthetic_events(args.warmup, seed=14)]
    # The pre-generated events are live objects no real service holds; frozen, the cyclic GC stops
    # rescanning them on every collection, which would otherwise bill the producer that allocates per
    # event (AuditProducer's results) for this benchmark's own data.
    gc.collect()
    gc.freeze()

    sample = audit_pool[:50_000]
    fast_rate = statistics.median(measure_encoding(codec.encode, sample) for _ in range(3))
    checked_rate = statistics.median(measure_encoding(codec.encode_checked, sample) for _ in range(3))
    print(f"{args.seconds:g} s per side and round (pool of {args.pool:,} events, warm-up {args.warmup:,}) to "
          f"{args.topic} at {settings.bootstrap}, {PRODUCER_TUNING['compression.type']}, "
          f"linger.ms={PRODUCER_TUNING['linger.ms']}, acks=all, idempotent")
    print(f"validate+encode in-process: {fast_rate:,.0f} events/s (compiled fast path), "
          f"{checked_rate:,.0f} events/s (general checked writer)")
    print(f"{'round':<6}{'producer':<40} {'events/s':>12} {'MB/s':>8} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'timed s':>7} {'start-up':>8} {'share':>7} {'ramp':>7} {'CPU us':>7}", flush=True)
    sides = {
        "audit": ("AuditProducer (validate+encode+result)",
                  lambda: run_audit_producer(settings, args.topic, audit_pool, audit_warmup, args.seconds)),
        "plain": ("confluent-kafka, pre-encoded, callback",
                  lambda: run_plain_producer(settings, args.topic, plain_pool, plain_warmup, args.seconds)),
        "bare": ("confluent-kafka, pre-encoded, no callback",
                 lambda: run_plain_producer(settings, args.topic, plain_pool, plain_warmup, args.seconds,
                                            callback=False)),
    }
    names = list(sides)
    ratios: list[tuple[float, float]] = []
    cpu_ratios: list[float] = []
    shares: list[float] = []
    ramps: list[float] = []
    for round_number in range(args.rounds):
        order = names[round_number % 3:] + names[:round_number % 3]
        figures = {}
        for name in order:
            figures[name] = sides[name][1]()
            shares.append(figures[name].side.startup_share)
            ramps.append(figures[name].side.ramp_share or 0.0)
            print(f"{round_number + 1:<6}" + figures[name].row(sides[name][0]), flush=True)
        cpu_ratios.append(figures["plain"].cpu_us_per_event / figures["audit"].cpu_us_per_event)
        ratios.append((figures["audit"].events_per_second / figures["plain"].events_per_second,
                       figures["audit"].events_per_second / figures["bare"].events_per_second))
    for round_number, ((with_callback, without), by_cpu) in enumerate(zip(ratios, cpu_ratios, strict=True), start=1):
        print(f"round {round_number}: ratio AuditProducer / plain with callback {with_callback:.2f} "
              f"(/ plain without callback {without:.2f}); by the process's CPU per event {by_cpu:.2f}")
    with_callback = sorted(r for r, _ in ratios)
    print(f"ratio AuditProducer / plain confluent-kafka with a callback: median {median(with_callback):.2f} "
          f"(range {with_callback[0]:.2f}-{with_callback[-1]:.2f}, {len(ratios)} rounds; target >= 0.7), by CPU per "
          f"event median {median(cpu_ratios):.2f} (range {min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}); "
          f"ramp and tail at most {max(ramps):+.1%} of a side's figure (target < 5%); the start-up left out "
          f"(client, connection, warm-up) at most {max(shares):.1%} of a side's time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
