"""The detector on the real broker: each rule fires on its scripted access pattern (written where the access
auditor writes, to the access topic only it may write), normal traffic stays quiet, and every alert is sealed
into the log as an ``alert.raised`` event from the detector's own origin topic."""

from __future__ import annotations

import secrets
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer

from pipeline.config import KafkaSettings
from pipeline.producer.event import new_event
from pipeline.wire.codec import EventCodec, default_codec
from pipeline.wire.sealed import EVENT_KIND
from tests.support.detector import create_detector_topics, delete_detector_topics, emit_as, new_app_id, start_detector
from tests.support.sealing import start_sealer, wait_until_sealed

pytestmark = pytest.mark.stack

RULES = """
version: 1
learning_period: 86400
rules:
  denied_burst: {severity: CRITICAL, threshold: 5, window: 30}
  new_topic_read: {}
  off_hours_read: {min_history: 10, min_share: 0.02}
  new_principal: {}
  verification_failure: {severity: CRITICAL}
"""


def _access(principal: str, action: str, resource: str, status: str, at: datetime, *, source="kafka-broker",
            reason=None) -> dict:
    return new_event(actor={"id": principal, "type": "SERVICE"}, action=action,
                     resource={"type": "kafka.topic", "id": resource}, outcome={"status": status, "reason": reason},
                     source_service=source, occurred_at=at)


def _script() -> list[dict]:
    """Two days ago: a day of normal reading (learning). Today: normal traffic plus one pattern per rule."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=2)
    events = [_access("User:siem", "topic.read", "audit.sealed", "SUCCESS", start + timedelta(hours=h, minutes=m))
              for h in range(9, 18) for m in (0, 20, 40)]
    events.append(_access("User:verifier", "archive.verify", "s3://audit-archive", "SUCCESS", start + timedelta(hours=9),
                          source="auditseal"))
    # normal traffic today: usual reads, a verification that passed, two denials
    events += [_access("User:siem", "topic.read", "audit.sealed", "SUCCESS", today + timedelta(hours=h))
               for h in (10, 11, 15)]
    events.append(_access("User:verifier", "archive.verify", "s3://audit-archive", "SUCCESS", today + timedelta(hours=9),
                          source="auditseal"))
    events += [_access("User:siem", "topic.describe", "audit.raw", "DENIED", today + timedelta(hours=12),
                       reason="DefaultDeny") for _ in range(2)]
    # the patterns
    events += [_access("User:mallory", "topic.describe", "audit.sealed", "DENIED", today + timedelta(hours=13),
                       reason="DefaultDeny") for _ in range(6)]
    events.append(_access("User:siem", "topic.read", "audit.raw", "SUCCESS", today + timedelta(hours=14)))
    events.append(_access("User:siem", "topic.read", "audit.sealed", "SUCCESS", today + timedelta(hours=3)))
    events.append(_access("User:verifier", "archive.verify", "s3://audit-archive", "FAILURE",
                          today + timedelta(hours=16), source="auditseal", reason="2 violation(s)"))
    return events


@pytest.fixture
def topics(stack):
    made = create_detector_topics(stack, partitions=3)
    app_id = new_app_id()
    yield made, app_id
    delete_detector_topics(stack, made, [app_id])


def _read_alerts(env, topic: str, expected: int, timeout: float) -> list[dict]:
    consumer = Consumer(KafkaSettings.from_env(env).client_config(**{
        "group.id": f"auditseal-verifier-test-{secrets.token_hex(4)}", "auto.offset.reset": "earliest"}))
    codec = EventCodec(family="alert")
    records: list[dict] = []
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(records) < expected:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                records.append(codec.decode(message.value()))
        settle = time.monotonic() + 3  # anything more would be an alert too many
        while time.monotonic() < settle:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                records.append(codec.decode(message.value()))
    finally:
        consumer.close()
    return records


def test_each_rule_fires_on_its_pattern_and_the_alerts_are_sealed(stack, role_env, topics, tmp_path):
    made, app_id = topics
    alerts_topic = made.alerts
    rules = tmp_path / "detector.yaml"
    rules.write_text(RULES)
    # one key, one partition: the script's order (a day of learning first) is the order the detector sees;
    # spread over partitions, today's events could be read before the learning day and the "something new"
    # rules would rightly still be learning. The access auditor forwards the verifier's spooled records too.
    emit_as(stack, "access-auditor", made.access, _script(), key="detector-test")

    log = tmp_path / "detector.log"
    detector = start_detector(stack, made, rules, app_id=app_id, log=log)
    try:
        records = _read_alerts(role_env("verifier"), alerts_topic, expected=5, timeout=90)
    finally:
        detector.send_signal(signal.SIGTERM)
        detector.wait(30)
    fired = sorted((r["rule"], r["principal"]) for r in records)
    assert fired == [("denied_burst", "User:mallory"), ("new_principal", "User:mallory"),
                     ("new_topic_read", "User:siem"), ("off_hours_read", "User:siem"),
                     ("verification_failure", "User:verifier")], log.read_text()[-3000:]
    burst = next(r for r in records if r["rule"] == "denied_burst")
    assert (burst["count"], burst["threshold"], len(burst["evidence_event_ids"])) == (5, 5, 5)
    assert burst["attributes"]["last_reason"] == "DefaultDeny"
    assert next(r for r in records if r["rule"] == "new_topic_read")["attributes"]["topic"] == "audit.raw"

    # the alerts are on the detection topic as events, and a sealer of that topic chains them, each entry's
    # chain naming the detector's own origin topic
    sealer = start_sealer(stack, made.detection, log=tmp_path / "sealer.log")
    try:
        sealed = wait_until_sealed(stack, made.detection, timeout=90)
    finally:
        sealer.send_signal(signal.SIGTERM)
        sealer.wait(30)
    events = [default_codec().decode(r["event"]) for entries in sealed.values() for _, kind, r in entries
              if kind == EVENT_KIND]
    alert_events = {str(e["event_id"]): e for e in events if e["action"] == "alert.raised"}
    assert set(alert_events) == {str(r["alert_id"]) for r in records}
    sample = alert_events[str(burst["alert_id"])]
    assert sample["actor"]["id"] == "User:detector" and sample["source_service"] == "auditseal-detector"
    assert sample["attributes"]["rule"] == "denied_burst"
    assert {r["chain_id"].split("/")[0] for entries in sealed.values() for _, kind, r in entries
            if kind == EVENT_KIND} == {made.detection.raw}
