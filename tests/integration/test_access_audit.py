"""The audit trail of the audit trail, live: a denied read of audit.sealed becomes a DENIED event in audit.raw."""

from __future__ import annotations

import secrets
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from pipeline.access import record_access
from pipeline.access.auditor import AccessAuditor
from pipeline.cli.main import main
from pipeline.config import KafkaSettings
from pipeline.wire.topics import AUDIT_TOPICS, SEALED_TOPIC
from tests.support.access import RecordingProducer, read_back

pytestmark = pytest.mark.stack


def _attempt_read(env, topic: str) -> KafkaError | None:
    """Try to read partition 0 of ``topic`` without a consumer group; return the error the client got."""
    consumer = Consumer(KafkaSettings.from_env(env).client_config(**{
        "group.id": f"auditseal-intruder-{secrets.token_hex(3)}", "enable.auto.commit": False}))
    try:
        # a reader first asks for the topic's metadata (partitions, leaders): DESCRIBE, which is refused
        error = consumer.list_topics(topic, timeout=10).topics[topic].error
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        message = consumer.poll(2)
        assert message is None or message.error(), f"{env['AUDITSEAL_SASL_USERNAME']} read a record of {topic}"
        return error
    finally:
        consumer.close()


def test_denied_read_of_sealed_becomes_a_denied_access_event(stack, role_env, tmp_path, monkeypatch):
    spool, state = tmp_path / "records.jsonl", tmp_path / "position.json"
    for name, value in role_env("access-auditor").items():
        monkeypatch.setenv(name, value)
    # the first run only notes where the log ends: the history before this test is not ours to replay
    assert main(["access-audit", "--once", "--start-at-end", "--log", str(stack.authorizer_log), "--spool", str(spool),
                 "--state", str(state)]) == 0

    error = _attempt_read(role_env("producer"), SEALED_TOPIC)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    recorded = record_access(action="topic.consume", resource={"type": "kafka.topic", "id": SEALED_TOPIC},
                             principal="User:verifier", spool=spool)
    time.sleep(0.5)  # the broker writes its decision just after answering the client

    with RecordingProducer(KafkaSettings.from_env(role_env("access-auditor"))) as producer:
        auditor = AccessAuditor(producer, authorizer_log=stack.authorizer_log, spool=spool, state_file=state,
                                own_principal="User:access-auditor", audit_topics=AUDIT_TOPICS)
        assert auditor.run(once=True) == len(producer.results) > 0
    events = read_back(role_env("sealer"), producer.results)

    denied = [e for e in events if e["actor"]["id"] == "User:producer" and e["outcome"]["status"] == "DENIED"
              and e["resource"] == {"type": "kafka.topic", "id": SEALED_TOPIC}]
    assert denied, "no DENIED access event for the producer's read of audit.sealed"
    assert denied[0]["source_service"] == "kafka-broker"
    assert denied[0]["action"] == "topic.describe" and denied[0]["attributes"]["request_api"] == "Metadata"
    assert denied[0]["outcome"]["reason"] == "DefaultDeny"
    assert [e["actor"]["id"] for e in events if str(e["event_id"]) == recorded["event_id"]] == ["User:verifier"]
    assert not any(e["actor"]["id"] in ("User:access-auditor", "User:broker") for e in events)
