"""The sealer against the real broker: contiguous chains, rejections, exactly once through SIGKILL and rebalance."""

from __future__ import annotations

import hashlib
import random
import signal
import threading
import time

import pytest
from confluent_kafka import Producer

from pipeline.config import KafkaSettings
from pipeline.producer.client import AuditProducer
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.sealed import CHECKPOINT_KIND, ENTRY_KINDS, REJECTION_KIND
from tests.support.sealing import (
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
    created = create_topics(stack, partitions=3)
    yield created
    delete_topics(stack, created)


def _emit(stack, topics, count: int, seed: int) -> None:
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw) as producer:
        for event in synthetic_events(count, seed=seed):
            producer.emit(event)


def _assert_exactly_once(stack, topics, sealed) -> None:
    ends = raw_end_offsets(stack, topics)
    offsets = sealed_source_offsets(sealed)
    for partition, end in ends.items():
        assert offsets.get(partition, []) == list(range(end)), f"partition {partition}: not each raw offset once"
    auditor = audit(stack, sealed)
    assert auditor.violations == []
    assert auditor.entries_checked == sum(ends.values())
    assert auditor.checkpoints_valid == auditor.checkpoints_checked > 0


def test_chains_are_contiguous_and_garbled_records_become_rejections(stack, topics, tmp_path):
    _emit(stack, topics, 1500, seed=7)
    garbled = [b"not avro at all", b"\xc3\x01" + bytes(8) + b"unknown fingerprint", b"\xc3\x01\x42"]
    raw = Producer(KafkaSettings.from_env(stack.env("producer")).client_config(**{"enable.idempotence": True}))
    for value in garbled:
        raw.produce(topics.raw, value, partition=1)
    raw.produce(topics.raw, None, partition=2)  # a tombstone is refused too, not dropped
    assert raw.flush(30) == 0
    _emit(stack, topics, 500, seed=8)

    port = free_port()
    worker = start_sealer(stack, topics, log=tmp_path / "sealer.log", metrics_port=port)
    try:
        sealed = wait_until_sealed(stack, topics)
        # what the sealer's Prometheus endpoint says of the same work
        entries = sum(1 for records in sealed.values() for _, kind, _ in records if kind in ENTRY_KINDS)
        checkpoints = sum(1 for records in sealed.values() for _, kind, _ in records if kind == CHECKPOINT_KIND)
        assert entries == 1500 + len(garbled) + 1 + 500
        expected = {  # the counters follow each commit by microseconds, the lag gauge every 5 s
            "auditseal_sealer_events_sealed_total": entries,
            "auditseal_sealer_rejections_total": len(garbled) + 1,
            "auditseal_sealer_checkpoints_total": checkpoints,
            "auditseal_sealer_seal_latency_seconds_count": entries,
            'auditseal_sealer_seal_latency_seconds_bucket{le="+Inf"}': entries,
            "auditseal_sealer_consumer_lag": 0,
        }
        deadline = time.monotonic() + 15
        while True:
            found = {name: sum(metric_samples(port, name)) for name in expected}
            lag_series = len(metric_samples(port, "auditseal_sealer_consumer_lag"))
            if (found, lag_series) == (expected, topics.partitions) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert found == expected and lag_series == topics.partitions
    finally:
        worker.terminate()
        worker.wait(30)
    _assert_exactly_once(stack, topics, sealed)

    rejections = [r for records in sealed.values() for _, kind, r in records if kind == REJECTION_KIND]
    assert sorted(r["raw_sha256"] for r in rejections) == sorted(
        hashlib.sha256(v).digest() for v in garbled + [b""])
    reasons = {r["raw_size"]: r["reason"] for r in rejections}
    assert "expected marker c301" in reasons[len(garbled[0])]
    assert "unknown schema fingerprint 0000000000000000" in reasons[len(garbled[1])]
    assert "truncated" in reasons[len(garbled[2])]
    assert "tombstone" in reasons[0]
    for records in sealed.values():
        assert records[-1][1] == CHECKPOINT_KIND, "every committed tail ends in a checkpoint"


def test_exactly_once_through_repeated_sigkill(stack, topics, tmp_path):
    total, kills = 50_000, 4
    producer_thread = threading.Thread(target=_emit, args=(stack, topics, total, 11))
    producer_thread.start()
    rng = random.Random(2026)
    log = tmp_path / "sealer.log"
    try:
        for _ in range(kills):
            worker = start_sealer(stack, topics, checkpoint_records=500, checkpoint_ms=100, log=log)
            time.sleep(rng.uniform(4.0, 9.0))  # start-up takes ~3 s; kill at a random point after
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
    finally:
        producer_thread.join(300)
    worker = start_sealer(stack, topics, log=log)
    try:
        sealed = wait_until_sealed(stack, topics, timeout=240)
    finally:
        worker.terminate()
        worker.wait(30)
    assert sum(raw_end_offsets(stack, topics).values()) == total
    _assert_exactly_once(stack, topics, sealed)


def _emit_steadily(stack, topics, count: int, seed: int, per_second: int) -> None:
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw) as producer:
        started = time.monotonic()
        for index, event in enumerate(synthetic_events(count, seed=seed)):
            producer.emit(event)
            ahead = index / per_second - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def test_two_workers_rebalance_and_a_paused_worker_is_fenced(stack, topics, tmp_path):
    producer_thread = threading.Thread(target=_emit_steadily, args=(stack, topics, 30_000, 21, 1000))
    producer_thread.start()
    first = start_sealer(stack, topics, log=tmp_path / "first.log")
    time.sleep(6)
    second = start_sealer(stack, topics, log=tmp_path / "second.log")  # joins: chains move between workers
    time.sleep(8)
    # the first worker freezes: once its session expires it is presumed dead, the second takes its
    # chains over and fences it; when it wakes up its open transactions must fail, not fork a chain
    first.send_signal(signal.SIGSTOP)
    time.sleep(16)
    first.send_signal(signal.SIGCONT)
    producer_thread.join(300)
    try:
        sealed = wait_until_sealed(stack, topics, timeout=180)
    finally:
        for worker in (first, second):
            worker.terminate()
            worker.wait(30)
    _assert_exactly_once(stack, topics, sealed)
    second_log = (tmp_path / "second.log").read_text()
    resumed = [line for line in second_log.splitlines() if "opened at seq" in line and "opened at seq -1" not in line]
    assert resumed, "the second worker never took over a chain the first had sealed"


def test_exactly_once_through_a_broker_restart(stack, topics, tmp_path):
    producer_thread = threading.Thread(target=_emit_steadily, args=(stack, topics, 15_000, 31, 1000))
    producer_thread.start()
    worker = start_sealer(stack, topics, log=tmp_path / "sealer.log")
    try:
        # mid-stream means once the worker sealed (a start-up without a broker is refused, exit 2, by its
        # pre-flight check): on a loaded machine start-up alone can take longer than a fixed sleep
        deadline = time.monotonic() + 120
        while "opened at seq" not in (tmp_path / "sealer.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)
        # the broker goes away mid-stream (transactions open, producer retrying) and comes back with its data
        stack.kafka_process.stop()
        time.sleep(3)
        stack.up(log=lambda _line: None)
        producer_thread.join(300)
        sealed = wait_until_sealed(stack, topics, timeout=180)
    finally:
        worker.terminate()
        worker.wait(30)
    _assert_exactly_once(stack, topics, sealed)
