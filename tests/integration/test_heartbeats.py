"""Heartbeats against the real broker: every chain signs a tree head at least every --heartbeat-interval,
alone while idle, over its whole history (resumed across a restart); offline, an old newest head is a
stale_head."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from pipeline.config import KafkaSettings
from pipeline.integrity.chain_state import ViolationKind
from pipeline.integrity.keyring import load_keyring
from pipeline.producer.synthetic import synthetic_events
from pipeline.verifier.chains import ChainAuditor
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import CHECKPOINT_KIND, HEAD_KIND
from tests.support.sealing import audit, create_topics, delete_topics, read_sealed, start_sealer, wait_until_sealed

pytestmark = pytest.mark.stack
INTERVAL = "2"


@pytest.fixture()
def topics(stack):
    created = create_topics(stack, partitions=2)
    yield created
    delete_topics(stack, created)


def _emit(stack, topics, count: int, seed: int, partition: int = 0) -> None:
    # all to one partition: the other chain stays idle
    producer = Producer(KafkaSettings.from_env(stack.env("producer")).client_config(**{"enable.idempotence": True}))
    codec = default_codec()
    for event in synthetic_events(count, seed=seed):
        producer.produce(topics.raw, codec.encode(event), partition=partition)
    assert producer.flush(30) == 0


def _heads(records):
    return [r for _, kind, r in records if kind == HEAD_KIND]


def _wait_for_heartbeats(stack, topics, count: int, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        sealed = read_sealed(stack, topics)
        beats = {p: sum(1 for h in _heads(sealed.get(p, [])) if h["heartbeat"]) for p in range(topics.partitions)}
        if all(n >= count for n in beats.values()):
            return sealed
        if time.monotonic() > deadline:
            raise TimeoutError(f"heartbeat heads per partition: {beats}, wanted {count} each")
        time.sleep(1)


def test_idle_chains_sign_heartbeats_over_their_whole_history(stack, topics, tmp_path):
    log = tmp_path / "sealer.log"
    _emit(stack, topics, 30, seed=1)  # partition 1 stays empty: its chain is idle from genesis
    worker = start_sealer(stack, topics, checkpoint_records=10, log=log, extra=("--heartbeat-interval", INTERVAL))
    try:
        wait_until_sealed(stack, topics)
        sealed = _wait_for_heartbeats(stack, topics, 2)
    finally:
        worker.terminate()
        worker.wait(30)
    busy, idle = _heads(sealed[0]), _heads(sealed[1])
    assert [h["tree_size"] for h in busy if not h["heartbeat"]] == [10, 20, 30]
    assert {h["tree_size"] for h in busy if h["heartbeat"]} == {30}
    assert {h["tree_size"] for h in idle} == {0} and all(h["heartbeat"] for h in idle)
    times = [h["issued_at_micros"] for h in busy if h["heartbeat"]]
    assert all(1.5e6 <= b - a <= 10e6 for a, b in zip(times, times[1:], strict=False)), times
    auditor = audit(stack, sealed)
    assert auditor.violations == [], auditor.violations
    assert auditor.heads_checked == len(busy) + len(idle)

    # the restarted sealer extends the same history tree (its heads' roots still match the entries)
    _emit(stack, topics, 5, seed=2)
    worker = start_sealer(stack, topics, checkpoint_records=10, log=log, extra=("--heartbeat-interval", INTERVAL))
    try:
        sealed = wait_until_sealed(stack, topics)
    finally:
        worker.terminate()
        worker.wait(30)
    assert _heads(sealed[0])[-1]["tree_size"] == 35
    assert sealed[0][-1][1] in (CHECKPOINT_KIND, HEAD_KIND)
    assert audit(stack, sealed).violations == []

    # judged an hour later, with no newer head: every chain's head is stale
    keyring = load_keyring(stack.keyring_file)
    later = ChainAuditor(keyring, as_of_micros=time.time_ns() // 1000 + 3600 * 10**6, head_tolerance_micros=60 * 10**6)
    for partition, records in sorted(sealed.items()):
        for offset, kind, record in records:
            where = f"sealed[{partition}]@{offset}"
            if kind == CHECKPOINT_KIND:
                later.checkpoint(record, where)
            elif kind == HEAD_KIND:
                later.head(record, where)
            else:
                later.entry(kind, record, where)
    found = later.finish()
    assert sorted((v.kind, v.chain_id) for v in found) == [
        (ViolationKind.STALE_HEAD, f"{topics.raw}/0"), (ViolationKind.STALE_HEAD, f"{topics.raw}/1")]
