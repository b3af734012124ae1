"""Every raw offset accounted for, against the real broker: records deleted from the raw topic before they
were sealed (DeleteRecords, by a principal granted that right for the test) are sealed as a lost gap, and
the verifier names the range; v2 checkpoints sign the deployment's origin and the raw offsets."""

from __future__ import annotations

import itertools

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.config import KafkaSettings
from pipeline.integrity.chain_state import ViolationKind
from pipeline.permissions.topology import Grant
from pipeline.producer.client import AuditProducer
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.sealed import CHECKPOINT_KIND, GAP_KIND, checkpoint_from_record
from tests.support.sealing import (
    audit,
    create_acls,
    create_topics,
    delete_topics,
    read_sealed,
    start_sealer,
    wait_until_sealed,
)

pytestmark = pytest.mark.stack


@pytest.fixture()
def topics(stack):
    created = create_topics(stack, partitions=1)
    yield created
    delete_topics(stack, created)


def _emit(stack, topics, count: int, seed: int) -> None:
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw) as producer:
        for event in synthetic_events(count, seed=seed):
            producer.emit(event)


def _delete_records_before(stack, topics, offset: int) -> None:
    # the attack: someone able to delete records of the raw topic (granted here for the test only)
    create_acls(stack, [("User:producer", Grant("topic", topics.raw, "delete"))])
    admin = AdminClient(KafkaSettings.from_env(stack.env("producer")).client_config())
    for future in admin.delete_records([TopicPartition(topics.raw, 0, offset)]).values():
        assert future.result(timeout=30).low_watermark == offset


def _stop(worker) -> None:
    worker.terminate()
    worker.wait(30)


def test_records_deleted_before_sealing_are_a_lost_gap_the_verifier_names(stack, topics, tmp_path):
    log = tmp_path / "sealer.log"
    _emit(stack, topics, 15, seed=1)
    _delete_records_before(stack, topics, 5)  # before the chain even started: offsets 0..4
    worker = start_sealer(stack, topics, checkpoint_records=50, checkpoint_ms=100, log=log)
    try:
        wait_until_sealed(stack, topics)
    finally:
        _stop(worker)
    _emit(stack, topics, 20, seed=2)           # offsets 15..34, not sealed while the sealer is down
    _delete_records_before(stack, topics, 25)  # offsets 15..24 deleted before they were sealed
    worker = start_sealer(stack, topics, checkpoint_records=50, checkpoint_ms=100, log=log)
    try:
        _emit(stack, topics, 5, seed=3)       # offsets 35..39
        sealed = wait_until_sealed(stack, topics)
    finally:
        _stop(worker)

    records = sealed[0]
    gaps = [(r["source_offset"], r["source_last_offset"], r["cause"]) for _, kind, r in records if kind == GAP_KIND]
    assert gaps == [(0, 4, "lost"), (15, 24, "lost")]
    auditor = audit(stack, sealed)
    found = [(v.kind, v.seq) for v in auditor.violations]
    assert found == [(ViolationKind.LOST_RECORDS, 0), (ViolationKind.LOST_RECORDS, 11)], auditor.violations
    assert "raw offsets 0..4 (5 offsets) were lost" in auditor.violations[0].detail
    assert "raw offsets 15..24 (10 offsets) were lost" in auditor.violations[1].detail
    assert "low watermark is 25" in auditor.violations[1].detail

    # every checkpoint is v2: it signs this deployment's origin and a contiguous raw offset range from 0
    checkpoints = [checkpoint_from_record(r) for _, kind, r in records if kind == CHECKPOINT_KIND]
    cluster_id = AdminClient(KafkaSettings.from_env(stack.env("verifier")).client_config()).list_topics(
        timeout=30).cluster_id
    assert {c.origin for c in checkpoints} == {f"auditseal/{cluster_id}/{topics.raw}/0"}
    assert checkpoints[0].first_source_offset == 0 and checkpoints[-1].last_source_offset == 39
    assert all(b.first_source_offset == a.last_source_offset + 1 for a, b in itertools.pairwise(checkpoints))
    assert "sealed as a lost gap" in log.read_text()


def test_a_chain_without_lost_records_is_intact_with_every_offset_accounted_for(stack, topics, tmp_path):
    _emit(stack, topics, 30, seed=4)
    worker = start_sealer(stack, topics, checkpoint_records=10, checkpoint_ms=100, log=tmp_path / "sealer.log")
    try:
        sealed = wait_until_sealed(stack, topics)
    finally:
        _stop(worker)
    auditor = audit(stack, sealed)
    assert auditor.violations == [] and auditor.notices == []
    assert not [r for _, kind, r in sealed[0] if kind == GAP_KIND]
    assert auditor.checkpoints_valid == auditor.checkpoints_checked >= 3
    read_sealed(stack, topics)
