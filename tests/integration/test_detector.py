"""The detector on the real broker: each rule fires on its scripted access pattern, normal traffic stays quiet,
and every alert is sealed into the log as an ``alert.raised`` event."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.wire.codec import EventCodec, default_codec
from pipeline.config import KafkaSettings
from pipeline.producer.event import new_event
from pipeline.producer.client import AuditProducer
from pipeline.wire.sealed import EVENT_KIND
from pipeline.permissions.topology import Grant
from tests.support.sealing import REPO, create_acls, create_topics, delete_topics, start_sealer, wait_until_sealed

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
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=2)
    events = [_access("User:siem", "topic.read", "audit.sealed", "SUCCESS", start + timedelta(hours=h, minutes=m))
              for h in range(9, 18) for m in (0, 20, 40)]
    events.append(_access("User:verifier", "archive.verify", "s3://audit-archive", "SUCCESS", start + timedelta(hours=9),
                          source="auditseal"))
    # normal traffic today: usual reads, a verification that passed, two denials, a service's own events
    events += [_access("User:siem", "topic.read", "audit.sealed", "SUCCESS", today + timedelta(hours=h))
               for h in (10, 11, 15)]
    events.append(_access("User:verifier", "archive.verify", "s3://audit-archive", "SUCCESS", today + timedelta(hours=9),
                          source="auditseal"))
    events += [_access("User:siem", "topic.describe", "audit.raw", "DENIED", today + timedelta(hours=12),
                       reason="DefaultDeny") for _ in range(2)]
    events += [_access("svc-billing", "invoice.read", "inv-1", "SUCCESS", today, source="billing") for _ in range(5)]
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
    made = create_topics(stack, partitions=3)
    suffix = made.raw.rsplit(".", 1)[1]
    app_id = f"auditseal-detector-test-{suffix}"
    alerts = f"test.alerts.{suffix}"
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    for future in admin.create_topics([NewTopic(alerts, num_partitions=1, replication_factor=1)]).values():
        future.result(timeout=30)
    grants = [Grant("topic", made.raw, "read"), Grant("topic", made.raw, "describe"), Grant("topic", made.raw, "write"),
              Grant("topic", alerts, "write"), Grant("topic", alerts, "describe")]
    create_acls(stack, [("User:detector", g) for g in grants]
                + [("User:verifier", Grant("topic", alerts, op)) for op in ("read", "describe")])
    yield made, alerts, app_id
    delete_topics(stack, made)
    changelogs = [t for t in admin.list_topics(timeout=30).topics if t.startswith(app_id)]
    for future in admin.delete_topics([alerts, *changelogs]).values():
        future.result(timeout=30)


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
    raw, alerts_topic, app_id = topics
    rules = tmp_path / "detector.yaml"
    rules.write_text(RULES)
    with AuditProducer(KafkaSettings.from_env(role_env("producer")), topic=raw.raw) as producer:
        for event in _script():
            # one key, one partition: the script's order (a day of learning first) is the order the detector
            # sees; spread over partitions, today's events could be read before the learning day and the
            # "something new" rules would rightly still be learning
            producer.emit(event, key="detector-test")

    log = tmp_path / "detector.log"
    detector = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", "detect", "--rules", str(rules), "--raw-topic", raw.raw,
         "--alerts-topic", alerts_topic, "--app-id", app_id, "--metrics-port", "0", "--loglevel", "warning"],
        env=dict(os.environ, **role_env("detector")), cwd=REPO, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
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

    # the alerts are in the raw topic as events, and the sealer chains them like any other event
    sealer = start_sealer(stack, raw, log=tmp_path / "sealer.log")
    try:
        sealed = wait_until_sealed(stack, raw, timeout=90)
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
