"""Sealer throughput with its key in the PKCS#11 token (SoftHSM2) against a key file, side by side.

The sealer signs once per checkpoint, so the token's signing rate should not bound its throughput: this
measures how much it costs. A checkpoint closes each chain's share of one fetch (up to 2,000 records spread
over the 6 chains, so about 330 events per signature while draining a backlog). Each round seals the same backlog (N events on 6
partitions, produced once per topic pair) twice, once per key store, alternating which goes first; events/s
= N / (first to last sealed record), as in ``bench.sealer``. On a machine other work shares, wall-clock
rates swing by 2x from run to run, so each run also reports the worker's own CPU time over the same span
(user + system, from /proc): events per CPU-second is what the store could change, and it barely depends
on the neighbours. It prints each run, the median of each store for both measures, their ratios token / file
(target >= 0.95), and the raw signing rate of each store on one thread.

Runs on the local stack (``auditseal dev up``): ``python -m bench.keys [--events N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from confluent_kafka import Consumer, TopicPartition

from bench.sealer import PARTITIONS, produce
from pipeline.config import KafkaSettings
from pipeline.dev.stack import LocalStack
from pipeline.integrity.keyring import Keyring, generate_signing_key, save_keyring, save_signing_key
from pipeline.wire.sealed import EVENT_KIND, sealed_codecs
from tests.support.sealing import REPO, Topics, create_topics, delete_topics

_TOKEN_VARIABLES = ("AUDITSEAL_PKCS11_MODULE", "AUDITSEAL_PKCS11_TOKEN", "AUDITSEAL_PKCS11_PIN_FILE",
                    "AUDITSEAL_PKCS11_PIN")


def file_key_env(stack: LocalStack, directory: Path) -> dict[str, str]:
    """The sealer's variables with a fresh key file and a keyring of its own instead of the token."""
    key = generate_signing_key()
    save_signing_key(key, directory / "signing-key.pem")
    save_keyring(Keyring().rotate(key.public_key, time.time_ns() // 1000), directory / "keyring.json")
    env = {name: value for name, value in stack.env("sealer").items() if name not in _TOKEN_VARIABLES}
    return {**env, "AUDITSEAL_SIGNING_KEY": str(directory / "signing-key.pem"),
            "AUDITSEAL_KEYRING": str(directory / "keyring.json")}


def seal_backlog(stack: LocalStack, topics: Topics, events: int, env: dict[str, str]) -> tuple[float, float]:
    """(events/s, events per CPU-second of the worker) of one worker sealing the backlog with ``env``."""
    base = {name: value for name, value in os.environ.items() if name not in (*_TOKEN_VARIABLES,
                                                                              "AUDITSEAL_SIGNING_KEY")}
    argv = [sys.executable, "-m", "pipeline.cli.main", "seal", "--raw-topic", topics.raw, "--sealed-topic",
            topics.sealed, "--app-id", topics.app_id, "--metrics-port", "0"]
    worker = subprocess.Popen(argv, env={**base, **env}, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        first, last, cpu_first, cpu_last = _count_with_cpu(stack, topics, events, psutil.Process(worker.pid))
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    return events / max(last - first, 1e-9), events / max(cpu_last - cpu_first, 1e-9)


def _count_with_cpu(stack: LocalStack, topics: Topics, target: int, worker) -> tuple[float, float, float, float]:
    # like bench.sealer._count_until, also sampling the worker's CPU seconds when the first and the last
    # sealed events are seen
    consumer = Consumer(KafkaSettings.from_env(stack.env("verifier")).client_config(**{
        "group.id": f"auditseal-verifier-bench-{os.getpid()}-{time.monotonic_ns()}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "fetch.min.bytes": 1}))
    consumer.assign([TopicPartition(topics.sealed, p, 0) for p in range(PARTITIONS)])
    codecs = sealed_codecs()
    seen, first, last, cpu_first, cpu_last = 0, None, None, 0.0, 0.0
    deadline = time.monotonic() + 600
    try:
        while seen < target and time.monotonic() < deadline:
            batch = sum(1 for message in consumer.consume(10_000, 0.5)
                        if not message.error() and codecs.kind_of(message.value()) == EVENT_KIND)
            if batch:
                times = worker.cpu_times()
                if first is None:
                    first, cpu_first = time.monotonic(), times.user + times.system
                seen += batch
                last, cpu_last = time.monotonic(), times.user + times.system
    finally:
        consumer.close()
    if seen < target:
        raise TimeoutError(f"{topics.sealed}: {seen} of {target} events within 600s")
    return first, last, cpu_first, cpu_last


def signing_rate(signer, seconds: float = 2.0) -> tuple[float, float]:
    """(signatures per second, per CPU-second of this process) of ``signer`` over a checkpoint-sized message."""
    message = bytes(300)
    count, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        signer.sign(message)
        count += 1
    return count / (time.perf_counter() - started), count / max(time.process_time() - cpu_started, 1e-9)


def main() -> None:
    """Run the rounds and print both figures, their ratio and the raw signing rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    stack = LocalStack()
    token_env = stack.env("sealer")
    rates: dict[str, list[float]] = {"token": [], "file": []}
    per_cpu: dict[str, list[float]] = {"token": [], "file": []}
    created: list[Topics] = []
    with tempfile.TemporaryDirectory() as scratch:
        file_env = file_key_env(stack, Path(scratch))
        try:
            for round_number in range(args.rounds):
                order = ("token", "file") if round_number % 2 == 0 else ("file", "token")
                for store in order:
                    topics = create_topics(stack, partitions=PARTITIONS)
                    created.append(topics)
                    time.sleep(2)  # the new ACLs reach the broker's authorizer
                    produce(stack, topics.raw, args.events)
                    rate, cpu_rate = seal_backlog(stack, topics, args.events,
                                                  token_env if store == "token" else file_env)
                    rates[store].append(rate)
                    per_cpu[store].append(cpu_rate)
                    print(f"round {round_number + 1} {store:5}: {rate:10,.0f} events/s, "
                          f"{cpu_rate:10,.0f} events per worker CPU-second", flush=True)
        finally:
            for topics in created:
                delete_topics(stack, topics)
        from pipeline.integrity.keyring import load_signing_key

        file_signer = load_signing_key(Path(scratch) / "signing-key.pem")
        token_signer = stack.signer()
        token_sigs, file_sigs = signing_rate(token_signer), signing_rate(file_signer)
    token, file = statistics.median(rates["token"]), statistics.median(rates["file"])
    token_cpu, file_cpu = statistics.median(per_cpu["token"]), statistics.median(per_cpu["file"])
    rounds = len(rates["token"])
    print(f"sealer, key in PKCS#11 token (SoftHSM2): {token:10,.0f} events/s, {token_cpu:10,.0f} per CPU-second "
          f"(medians of {rounds})")
    print(f"sealer, key file:                        {file:10,.0f} events/s, {file_cpu:10,.0f} per CPU-second "
          f"(medians of {rounds})")
    print(f"ratio token / file: {token / file:.2f} wall-clock, {token_cpu / file_cpu:.2f} per CPU-second "
          "(target >= 0.95)")
    print(f"signing alone, one thread: token {token_sigs[0]:,.0f} signatures/s ({token_sigs[1]:,.0f} per CPU-second), "
          f"file {file_sigs[0]:,.0f} signatures/s ({file_sigs[1]:,.0f} per CPU-second)")


if __name__ == "__main__":
    main()
