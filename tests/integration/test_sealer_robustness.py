"""The sealer and the verifier under hostile input and operator error, on the real broker (issue 14).

A record that cannot be sealed as it is becomes a rejection that says why (never a stalled chain);
a stray record on the sealed topic is reported, never a crash loop; a new raw partition is a new
chain; a configuration the sealer cannot use ends in one line and exit 2.
"""

from __future__ import annotations

import hashlib
import os
import random
import string
import subprocess
import sys
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions

from pipeline.config import KafkaSettings
from pipeline.integrity.chain import chain_hash
from pipeline.producer.client import AuditProducer
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import ENTRY_KINDS, EVENT_KIND, REJECTION_KIND, entry_payload, sealed_codecs
from tests.support.sealing import (
    REPO,
    Topics,
    audit,
    create_topics,
    delete_topics,
    free_port,
    metric_samples,
    raw_end_offsets,
    sealed_source_offsets,
    start_sealer,
    wait_until_sealed,
)

pytestmark = pytest.mark.stack


@pytest.fixture()
def topics(stack):
    created = create_topics(stack, partitions=2)
    yield created
    delete_topics(stack, created)


def _large_event(size: int) -> dict:
    """A valid event whose single-object encoding is exactly ``size`` bytes, incompressible (lz4
    would shrink a repeated filler below any batch limit)."""
    event = next(iter(synthetic_events(1, seed=99)))
    event["attributes"] = {"blob": ""}
    base = len(default_codec().encode(event))
    pad = size - base
    filler = "".join(random.Random(size).choices(string.ascii_letters + string.digits, k=size))
    for _ in range(4):  # the string's length prefix grows with it (zig-zag varint)
        event["attributes"] = {"blob": filler[:pad]}
        pad += size - len(default_codec().encode(event))
    assert len(default_codec().encode(event)) == size
    return event


def test_an_event_too_large_to_seal_becomes_a_rejection_and_the_chain_goes_on(stack, topics, tmp_path):
    # 999,950 bytes: accepted and delivered by the producer library (it stalled its chain for good,
    # issue 14); 1,048,300 bytes: as large as the raw topic takes, more than a sealed record may be
    big, huge = _large_event(999_950), _large_event(1_048_300)
    huge_bytes = default_codec().encode(huge)
    settings = KafkaSettings.from_env(stack.env("producer"))
    with AuditProducer(settings, topic=topics.raw) as producer:
        for event in synthetic_events(20, seed=1):
            producer.emit(event)
        producer.emit(big)
        for event in synthetic_events(200, seed=2):
            producer.emit(event)
    raw = Producer(settings.client_config(**{"enable.idempotence": True, "message.max.bytes": 1_100_000}))
    raw.produce(topics.raw, huge_bytes, partition=1)
    assert raw.flush(30) == 0
    with AuditProducer(settings, topic=topics.raw) as producer:  # records behind it must not wait
        for event in synthetic_events(100, seed=3):
            producer.emit(event)

    port = free_port()
    worker = start_sealer(stack, topics, log=tmp_path / "sealer.log", metrics_port=port)
    try:
        sealed = wait_until_sealed(stack, topics, timeout=90)
    finally:
        worker.terminate()
        worker.wait(30)
    ends = raw_end_offsets(stack, topics)
    offsets = sealed_source_offsets(sealed)
    assert all(offsets[p] == list(range(end)) for p, end in ends.items())
    events = [r for records in sealed.values() for _, kind, r in records if kind == EVENT_KIND]
    assert default_codec().encode(big) in [r["event"] for r in events]
    rejections = [r for records in sealed.values() for _, kind, r in records if kind == REJECTION_KIND]
    assert len(rejections) == 1
    rejection = rejections[0]
    assert rejection["source_partition"] == 1
    assert rejection["raw_sha256"] == hashlib.sha256(huge_bytes).digest()
    assert rejection["raw_size"] == 1_048_300
    assert "too large to seal" in rejection["reason"], rejection["reason"]
    assert audit(stack, sealed).violations == []


def test_a_sealed_topic_smaller_than_configured_costs_one_retry_and_the_lag_shows_it(stack, topics, tmp_path):
    # the operator lowered the sealed topic's max.message.bytes below the sealer's --sealed-max-message-bytes:
    # the broker refuses the batch; the chain shows its waiting records as lag, then seals the
    # oversized record as a rejection instead of failing on it forever
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, topics.sealed,
                              set_config={"max.message.bytes": "300000"})
    for future in admin.alter_configs([resource]).values():
        future.result(timeout=30)
    big = default_codec().encode(_large_event(400_000))
    settings = KafkaSettings.from_env(stack.env("producer"))
    raw = Producer(settings.client_config(**{"enable.idempotence": True}))
    raw.produce(topics.raw, big, partition=0)
    assert raw.flush(30) == 0
    with AuditProducer(settings, topic=topics.raw) as producer:
        for event in synthetic_events(100, seed=5):
            producer.emit(event)
    port = free_port()
    log = tmp_path / "sealer.log"
    worker = start_sealer(stack, topics, log=log, metrics_port=port)
    try:
        lag_seen, deadline = 0.0, time.monotonic() + 60
        while time.monotonic() < deadline and not lag_seen:
            time.sleep(1)
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                continue
            lag_seen = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith("auditseal_sealer_consumer_lag{") and f'{topics.raw}/0"' in line)
        assert lag_seen > 0, "the stalled chain's lag read 0 while its records waited"
        sealed = wait_until_sealed(stack, topics, timeout=120)
    finally:
        worker.terminate()
        worker.wait(30)
    rejections = [r for _, kind, r in sealed[0] if kind == REJECTION_KIND]
    assert [r["source_offset"] for r in rejections] == [0]
    assert "too large to seal" in rejections[0]["reason"]
    assert "sealing records over" in log.read_text()
    ends = raw_end_offsets(stack, topics)
    assert all(sealed_source_offsets(sealed)[p] == list(range(end)) for p, end in ends.items())
    assert audit(stack, sealed).violations == []


def _seal(stack, topics, *args: str, cwd, env: dict[str, str] | None = None, timeout: float = 90):
    environment = {**os.environ, **stack.env("sealer"), **(env or {})}
    argv = [sys.executable, "-m", "pipeline.cli.main", "seal", "--metrics-port", "0", "--raw-topic", topics.raw,
            "--sealed-topic", topics.sealed, "--app-id", topics.app_id, *args]
    return subprocess.run(argv, env=dict(environment, PYTHONPATH=str(REPO)), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("case", ["missing CA file", "unknown raw topic", "unknown sealed topic", "foreign app id",
                                  "checkpoint-records -5", "checkpoint-ms 0"])
def test_a_sealer_configuration_it_cannot_use_is_one_line_and_exit_2(stack, topics, tmp_path, case):
    args, env = {
        "missing CA file": ((), {"AUDITSEAL_CA_FILE": str(tmp_path / "missing-ca.pem")}),
        "unknown raw topic": (("--raw-topic", "audit.raw.typo"), {}),
        "unknown sealed topic": (("--sealed-topic", "audit.sealed.typo"), {}),
        "foreign app id": (("--app-id", "billing-sealer"), {}),
        "checkpoint-records -5": (("--checkpoint-records", "-5"), {}),
        "checkpoint-ms 0": (("--checkpoint-ms", "0"), {}),
    }[case]
    started = time.monotonic()
    result = _seal(stack, topics, *args, cwd=tmp_path, env={"AUDITSEAL_STATE_DIR": str(tmp_path / "state"), **env})
    assert time.monotonic() - started < 60
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("auditseal: configuration error:"), lines
    assert "Traceback" not in result.stderr + result.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.endswith("-data")]


def test_the_sealer_keeps_faust_s_data_in_its_state_folder_not_the_working_directory(stack, topics, tmp_path):
    work = tmp_path / "cwd"
    work.mkdir()
    environment = dict(os.environ, **stack.env("sealer"), AUDITSEAL_STATE_DIR=str(tmp_path / "state"))
    argv = [sys.executable, "-m", "pipeline.cli.main", "seal", "--metrics-port", "0", "--raw-topic", topics.raw,
            "--sealed-topic", topics.sealed, "--app-id", topics.app_id]
    worker = subprocess.Popen(argv, env=dict(environment, PYTHONPATH=str(REPO)), cwd=work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "state" / "sealer" / topics.app_id).is_dir() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # Faust is up by now
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(30)
    assert (tmp_path / "state" / "sealer" / topics.app_id).is_dir()
    assert list(work.iterdir()) == []


def test_stray_records_on_the_sealed_topic_are_skipped_reported_and_never_sealed_over(stack, topics, tmp_path):
    settings = KafkaSettings.from_env(stack.env("producer"))
    with AuditProducer(settings, topic=topics.raw) as producer:
        for event in synthetic_events(300, seed=41):
            producer.emit(event)
    log = tmp_path / "sealer.log"
    worker = start_sealer(stack, topics, log=log)
    try:
        sealed = wait_until_sealed(stack, topics)
    finally:
        worker.terminate()
        worker.wait(30)
    # someone with write access puts records on partition 0 outside any transaction: garbage, and a
    # plausible one (a copy of the chain's last event); a forged checkpoint over a forged entry
    last_event = next(r for _, kind, r in reversed(sealed[0]) if kind == EVENT_KIND)
    codecs = sealed_codecs()
    forged_entry = dict(last_event, seq=last_event["seq"] + 1, prev_hash=last_event["hash"])
    forged_entry["hash"] = chain_hash(forged_entry["prev_hash"], forged_entry["seq"],
                                      entry_payload(EVENT_KIND, forged_entry))
    stray = Producer(KafkaSettings.from_env(stack.env("sealer")).client_config())
    values = [b"garbage on the sealed topic", codecs.event.encode(last_event), codecs.event.encode(forged_entry)]
    stray_offsets: set[int] = set()
    for value in values:
        stray.produce(topics.sealed, value, b"audit.raw/0", partition=0,
                      on_delivery=lambda error, message: stray_offsets.add(message.offset()))
    assert stray.flush(30) == 0 and len(stray_offsets) == len(values)
    with AuditProducer(settings, topic=topics.raw) as producer:
        for event in synthetic_events(300, seed=42):
            producer.emit(event)
    port = free_port()
    worker = start_sealer(stack, topics, log=log, metrics_port=port)
    try:
        ends = raw_end_offsets(stack, topics)
        deadline = time.monotonic() + 120
        while True:
            chains = _read_chains(stack, topics)
            if all(len(chains.get(p, [])) and max(r["source_offset"] for _, k, r in chains[p] if k in ENTRY_KINDS)
                   == end - 1 for p, end in ends.items()) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert worker.poll() is None, "the sealer stopped on a stray record"
        assert sum(metric_samples(port, "auditseal_sealer_stray_records_total")) == len(values)
    finally:
        worker.terminate()
        worker.wait(30)
    text = log.read_text()
    assert text.count("stray record at") == len(values)
    # without the strays, every chain is whole: each raw offset sealed once, nothing forked
    clean = {p: [(o, k, r) for o, k, r in records if p != 0 or o not in stray_offsets] for p, records in chains.items()}
    assert sealed_source_offsets(clean) == {p: list(range(end)) for p, end in ends.items()}
    assert audit(stack, clean).violations == []


def _read_chains(stack, topics) -> dict[int, list]:
    # read_sealed, with a record that does not decode kept as (offset, None, None)
    consumer = Consumer(KafkaSettings.from_env(stack.env("verifier")).client_config(**{
        "group.id": f"auditseal-verifier-test-{os.getpid()}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True}))
    codecs = sealed_codecs()
    out: dict[int, list] = {}
    try:
        consumer.assign([TopicPartition(topics.sealed, p, 0) for p in range(topics.partitions)])
        done: set[int] = set()
        deadline = time.monotonic() + 60
        while len(done) < topics.partitions and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                done.add(message.partition())
                continue
            try:
                kind, record = codecs.decode(message.value())
            except ValueError:
                kind, record = None, None
            out.setdefault(message.partition(), []).append((message.offset(), kind, record))
    finally:
        consumer.close()
    return out


def test_a_partition_added_to_the_raw_topic_is_a_new_chain_at_genesis_and_no_crash_loop(stack, topics, tmp_path):
    settings = KafkaSettings.from_env(stack.env("producer"))
    with AuditProducer(settings, topic=topics.raw) as producer:
        for event in synthetic_events(200, seed=71):
            producer.emit(event)
    port = free_port()
    log = tmp_path / "sealer.log"
    worker = start_sealer(stack, topics, log=log, metrics_port=port)
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    try:
        wait_until_sealed(stack, topics)
        # the admin adds a partition to audit.raw only, and a producer writes to it at once
        for future in admin.create_partitions([NewPartitions(topics.raw, 3)]).values():
            future.result(timeout=30)
        raw = Producer(settings.client_config(**{"enable.idempotence": True}))
        for event in synthetic_events(50, seed=72):
            raw.produce(topics.raw, default_codec().encode(event), partition=2)
        assert raw.flush(30) == 0
        deadline = time.monotonic() + 420  # the consumer sees new partitions at its metadata refresh (5 min)
        while "none numbered 2" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(1)
        assert "none numbered 2" in log.read_text(), "the sealer never saw the new partition"
        deadline = time.monotonic() + 60  # the lag is reported every 5 s
        while True:
            lag = {line.split('chain="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                   for line in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                   .splitlines() if line.startswith("auditseal_sealer_consumer_lag{")}
            if lag.get(f"{topics.raw}/2") == 50 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert worker.poll() is None, "the sealer stopped on a new raw partition"
        assert lag.get(f"{topics.raw}/2") == 50, lag
        # the sealed topic gets its partition too: the chain starts at genesis
        for future in admin.create_partitions([NewPartitions(topics.sealed, 3)]).values():
            future.result(timeout=30)
        wide = Topics(topics.raw, topics.sealed, 3, topics.app_id)
        sealed = wait_until_sealed(stack, wide, timeout=120)
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(30)
    ends = raw_end_offsets(stack, wide)
    assert sealed_source_offsets(sealed) == {p: list(range(end)) for p, end in ends.items()}
    assert sealed[2][0][2]["seq"] == 0 and sealed[2][0][2]["chain_id"] == f"{topics.raw}/2"
    assert audit(stack, sealed).violations == []
    assert "Traceback" not in log.read_text()
