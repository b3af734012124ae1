"""Witnessing's cost to the sealer: throughput and emit→sealed latency with witnessing on against off, one run.

Both sides run the same build with tree heads (the default heartbeat) and the same ``--log-name``; "on" adds
``--witness-policy`` for a real omniwitness started here (the stack's binary, its own key, the benchmark's
chains as its logs) and ``--witness-interval`` (default 1 s, ten times more often than the default: the
worst case). Every chain's heads are then cosigned while the worker seals; the figures count the
cosignatures the worker sealed, so a side that did not witness cannot pass for one that did.

1. Throughput: ``--rounds`` rounds, each sealing one fresh backlog of ``--events`` per side (6 partitions),
   the side that goes first alternating. events/s = N / (first to last sealed event), and the worker's CPU
   time per event over the same span (what other load on the machine disturbs least). Ratio on / off per
   round, their median, and the ratio of the best rounds (target >= 0.95).
2. Latency: a steady ``--rate`` events/s for ``--seconds`` through a running worker, per side, alternating;
   latency = a read_committed consumer receiving the sealed event minus the raw record's timestamp; p50 and
   p99 per side (target: witnessing adds nothing to p99).

Runs on the local stack (``auditseal dev up``) on throwaway topics: ``python -m bench.witness``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.sealer import PARTITIONS, _peak_rss_mb, latency, produce
from bench.steady import median as _median
from pipeline.dev import witness as dev_witness
from pipeline.dev.processes import ManagedProcess
from pipeline.dev.stack import LocalStack
from pipeline.integrity.keyring import load_keyring
from pipeline.integrity.log_identity import chain_origin, log_verifier
from tests.support.sealing import REPO, Topics, create_topics, delete_topics, free_port

LOG_NAME = "bench-witness"


def start_witness(stack: LocalStack, home: Path, chains: list[Topics]) -> tuple[ManagedProcess, Path]:
    """An omniwitness accepting every chain of `chains` under the sealer's key, and the policy naming it."""
    key = load_keyring(stack.keyring_file).active
    assert key is not None, "the stack's keyring has no active key: `auditseal dev up`"
    origins = [chain_origin(LOG_NAME, f"{topics.raw}/{p}") for topics in chains for p in range(topics.partitions)]
    logs = {origin: log_verifier(key.public_key, origin).vkey for origin in origins}
    return dev_witness.start_side_witness(stack, home, "bench-witness", "witness.bench.auditseal.localhost", logs)


def seal_argv(topics: Topics, policy: Path | None, interval: float, metrics_port: int) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli.main", "seal", "--raw-topic", topics.raw, "--sealed-topic",
            topics.sealed, "--app-id", topics.app_id, "--metrics-port", str(metrics_port), "--log-name", LOG_NAME,
            *(("--witness-policy", str(policy), "--witness-interval", f"{interval:g}") if policy else ())]


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _cosigned(port: int, chains: int, timeout: float = 60) -> float:
    # the worker's cosignatures sealed so far, waiting (after the backlog) until every chain has at least one
    deadline = time.monotonic() + timeout
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        per_chain = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("auditseal_sealer_witness_cosignatures_total{")]
        if len([v for v in per_chain if v > 0]) >= chains or time.monotonic() > deadline:
            return sum(per_chain)
        time.sleep(0.5)


def throughput_and_cpu(stack: LocalStack, topics: Topics, events: int, policy: Path | None,
                       interval: float) -> tuple[float, float, float, float]:
    """(events/s, peak RSS MB, worker CPU us per event, cosignatures sealed) of one worker sealing the backlog."""
    import psutil

    from bench.keys import _count_with_cpu

    port = free_port()
    worker = subprocess.Popen(seal_argv(topics, policy, interval, port), env=dict(os.environ, **stack.env("sealer")),
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first, last, cpu_first, cpu_last = _count_with_cpu(stack, topics, events, psutil.Process(worker.pid))
        rss = _peak_rss_mb(worker.pid)
        cosigned = _cosigned(port, topics.partitions) if policy else _metric(port, "auditseal_sealer_witness_cosignatures_total")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    return events / max(last - first, 1e-9), rss, (cpu_last - cpu_first) / events * 1e6, cosigned


def main() -> None:
    """Run both measurements and print their figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--latency-rounds", type=int, default=2)
    parser.add_argument("--interval", type=float, default=1.0, help="--witness-interval of the witnessing side")
    parser.add_argument("--steps", default="throughput,latency")
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    stack = LocalStack()
    backlogs = [create_topics(stack, partitions=PARTITIONS) for _ in range(2 * args.rounds if "throughput" in steps else 0)]
    steady = [create_topics(stack, partitions=PARTITIONS) for _ in range(2 * args.latency_rounds if "latency" in steps else 0)]
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-witness-") as home:
        process, policy = start_witness(stack, Path(home), backlogs + steady)
        try:
            if "throughput" in steps:
                throughput_step(stack, args, backlogs, policy)
            if "latency" in steps:
                latency_step(stack, args, steady, policy)
        finally:
            process.stop()
            for topics in backlogs + steady:
                delete_topics(stack, topics)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


def throughput_step(stack: LocalStack, args: argparse.Namespace, backlogs: list[Topics], policy: Path) -> None:
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    for round_number in range(args.rounds):
        measured = {}
        for witnessing in ((True, False) if round_number % 2 == 0 else (False, True)):
            backlog = backlogs.pop()
            produce(stack, backlog.raw, args.events)
            rate, rss, cpu_us, cosigned = throughput_and_cpu(stack, backlog, args.events,
                                                             policy if witnessing else None, args.interval)
            if witnessing:
                assert cosigned >= backlog.partitions, f"witnessing on, yet {cosigned:.0f} cosignatures sealed"
            else:
                assert cosigned == 0
            measured[witnessing] = (rate, rss, cpu_us, cosigned)
            rates[witnessing].append(rate)
            cpu[witnessing].append(cpu_us)
        (on, on_rss, on_cpu, on_cosigned), (off, off_rss, off_cpu, _) = measured[True], measured[False]
        print(f"round {round_number + 1}: witnessing on {on:9,.0f} events/s ({on_cpu:.1f} CPU us/event, peak RSS "
              f"{on_rss:.0f} MB, {on_cosigned:.0f} cosignatures sealed)  off {off:9,.0f} events/s ({off_cpu:.1f} CPU "
              f"us/event, peak RSS {off_rss:.0f} MB)  ratio on / off {on / off:.2f}, by CPU {off_cpu / on_cpu:.2f}")
    ratios = [on / off for on, off in zip(rates[True], rates[False], strict=True)]
    print(f"sealer throughput, witnessing on / off ({args.events:,} events a side, {args.rounds} rounds): median of "
          f"the rounds' ratios {_median(ratios):.2f}, ratio of the best rounds {max(rates[True]) / max(rates[False]):.2f}, "
          f"by the worker's CPU per event (best rounds) {min(cpu[False]) / min(cpu[True]):.2f} (target >= 0.95)")


def latency_step(stack: LocalStack, args: argparse.Namespace, steady: list[Topics], policy: Path) -> None:
    results: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
    for round_number in range(args.latency_rounds):
        for witnessing in ((True, False) if round_number % 2 == 0 else (False, True)):
            topics = steady.pop()
            argv = seal_argv(topics, policy if witnessing else None, args.interval, 0)
            p50, p99, samples = latency(stack, topics, argv, args.rate, args.seconds)
            results[witnessing].append((p50, p99, samples))
            print(f"latency round {round_number + 1}, witnessing {'on ' if witnessing else 'off'}: at {args.rate:,} "
                  f"events/s for {args.seconds}s p50 {p50:.0f} ms, p99 {p99:.0f} ms ({samples:,} samples)")
    on99 = _median([p99 for _, p99, _ in results[True]])
    off99 = _median([p99 for _, p99, _ in results[False]])
    on50 = _median([p50 for p50, _, _ in results[True]])
    off50 = _median([p50 for p50, _, _ in results[False]])
    print(f"emit->sealed at {args.rate:,} events/s, median of {args.latency_rounds} rounds: witnessing on p50 "
          f"{on50:.0f} ms, p99 {on99:.0f} ms; off p50 {off50:.0f} ms, p99 {off99:.0f} ms; p99 on - off "
          f"{on99 - off99:+.0f} ms (target: no added latency)")


if __name__ == "__main__":
    main()
