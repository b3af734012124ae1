"""Personal-data protection: emit and seal throughput with encryption on against off, in one run, and the
key store's size per million subjects.

1. Emit: the same synthetic events (realistic actors: 200 users, ~900 distinct user/IP/agent/session
   combinations per 20,000 events) through AuditProducer, without and with a Protector, alternately
   for ``--rounds`` (each side first in every other round); events/s until the last acknowledgement,
   and the process's CPU time per event. The subjects' keys are created before the rounds (one durable
   key-store write each), and measured apart: how fast keys of never-seen subjects are created (one
   synchronous write to audit.keys each), the worst case.
2. Seal: per round, one backlog of plain events and one of protected events, each sealed by one worker on
   its own fresh topics, alternately first (``bench.sealer``'s drain); ratio protected / plain by rate and
   by the worker's CPU per event, medians of the rounds.
3. Key store size: ``--subjects`` key records in the key store's format (the bytes KeyStore writes),
   on a throwaway topic with the key store's configs; bytes on disk per record and per million
   subjects, the time and memory a client needs to read them when it opens.

    .venv/bin/python -m bench.privacy [--events 200000] [--rounds 3] [--subjects 100000] [--steps emit,seal,size]

Runs on the local stack (``auditseal dev up``) on throwaway topics, except the subject keys of step 1,
which are real keys of synthetic users in audit.keys.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
import tracemalloc
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.sealer import PARTITIONS, drain
from bench.steady import median as _median
from pipeline.archive.encryption import load_master_key
from pipeline.config import KafkaSettings
from pipeline.dev.stack import LocalStack
from pipeline.privacy.crypto import PseudonymKey, new_subject_key, wrap_key
from pipeline.privacy.keystore import KEYS_TOPIC_CONFIGS, KeyStore, keystore_from_env
from pipeline.privacy.protector import Protector
from pipeline.privacy.records import WrappedKey, subject_key_name
from pipeline.producer.client import PRODUCER_TUNING, AuditProducer
from pipeline.producer.event import complete_event
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.codec import default_codec
from tests.support.sealing import create_topics, delete_topics


def _events(count: int, seed: int) -> list[dict]:
    base = list(synthetic_events(min(count, 20_000), seed=seed))
    out = []
    for index in range(count):
        event = dict(base[index % len(base)])
        event.pop("event_id", None)
        out.append(complete_event(event))
    return out


def wait_writable(settings: KafkaSettings, topic: str, timeout: float = 60) -> None:
    """Until the producer role's fresh ACLs on ``topic`` are in force (a probe record is acknowledged)."""
    deadline = time.monotonic() + timeout
    while True:
        outcome: list = []
        probe = Producer(settings.client_config(**{"message.timeout.ms": 5000}))
        probe.produce(topic, b"probe", on_delivery=lambda err, _m, outcome=outcome: outcome.append(err))
        probe.flush(10)
        if outcome and outcome[0] is None:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic} not writable as {settings.username} within {timeout}s: {outcome}")
        time.sleep(1)


def emit_rate(settings: KafkaSettings, topic: str, events: list[dict], protector: Protector | None) -> tuple[float, float]:
    """(events/s, CPU microseconds per event) of one AuditProducer (with ``protector`` if given) until every
    event is acknowledged. The CPU time is this process's (every thread: ours and librdkafka's, which
    compresses and sends the larger protected events): on a loaded machine it moves far less than the wall
    clock, which waits for whatever else runs."""
    with AuditProducer(settings, topic=topic, protector=protector) as producer:
        producer.emit(events[0]).wait(60)  # connection, metadata and idempotence id before the clock starts
        started, cpu = time.perf_counter(), time.process_time()
        for event in events:
            producer.emit(event)
        producer.flush()
        return len(events) / (time.perf_counter() - started), (time.process_time() - cpu) / len(events) * 1e6


def raw_rate(settings: KafkaSettings, topic: str, payloads: list[bytes]) -> float:
    """Events/s of a bare confluent-kafka Producer with the AuditProducer's tuning sending ``payloads``
    (already encoded): what the bytes alone cost, with no validation, encoding or protection."""
    producer = Producer(settings.client_config(**PRODUCER_TUNING))
    producer.produce(topic, payloads[0])
    producer.flush(60)
    started = time.perf_counter()
    for index, payload in enumerate(payloads):
        while True:
            try:
                producer.produce(topic, payload)
                break
            except BufferError:
                producer.poll(0.01)
        if index % 16 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError(f"{len(producer)} payloads not acknowledged")
    return len(payloads) / (time.perf_counter() - started)


def _encoding_us(encoders: tuple, events: list[dict]) -> list[float]:
    """Microseconds per event of each of ``encoders`` over ``events[:20000]``: the best of 30 passes, the
    encoders taking turns so that a burst of load elsewhere hits them alike."""
    sample = events[:20_000]
    best = [float("inf")] * len(encoders)
    for _ in range(30):
        for index, encode in enumerate(encoders):
            started = time.perf_counter()
            for event in sample:
                encode(event)
            best[index] = min(best[index], time.perf_counter() - started)
    return [seconds / len(sample) * 1e6 for seconds in best]


def emit_side_by_side(stack: LocalStack, events: list[dict], rounds: int, store: KeyStore) -> None:
    """Step 1."""
    topics = create_topics(stack, partitions=PARTITIONS)
    settings = KafkaSettings.from_env(stack.env("producer"))
    wait_writable(settings, topics.raw)
    try:
        protector = Protector(store)
        before = store.subject_count()
        for event in events:  # the subjects' keys exist before the clock runs (measured apart, below)
            protector.protect(event)
        print(f"  keys created before the rounds: {store.subject_count() - before}")
        off, on, ratios, cpu_off, cpu_on = [], [], [], [], []
        for round_number in range(rounds):
            # alternately first, so neither side always runs on the warmer (or the more loaded) machine
            measured = {side: emit_rate(settings, topics.raw, events, protector if side == "on" else None)
                        for side in (("off", "on") if round_number % 2 == 0 else ("on", "off"))}
            (rate_off, us_off), (rate_on, us_on) = measured["off"], measured["on"]
            off.append(rate_off), on.append(rate_on), ratios.append(rate_on / rate_off)
            cpu_off.append(us_off), cpu_on.append(us_on)
            print(f"  round {round_number + 1}: off {rate_off:10,.0f} events/s ({us_off:5.1f} CPU us/event)   "
                  f"on {rate_on:10,.0f} events/s ({us_on:5.1f} CPU us/event)   ratio {rate_on / rate_off:.2f}")
        print(f"emit: encryption off {max(off):,.0f} events/s, on {max(on):,.0f} events/s (best of {rounds}); "
              f"ratio of the best {max(on) / max(off):.2f}, median of the rounds' ratios {_median(ratios):.2f}; "
              f"CPU per event off {_median(cpu_off):.1f} us, on {_median(cpu_on):.1f} us, ratio (off/on) "
              f"{_median(cpu_off) / _median(cpu_on):.2f}   target >= 0.8")
        codec = default_codec()
        encode = protector.encoder(codec.encode)
        plain, protected = [codec.encode(e) for e in events], [encode(e) for e in events]
        size_off, size_on = sum(map(len, plain)) / len(plain), sum(map(len, protected)) / len(protected)
        bare = [raw_rate(settings, topics.raw, protected) / raw_rate(settings, topics.raw, plain)
                for _ in range(max(1, rounds // 2))]
        plain_us, protected_us = _encoding_us((codec.encode, encode), events)
        print(f"emit, the encoding alone (no Kafka; best of 30 alternating passes): plain {plain_us:.2f} us/event, "
              f"protected {protected_us:.2f} us/event")
        print(f"emit, the bytes alone: {size_off:.0f} B per plain event, {size_on:.0f} B protected; a bare producer "
              f"sending the pre-encoded events: ratio on / off {_median(bare):.2f} (median of {len(bare)}), the "
              "ceiling of the emit ratio with this wire format")
        fresh = [{"id": f"bench-new-{secrets.token_hex(6)}", "type": "USER"} for _ in range(200)]
        started = time.perf_counter()
        for actor in fresh:
            protector.protect(dict(events[0], actor=actor))
        print(f"emit, worst case (every event a never-seen subject, one durable key write each): "
              f"{len(fresh) / (time.perf_counter() - started):,.0f} new subjects/s")
    finally:
        delete_topics(stack, topics)


def seal_side_by_side(stack: LocalStack, events: list[dict], rounds: int, store: KeyStore) -> None:
    """Step 2: per round, a fresh backlog of plain events and one of protected events, each drained by one
    sealer worker (the order alternating, so neither side always runs on the warmer machine); events/s from
    the first output to the last and the worker's CPU per event over the same span."""
    settings = KafkaSettings.from_env(stack.env("producer"))
    protector = Protector(store)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    for round_number in range(rounds):
        for mode in ("off", "on") if round_number % 2 == 0 else ("on", "off"):
            topics = create_topics(stack, partitions=PARTITIONS)
            try:
                wait_writable(settings, topics.raw)
                emit_rate(settings, topics.raw, events, protector if mode == "on" else None)
                argv = [sys.executable, "-m", "pipeline.cli.main", "seal", "--raw-topic", topics.raw,
                        "--sealed-topic", topics.sealed, "--app-id", topics.app_id, "--metrics-port", "0"]
                # the events, the warm-up event and the probe (sealed as a rejection, not counted)
                side, cpu_us, rss = drain(stack, argv, topics.sealed, len(events) + 1, "verifier", forwarded=False)
                rates[mode].append(side.rate)
                cpu[mode].append(cpu_us)
                print(f"  round {round_number + 1}, seal, encryption {mode:3}: {side.rate:10,.0f} events/s "
                      f"({len(events) + 1} in {side.steady_s:.1f}s), {cpu_us:.1f} CPU us/event, "
                      f"peak RSS {rss:.0f} MB", flush=True)
            finally:
                delete_topics(stack, topics)
    by_rate = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    by_cpu = [off / on for on, off in zip(cpu["on"], cpu["off"], strict=True)]
    print(f"seal: ratio on / off, median of {rounds} rounds: {_median(by_rate):.2f} by rate, "
          f"{_median(by_cpu):.2f} by CPU per event (off {_median(cpu['off']):.1f} us, on {_median(cpu['on']):.1f} us)"
          "   target >= 0.8")


def keystore_size(stack: LocalStack, subjects: int) -> None:
    """Step 3."""
    setup = KafkaSettings.from_env(stack.setup_env("kafka"))
    topic = f"bench.keys.{secrets.token_hex(4)}"
    admin = AdminClient(setup.client_config())
    for future in admin.create_topics([NewTopic(topic, 1, 1, config=KEYS_TOPIC_CONFIGS)]).values():
        future.result(timeout=30)
    try:
        kek = load_master_key(Path(stack.env("privacy")["AUDITSEAL_KEK_FILE"]))
        pseudonyms = PseudonymKey(1, os.urandom(32))
        producer = Producer(setup.client_config(**{"linger.ms": 50, "acks": "all"}))
        value_bytes = 0
        for n in range(subjects):
            key = new_subject_key()
            name = subject_key_name(pseudonyms.subject_pseudonym(f"user-{n}"), key.key_id)
            value = WrappedKey(kek.key_id, wrap_key(kek.key, key.material), "2026-12-01T00:00:00.000000Z").to_value()
            value_bytes += len(name) + len(value)
            while True:
                try:
                    producer.produce(topic, key=name.encode(), value=value)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush(120)
        folder = stack.root / "kafka" / "data" / f"{topic}-0"
        disk = sum(p.stat().st_size for p in folder.glob("*.log"))
        print(f"key store: {subjects:,} subjects, {value_bytes / subjects:.0f} B of key+value each, "
              f"{disk / subjects:.0f} B on disk each (uncompressed batches): "
              f"{disk / subjects * 1e6 / 1e6:,.0f} MB per million subjects per replica")
        tracemalloc.start()
        started = time.perf_counter()
        with KeyStore(setup, kek, topic=topic, timeout=600) as store:
            seconds = time.perf_counter() - started
            current, _ = tracemalloc.get_traced_memory()
            assert store.subject_count() == subjects
        tracemalloc.stop()
        print(f"key store client: reads {subjects:,} subjects in {seconds:.1f}s at open "
              f"({seconds / subjects * 1e6:,.0f} s per million), holds {current / subjects:.0f} B per subject "
              f"({current / subjects:,.0f} MB per million) in memory")
    finally:
        for future in admin.delete_topics([topic]).values():
            future.result(timeout=30)


def main() -> None:
    """Run the three measurements and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--steps", default="emit,seal,size", help="which of emit, seal, size to run")
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    stack = LocalStack()
    events = _events(args.events, seed=18)
    with keystore_from_env(stack.env("producer")) as store:
        if "emit" in steps:
            emit_side_by_side(stack, events, args.rounds, store)
        if "seal" in steps:
            seal_side_by_side(stack, events, args.rounds, store)
    if "size" in steps:
        keystore_size(stack, args.subjects)


if __name__ == "__main__":
    main()
