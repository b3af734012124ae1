"""Sealer throughput with its key in the PKCS#11 token (SoftHSM2) against a key file, side by side.

The sealer signs once per checkpoint (at most 2,000 events), so the token's signing rate should not bound
its throughput: this measures that it does not. Each round seals the same backlog (N events on 6
partitions, produced once per topic pair) twice, once per key store, alternating which goes first; events/s
= N / (first to last sealed record), as in ``bench.sealer``. It prints each run, the median of each store,
the ratio token / file (target >= 0.95), and the raw signing rate of each store on one thread.

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

from bench.sealer import PARTITIONS, _count_until, produce
from pipeline.dev.stack import LocalStack
from pipeline.integrity.keyring import Keyring, generate_signing_key, save_keyring, save_signing_key
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


def seal_backlog(stack: LocalStack, topics: Topics, events: int, env: dict[str, str]) -> float:
    """events/s of one worker sealing the topic pair's backlog with ``env``."""
    base = {name: value for name, value in os.environ.items() if name not in (*_TOKEN_VARIABLES,
                                                                              "AUDITSEAL_SIGNING_KEY")}
    argv = [sys.executable, "-m", "pipeline.cli.main", "seal", "--raw-topic", topics.raw, "--sealed-topic",
            topics.sealed, "--app-id", topics.app_id, "--metrics-port", "0"]
    worker = subprocess.Popen(argv, env={**base, **env}, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        first, last = _count_until(stack, topics.sealed, events, timeout=600)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    return events / max(last - first, 1e-9)


def signing_rate(signer, seconds: float = 2.0) -> float:
    """Signatures per second of ``signer`` over a checkpoint-sized message, on this thread."""
    message = bytes(300)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        signer.sign(message)
        count += 1
    return count / (time.perf_counter() - started)


def main() -> None:
    """Run the rounds and print both figures, their ratio and the raw signing rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    stack = LocalStack()
    token_env = stack.env("sealer")
    rates: dict[str, list[float]] = {"token": [], "file": []}
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
                    rate = seal_backlog(stack, topics, args.events, token_env if store == "token" else file_env)
                    rates[store].append(rate)
                    print(f"round {round_number + 1} {store:5}: {rate:10,.0f} events/s", flush=True)
        finally:
            for topics in created:
                delete_topics(stack, topics)
        from pipeline.integrity.keyring import load_signing_key

        file_signer = load_signing_key(Path(scratch) / "signing-key.pem")
        token_signer = stack.signer()
        token_sigs, file_sigs = signing_rate(token_signer), signing_rate(file_signer)
    token, file = statistics.median(rates["token"]), statistics.median(rates["file"])
    print(f"sealer, key in PKCS#11 token (SoftHSM2): {token:10,.0f} events/s (median of {len(rates['token'])})")
    print(f"sealer, key file:                        {file:10,.0f} events/s (median of {len(rates['file'])})")
    print(f"ratio token / file: {token / file:.2f} (target >= 0.95)")
    print(f"signing alone, one thread: token {token_sigs:,.0f} signatures/s, file {file_sigs:,.0f} signatures/s")


if __name__ == "__main__":
    main()
