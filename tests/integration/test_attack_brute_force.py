"""Attack 6: many wrong SCRAM passwords. Each refused login becomes a DENIED ``authentication.fail`` event
naming the address, listener and mechanism, and the burst raises a CRITICAL ``denied_burst`` alert."""

from __future__ import annotations

import secrets
import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from pipeline.access.auditor import AccessAuditor
from pipeline.config import KafkaSettings
from pipeline.wire.topics import AUDIT_TOPICS
from tests.support.access import RecordingProducer, detector_alerts, read_back

pytestmark = pytest.mark.stack

ATTEMPTS = 15


def test_wrong_passwords_are_events_and_a_burst_is_alerted(stack, role_env, tmp_path):
    auditor_settings = KafkaSettings.from_env(role_env("access-auditor"))
    log = stack.root / "kafka" / "logs" / "kafka-authentication.log"
    with RecordingProducer(auditor_settings) as producer:
        auditor = AccessAuditor(producer, authorizer_log=stack.authorizer_log, spool=None,
                                state_file=tmp_path / "position.json", own_principal="User:access-auditor",
                                audit_topics=AUDIT_TOPICS, authentication_log=log, start_at_end=True)
        for _ in range(ATTEMPTS):
            env = dict(role_env("siem"), AUDITSEAL_SASL_PASSWORD=secrets.token_urlsafe(16))
            intruder = AdminClient(KafkaSettings.from_env(env).client_config(**{"reconnect.backoff.ms": 5000}))
            with pytest.raises(KafkaException):
                intruder.list_topics(timeout=2)
        time.sleep(1.0)
        auditor.run(once=True)
        events = read_back(role_env("sealer"), producer.results)

    failures = [e for e in events if e["action"] == "authentication.fail"]
    assert len(failures) >= ATTEMPTS
    first = failures[0]
    assert first["outcome"]["status"] == "DENIED" and "invalid credentials" in first["outcome"]["reason"]
    assert first["actor"]["id"] == "unauthenticated@127.0.0.1" and first["source_service"] == "kafka-broker"
    assert first["attributes"]["mechanism"] == "SCRAM-SHA-512"
    assert first["attributes"]["listener"] == f"127.0.0.1:{stack.ports()['kafka_client']}"
    bursts = [a for a in detector_alerts(events) if a.rule == "denied_burst"]
    assert bursts and bursts[0].severity == "CRITICAL" and bursts[0].principal == "unauthenticated@127.0.0.1"
    assert "authentication.fail" in bursts[0].summary
