"""Sealer throughput, memory and latency, side by side with a Faust agent that only forwards.

1. Throughput, ``--rounds`` rounds (default 3): N events (``--events``, default 1,500,000) are produced to a
   fresh raw topic (6 partitions), then three sides drain that same backlog in turn, each one worker
   process, the order rotating from round to round (a burst of load elsewhere hits each in turn): the
   sealer (heads on, production), the sealer with heads off (``--heartbeat-interval 0``) and the
   same-I/O forwarder (``bench/forwarder.py batch``: the sealer's batch structure, no sealing). Each
   side's start-up (process launch to its first committed output seen: interpreter, Faust, group join,
   the first fetch) is printed apart from its figure, events/s = N / (first output to last), with its share
   of the side's whole time, and what the ramp and tail cost the figure against the rate over the middle
   10-90% of the outputs (``bench/steady.py``). The default N keeps that cost mostly under 5%; the start-up
   itself (3-8 s on a loaded machine) is still 13-19% of a side's time at this N, outside the figure. Also the
   worker's CPU per event over the same span (the figure the neighbours disturb least) and its peak RSS
   (VmHWM). Each round's ratios, and their medians: sealer / forwarder (target >= 0.8), heads on / off.
   ``--steps stream`` adds Faust's own per-record path (``forwarder.py stream``) on a smaller backlog.
2. Latency: a steady 5,000 events/s for 20 s through a running worker; latency = when a
   read_committed consumer receives the sealed event minus the raw record's timestamp.
3. Profile: the sealing work alone (ChainSealer over 20,000 of the same events, in process, no I/O)
   under cProfile, top functions by own time, and its share of the worker's CPU time per event; and the
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

from bench.steady import Side, median
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


def profile_sealing(stack: LocalStack, worker_cpu_us: float, count: int = 20_000) -> None:
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

    started = time.process_time()  # CPU time: on a shared machine the wall clock mostly measures the neighbours
    seal_all()
    per_event_us = (time.process_time() - started) / count * 1e6
    print(f"sealing alone: {per_event_us:.1f} CPU us/event ({1e6 / per_event_us:,.0f} events per CPU-second); "
          f"the worker spends {worker_cpu_us:.1f} CPU us/event in all (median of the rounds), so sealing is "
          f"{per_event_us / worker_cpu_us:.0%} of it and Kafka I/O, decoding, batching and transactions the rest")
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


def main() -> None:
    """Run the measurements and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_500_000,
                        help="backlog per round, drained by each side (default 1500000: tens of seconds per side)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, a fresh backlog each, side order rotating "
                        "(default 3)")
    parser.add_argument("--rate", type=int, default=5000, help="the latency step's steady rate (default 5000/s)")
    parser.add_argument("--seconds", type=int, default=20, help="the latency step's seconds (default 20)")
    parser.add_argument("--stream-events", type=int, default=200_000,
                        help="backlog of the stream step (Faust's per-record path is slow; default 200000)")
    parser.add_argument("--steps", default="throughput,latency,profile",
                        help="which of throughput, stream, latency, profile to run (default throughput,latency,profile)")
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    stack = LocalStack()
    created: list[Topics] = []
    worker_cpu_us = 0.0
    try:
        if "throughput" in steps:
            worker_cpu_us = sides_in_rounds(stack, args, created)
        if "stream" in steps:
            stream_step(stack, args, created)
        if "latency" in steps:
            latency_step(stack, args, created)
        if "profile" in steps:
            profile_sealing(stack, worker_cpu_us or 10.5)
    finally:
        for topics in created:
            delete_topics(stack, topics)
        _delete_forward_topics(stack)

def _seal_argv(topics: Topics, heads: bool) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli.main", "seal", "--raw-topic", topics.raw, "--sealed-topic",
            topics.sealed, "--app-id", topics.app_id, "--metrics-port", "0",
            *(() if heads else ("--heartbeat-interval", "0"))]


def drain(stack: LocalStack, argv: list[str], out_topic: str, events: int, role: str,
          forwarded: bool) -> tuple[Side, float, float]:
    """Start one worker (``argv``) on a backlog of ``events`` and count its committed output on ``out_topic``
    (sealed events, or every record when ``forwarded``) until all are there: (its Side: launch, first and last
    output seen; its CPU us per event between the first and the last; its peak RSS MB)."""
    import psutil

    consumer = Consumer(KafkaSettings.from_env(stack.env(role)).client_config(**{
        "group.id": f"auditseal-{role}-bench-{os.getpid()}-{time.monotonic_ns()}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "fetch.min.bytes": 1}))
    consumer.assign([TopicPartition(out_topic, p, 0) for p in range(PARTITIONS)])
    codecs = sealed_codecs()
    launched = time.monotonic()
    worker = _worker(stack, argv)
    process = psutil.Process(worker.pid)
    seen, first, last, cpu_first, cpu_last = 0, 0.0, 0.0, 0.0, 0.0
    marks: list[tuple[float, int]] = []
    deadline = launched + 900
    try:
        while seen < events and time.monotonic() < deadline:
            messages = consumer.consume(10_000, 0.2)
            for message in messages:
                if message.error():
                    raise RuntimeError(message.error().str())
            batch = len(messages) if forwarded else sum(
                1 for message in messages if codecs.kind_of(message.value()) == EVENT_KIND)
            if batch:
                times = process.cpu_times()
                if not seen:
                    first, cpu_first = time.monotonic(), times.user + times.system
                seen += batch
                last, cpu_last = time.monotonic(), times.user + times.system
                marks.append((last, seen))
        rss = _peak_rss_mb(worker.pid)
    finally:
        consumer.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    if seen < events:
        raise TimeoutError(f"{out_topic}: {seen} of {events} records within 900 s")
    # the first batch seen counts as output at `first`; the CPU span covers the rest
    return Side(seen, launched, first, last, tuple(marks)), (cpu_last - cpu_first) / max(seen, 1) * 1e6, rss


def throughput(stack: LocalStack, topics: Topics, events: int, argv: list[str], out_topic: str,
               role: str) -> tuple[float, float, float]:
    """(events/s, peak RSS MB, seconds) of one worker draining the backlog, from its first output to its last
    (``bench.privacy`` and ``bench.siem`` measure with it)."""
    side, _, rss = drain(stack, argv, out_topic, events, role, forwarded=out_topic.startswith("bench.fwd"))
    return side.rate, rss, side.steady_s


def sides_in_rounds(stack: LocalStack, args: argparse.Namespace, created: list[Topics]) -> float:
    """Step 1: per round, one fresh backlog drained by each side in turn (the order rotating): the sealer with
    heads on (production), with heads off (``--heartbeat-interval 0``), and the same-I/O forwarder (``forwarder.py
    batch``); each side's start-up (launch to its first output seen) apart from its steady figure. Prints each
    side, each round's ratios and their medians. Returns the sealer's median CPU us per event."""
    names = ["sealer", "heads-off", "forwarder"]
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    shares: list[float] = []
    ramps: list[float] = []
    for round_number in range(args.rounds):
        backlog = create_topics(stack, partitions=PARTITIONS)
        created.append(backlog)
        off = create_topics(stack, partitions=PARTITIONS)  # its sealed topic and app id; the raw one stays empty
        created.append(off)
        forward_topic = backlog.sealed.replace("test.sealed", "bench.fwd.batch")
        _create_forward_topic(stack, forward_topic)
        started = time.monotonic()
        produce(stack, backlog.raw, args.events, seed=round_number + 1)
        print(f"round {round_number + 1}: produced {args.events:,} events in {time.monotonic() - started:.1f}s",
              flush=True)
        argv = {
            "sealer": (_seal_argv(backlog, True), backlog.sealed, "verifier", False),
            "heads-off": (_seal_argv(Topics(backlog.raw, off.sealed, PARTITIONS, off.app_id), False), off.sealed,
                          "verifier", False),
            "forwarder": ([sys.executable, "-m", "bench.forwarder", "batch", backlog.raw, forward_topic,
                           f"{backlog.app_id}-fwd-batch"], forward_topic, "sealer", True),
        }
        order = names[round_number % 3:] + names[:round_number % 3]
        measured: dict[str, Side] = {}
        for name in order:
            side_argv, out_topic, role, forwarded = argv[name]
            side, cpu_us, rss = drain(stack, side_argv, out_topic, args.events, role, forwarded)
            measured[name] = side
            rates[name].append(side.rate)
            cpu[name].append(cpu_us)
            shares.append(side.startup_share)
            ramps.append(side.ramp_share or 0.0)
            print(f"  {name:<10} {side.describe()}; {cpu_us:.1f} CPU us/event, peak RSS {rss:.0f} MB", flush=True)
        print(f"  round {round_number + 1} ratios: sealer / forwarder {measured['sealer'].rate / measured['forwarder'].rate:.2f} "
              f"(by CPU per event {cpu['forwarder'][-1] / cpu['sealer'][-1]:.2f}), heads on / off "
              f"{measured['sealer'].rate / measured['heads-off'].rate:.2f} (by CPU {cpu['heads-off'][-1] / cpu['sealer'][-1]:.2f})",
              flush=True)
        for topics in (backlog, off):
            delete_topics(stack, topics)
            created.remove(topics)
        _delete_forward_topics(stack)
    ratio = [s / f for s, f in zip(rates["sealer"], rates["forwarder"], strict=True)]
    ratio_cpu = [f / s for s, f in zip(cpu["sealer"], cpu["forwarder"], strict=True)]
    heads = [on / off for on, off in zip(rates["sealer"], rates["heads-off"], strict=True)]
    heads_cpu = [off / on for on, off in zip(cpu["sealer"], cpu["heads-off"], strict=True)]
    print(f"sealer (heads on): median {median(rates['sealer']):,.0f} events/s per worker over {args.rounds} rounds "
          f"(range {min(rates['sealer']):,.0f}-{max(rates['sealer']):,.0f}); forwarder median "
          f"{median(rates['forwarder']):,.0f}")
    print(f"ratio sealer / same-I/O forwarder: median {median(ratio):.2f} (range {min(ratio):.2f}-{max(ratio):.2f}; "
          f"target >= 0.8), by the worker's CPU per event {median(ratio_cpu):.2f} ({min(ratio_cpu):.2f}-{max(ratio_cpu):.2f})")
    print(f"sealer heads on / off: median {median(heads):.2f} ({min(heads):.2f}-{max(heads):.2f}), by CPU per event "
          f"{median(heads_cpu):.2f} ({min(heads_cpu):.2f}-{max(heads_cpu):.2f}) (target >= 0.95)")
    print(f"ramp and tail at most {max(ramps):+.1%} of a side's figure (target < 5%); the start-up left out (launch "
          f"to the first output) at most {max(shares):.1%} of a side's time")
    return median(cpu["sealer"])


def stream_step(stack: LocalStack, args: argparse.Namespace, created: list[Topics]) -> None:
    """Faust's per-record path (``forwarder.py stream``) beside the sealer on one backlog of ``--stream-events``,
    for the record of why the sealer does not use it."""
    backlog = create_topics(stack, partitions=PARTITIONS)
    created.append(backlog)
    forward_topic = backlog.sealed.replace("test.sealed", "bench.fwd.stream")
    _create_forward_topic(stack, forward_topic)
    produce(stack, backlog.raw, args.stream_events, seed=9)
    sealer, _, _ = drain(stack, _seal_argv(backlog, True), backlog.sealed, args.stream_events, "verifier", False)
    stream, _, _ = drain(stack, [sys.executable, "-m", "bench.forwarder", "stream", backlog.raw, forward_topic,
                                 f"{backlog.app_id}-fwd-stream"], forward_topic, args.stream_events, "sealer", True)
    print(f"sealer {sealer.describe()}\nFaust per-record forwarder {stream.describe()}\n"
          f"ratio sealer / Faust per-record forwarder {sealer.rate / stream.rate:.2f}")


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
        _FORWARD_TOPICS.clear()


if __name__ == "__main__":
    main()
