"""Sealer throughput, memory and latency, side by side with a Faust agent that only forwards.

1. Throughput: N events are produced to a fresh raw topic (6 partitions) first; one worker then
   seals the backlog. events/s = N / (time from the first sealed record to the last), peak RSS is
   the worker's VmHWM. Heads on (the default) against off (``--heartbeat-interval 0``): ``--rounds``
   rounds, each sealing one fresh backlog per side, the side that goes first alternating (a burst of
   load elsewhere hits both alike); each round's ratio, their median and the ratio of the best rounds.
   The first backlog is then forwarded by ``bench/forwarder.py``; ratio = sealer/forwarder.
2. Latency: a steady 5,000 events/s for 20 s through a running worker; latency = when a
   read_committed consumer receives the sealed event minus the raw record's timestamp.
3. Profile: the sealing work alone (ChainSealer over 20,000 of the same events, in process, no I/O)
   under cProfile, top functions by own time, and its share of the worker's time per event; and the
   same work with a tree head before every checkpoint against without (alternating passes, the best
   of each): what heads cost in CPU, without Kafka's noise.

Runs on the local stack (``auditseal dev up``) on throwaway topics: ``python -m bench.sealer``.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.dev.stack import LocalStack
from pipeline.producer.client import AuditProducer
from pipeline.producer.event import complete_event
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.sealed import EVENT_KIND, sealed_codecs
from tests.support.sealing import REPO, Topics, create_topics, delete_topics, raw_end_offsets

PARTITIONS = 6


def produce(stack: LocalStack, topic: str, count: int, rate: float | None = None, seed: int = 1,
            on_ready: Callable[[], None] | None = None) -> None:
    """Emit ``count`` synthetic events, at ``rate`` per second if given, else as fast as possible.

    With ``on_ready``, one warm-up event is emitted and acknowledged first (the producer has its
    connection, metadata and idempotence id), then ``on_ready()`` is called, then the count starts:
    a steady-rate measurement times the pipeline, not the producer's start-up.
    """
    events = list(synthetic_events(min(count, 20_000), seed=seed))
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topic) as producer:
        if on_ready is not None:
            producer.emit(complete_event(dict(events[0], event_id=None))).wait(60)
            on_ready()
        started = time.monotonic()
        for index in range(count):
            event = dict(events[index % len(events)])
            event.pop("event_id", None)  # a fresh id each time
            producer.emit(complete_event(event))
            if rate is not None:
                ahead = index / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)


def _worker(stack: LocalStack, argv: list[str]) -> subprocess.Popen:
    env = dict(os.environ, **stack.env("sealer"))
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _count_until(stack: LocalStack, topic: str, target: int, timeout: float, role: str = "verifier"):
    """Count committed records of ``topic`` until ``target``; return (first_seen, last_seen) times."""
    consumer = Consumer(KafkaSettings.from_env(stack.env(role)).client_config(**{
        "group.id": f"auditseal-{role}-bench-{os.getpid()}-{time.monotonic_ns()}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "fetch.min.bytes": 1}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    codecs = sealed_codecs()
    seen, first, last = 0, None, None
    deadline = time.monotonic() + timeout
    try:
        while seen < target and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 0.5):
                if message.error():
                    raise RuntimeError(message.error().str())
                if topic.startswith("bench.fwd") or codecs.kind_of(message.value()) == EVENT_KIND:
                    seen += 1
                    first = first or time.monotonic()
                    last = time.monotonic()
    finally:
        consumer.close()
    if seen < target:
        raise TimeoutError(f"{topic}: {seen} of {target} records within {timeout}s")
    return first, last


def throughput_and_cpu(stack: LocalStack, topics: Topics, events: int, argv: list[str]) -> tuple[float, float, float]:
    """(events/s, peak RSS MB, worker CPU us per event) of one worker sealing the backlog: the CPU time is the
    worker's between the first and the last sealed event seen, the figure a shared machine disturbs least."""
    import psutil

    from bench.keys import _count_with_cpu

    worker = _worker(stack, argv)
    try:
        first, last, cpu_first, cpu_last = _count_with_cpu(stack, topics, events, psutil.Process(worker.pid))
        rss = _peak_rss_mb(worker.pid)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    return events / max(last - first, 1e-9), rss, (cpu_last - cpu_first) / events * 1e6


def throughput(stack: LocalStack, topics: Topics, events: int, argv: list[str], out_topic: str,
               role: str) -> tuple[float, float, float]:
    """(events/s, peak RSS MB, seconds) of one worker draining the backlog."""
    worker = _worker(stack, argv)
    try:
        first, last = _count_until(stack, out_topic, events, timeout=600, role=role)
        rss = _peak_rss_mb(worker.pid)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    seconds = max(last - first, 1e-9)
    return events / seconds, rss, seconds


def latency(stack: LocalStack, topics: Topics, argv: list[str], rate: int, seconds: int) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, samples) from raw timestamp to sealed record received, at a steady rate."""
    worker = _worker(stack, argv)
    time.sleep(8)  # join the group and open the chains before the clock starts
    consumer = Consumer(KafkaSettings.from_env(stack.env("verifier")).client_config(**{
        "group.id": f"auditseal-verifier-bench-{os.getpid()}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "fetch.wait.max.ms": 10}))
    ends: dict[int, int] = {}
    consumer.assign([TopicPartition(topics.sealed, p, -1) for p in range(PARTITIONS)])  # from the end
    codecs = sealed_codecs()
    samples: list[float] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for message in consumer.consume(1000, 0.1):
                if not message.error() and codecs.kind_of(message.value()) == EVENT_KIND:
                    record = codecs.event.decode(message.value())
                    # only the steady stream: after the warm-up event, whose raw offsets end at `ends`
                    if ends and record["source_offset"] >= ends.get(record["source_partition"], 0):
                        samples.append(time.time() - record["source_timestamp_micros"] / 1e6)

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        produce(stack, topics.raw, rate * seconds, rate=rate, seed=3,
                on_ready=lambda: ends.update(raw_end_offsets(stack, topics)))
        time.sleep(3)
    finally:
        stop.set()
        reader.join()
        consumer.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    samples.sort()
    return (samples[len(samples) // 2] * 1000, samples[int(len(samples) * 0.99)] * 1000, len(samples))


def profile_sealing(stack: LocalStack, worker_rate: float, count: int = 20_000) -> None:
    """Where the sealing time goes: ChainSealer alone over ``count`` encoded events, under cProfile."""
    import cProfile
    import io

    from pipeline.sealer.chain_sealer import ChainSealer
    from pipeline.wire.codec import default_codec

    codec = default_codec()
    values = [codec.encode(event) for event in synthetic_events(count, seed=5)]
    sealer = ChainSealer.resume("bench/0", 0, stack.signer(), None)

    def seal_all() -> None:
        for offset, value in enumerate(values):
            sealer.seal(value, offset, 1_700_000_000_000_000)
            if offset % 2000 == 1999:
                sealer.checkpoint(1_700_000_000_000_000)

    heads_cost(stack, values, 333)   # what a fetch of 2,000 records in all gave each of 6 chains
    heads_cost(stack, values, 2000)  # a backlog's batches now: --checkpoint-records per chain

    started = time.perf_counter()
    seal_all()
    per_event_us = (time.perf_counter() - started) / count * 1e6
    print(f"sealing alone: {per_event_us:.1f} us/event ({1e6 / per_event_us:,.0f} events/s on one core); "
          f"the worker spends {1e6 / worker_rate:.1f} us/event in all, so sealing is "
          f"{per_event_us * worker_rate / 1e6:.0%} of it and Kafka I/O, batching and transactions the rest")
    profiler = cProfile.Profile()
    profiler.runcall(seal_all)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    print("profile of the sealing work (top 12 by own time):")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:4000])


def heads_cost(stack: LocalStack, values: list[bytes], batch: int = 333, passes: int = 5) -> None:
    """The sealing work with a tree head before every checkpoint against without, in process (the stack's
    signing key, a checkpoint per ``batch`` entries): alternating passes, the best of each by CPU time (the
    process's: SoftHSM2 signs in it; the wall clock on a shared machine mostly measures the neighbours)."""
    from pipeline.integrity.chain import ChainHead
    from pipeline.sealer.chain_sealer import ChainSealer

    signer = stack.signer()

    def one_pass(heads: bool) -> float:
        chain_id = "bench/0"
        sealer = ChainSealer(chain_id, 0, signer, ChainHead.genesis(chain_id), origin=f"auditseal/bench/{chain_id}")
        started = time.process_time()
        for offset, value in enumerate(values):
            sealer.seal(value, offset, 1_700_000_000_000_000)
            if offset % batch == batch - 1:
                if heads:
                    sealer.tree_head(1_700_000_000_000_000)
                sealer.checkpoint(1_700_000_000_000_000)
        return (time.process_time() - started) / len(values) * 1e6

    best = {True: float("inf"), False: float("inf")}
    for index in range(passes):
        for heads in ((True, False) if index % 2 == 0 else (False, True)):
            best[heads] = min(best[heads], one_pass(heads))
    print(f"sealing alone, a checkpoint per {batch} entries: heads off {best[False]:.2f} CPU us/event, heads on "
          f"{best[True]:.2f} CPU us/event (best of {passes} alternating passes); ratio on / off "
          f"{best[False] / best[True]:.3f}")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] +
                                                                  ordered[len(ordered) // 2]) / 2


def main() -> None:
    """Run the three measurements and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="heads on/off rounds (a fresh backlog per side each)")
    parser.add_argument("--steps", default="throughput,forward,latency,profile",
                        help="which of throughput, forward, latency, profile to run (forward needs throughput)")
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    stack = LocalStack()
    created: list[Topics] = []
    sealed_rate = 0.0
    try:
        if "throughput" in steps:
            sealed_rate = heads_on_off(stack, args, created, forward="forward" in steps)
        if "latency" in steps:
            latency_step(stack, args, created)
        if "profile" in steps:
            profile_sealing(stack, sealed_rate or 90_000)
    finally:
        for topics in created:
            delete_topics(stack, topics)
        _delete_forward_topics(stack)


def _seal_argv(topics: Topics, heads: bool) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli.main", "seal", "--raw-topic", topics.raw, "--sealed-topic",
            topics.sealed, "--app-id", topics.app_id, "--metrics-port", "0",
            *(() if heads else ("--heartbeat-interval", "0"))]


def heads_on_off(stack: LocalStack, args: argparse.Namespace, created: list[Topics], forward: bool) -> float:
    """Step 1: heads on against off, alternating rounds; then the forwarders on the first backlog. Returns the
    best heads-on rate."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    first_backlog: Topics | None = None
    first: tuple[float, float, float] | None = None
    for round_number in range(args.rounds):
        measured = {}
        for heads in ((True, False) if round_number % 2 == 0 else (False, True)):
            backlog = create_topics(stack, partitions=PARTITIONS)
            created.append(backlog)
            started = time.monotonic()
            produce(stack, backlog.raw, args.events)
            produced_s = time.monotonic() - started
            rate, rss, cpu_us = throughput_and_cpu(stack, backlog, args.events, _seal_argv(backlog, heads))
            measured[heads] = (rate, rss, args.events / rate)
            cpu[heads].append(cpu_us)
            if heads and first_backlog is None:
                first_backlog, first = backlog, measured[heads]
                print(f"produced {args.events} events in {produced_s:.1f}s")
            else:  # only the first backlog is read again (by the forwarders)
                delete_topics(stack, backlog)
                created.remove(backlog)
        (on_rate, on_rss, on_s), (off_rate, _, off_s) = measured[True], measured[False]
        rates[True].append(on_rate)
        rates[False].append(off_rate)
        print(f"round {round_number + 1}: heads on {on_rate:10,.0f} events/s ({on_s:.1f}s, {cpu[True][-1]:.1f} CPU us/event, "
              f"peak RSS {on_rss:.0f} MB)  heads off {off_rate:10,.0f} events/s ({off_s:.1f}s, {cpu[False][-1]:.1f} CPU "
              f"us/event)  ratio on / off {on_rate / off_rate:.2f}, by CPU {cpu[False][-1] / cpu[True][-1]:.2f}")
    ratios = [on / off for on, off in zip(rates[True], rates[False], strict=True)]
    assert first_backlog is not None and first is not None
    sealed_rate, sealed_rss, sealed_s = first
    print(f"sealer:              {sealed_rate:10,.0f} events/s  ({args.events} in {sealed_s:.1f}s)  "
          f"peak RSS {sealed_rss:.0f} MB")
    print(f"sealer, heads on / off: median of {len(ratios)} rounds' ratios {_median(ratios):.2f}, ratio of the best "
          f"rounds {max(rates[True]) / max(rates[False]):.2f}; by the worker's CPU per event (best rounds) "
          f"{min(cpu[False]) / min(cpu[True]):.2f} (target >= 0.95)")
    if forward:
        results = {}
        for mode in ("batch", "stream"):
            forward_topic = first_backlog.sealed.replace("test.sealed", f"bench.fwd.{mode}")
            _create_forward_topic(stack, forward_topic)
            fwd_argv = [sys.executable, "-m", "bench.forwarder", mode, first_backlog.raw, forward_topic,
                        f"{first_backlog.app_id}-fwd-{mode}"]
            results[mode] = throughput(stack, first_backlog, args.events, fwd_argv, forward_topic, "sealer")
        for mode, (rate, rss, seconds) in results.items():
            print(f"forwarder ({mode:6}):  {rate:10,.0f} events/s  ({args.events} in {seconds:.1f}s)  "
                  f"peak RSS {rss:.0f} MB")
        print(f"ratio sealer / same-structure forwarder (batch): {sealed_rate / results['batch'][0]:.2f}")
        print(f"ratio sealer / Faust per-record forwarder (stream): {sealed_rate / results['stream'][0]:.2f}")
    return max(rates[True])


def latency_step(stack: LocalStack, args: argparse.Namespace, created: list[Topics]) -> None:
    """Step 2: emit to sealed latency at a steady rate."""
    steady = create_topics(stack, partitions=PARTITIONS)
    created.append(steady)
    p50, p99, n = latency(stack, steady, _seal_argv(steady, True), args.rate, args.seconds)
    print(f"latency at {args.rate} events/s for {args.seconds}s: p50 {p50:.0f} ms, p99 {p99:.0f} ms ({n} samples)")


_FORWARD_TOPICS: list[str] = []


def _create_forward_topic(stack: LocalStack, name: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    from pipeline.dev.provision import acl_binding
    from pipeline.permissions.topology import Grant

    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    for future in admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)]).values():
        future.result(30)
    grants = [acl_binding("User:sealer", Grant("topic", name, op)) for op in ("read", "write", "describe")]
    for future in admin.create_acls(grants).values():
        future.result(30)
    _FORWARD_TOPICS.append(name)


def _delete_forward_topics(stack: LocalStack) -> None:
    from confluent_kafka.admin import AdminClient

    if _FORWARD_TOPICS:
        admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
        for future in admin.delete_topics(_FORWARD_TOPICS).values():
            future.result(30)


if __name__ == "__main__":
    main()
