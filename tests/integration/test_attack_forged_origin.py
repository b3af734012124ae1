"""Attack (issue 15, item 4): a producer forges the audit trail's own records on the real stack.

A producer wrote 12 fake "kafka-broker" denials for User:siem, an ``archive.verify`` and an ``alert.raised``
into ``audit.raw``; they were sealed as genuine, the detector raised a CRITICAL alert against the innocent
principal, and one back-dated event ended its learning period. Now each origin has its own topic that only
its component's principal may write: the producer is refused on every one of them, what it writes to
``audit.raw`` is sealed on an ``audit.raw/N`` chain (a producer's source) whatever ``source_service`` it
claims, and the detector, which reads only the access auditor's and the verifier's topics, never judges it.
"""

from __future__ import annotations

import secrets
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import KafkaError, Producer

from pipeline.config import KafkaSettings
from pipeline.detector.app import DetectorSettings
from pipeline.producer.event import new_event
from pipeline.wire.codec import EventCodec, default_codec
from pipeline.wire.sealed import EVENT_KIND
from pipeline.wire.topics import (
    ACCESS_TOPIC,
    ALERTS_TOPIC,
    DETECTION_TOPIC,
    RAW_TOPIC,
    RECONCILIATION_TOPIC,
    SEALED_TOPIC,
    VERIFICATION_TOPIC,
    sealed_topic_of,
)
from tests.support.detector import (
    create_detector_topics,
    delete_detector_topics,
    denial,
    emit_as,
    new_app_id,
    start_detector,
    wait_for_alert,
)
from tests.support.sealing import Topics, start_sealer, wait_until_sealed

pytestmark = pytest.mark.stack

RULES = """
version: 1
learning_period: 86400
rules:
  denied_burst: {severity: CRITICAL, threshold: 10, window: 600}
  new_principal: {}
  verification_failure: {severity: CRITICAL}
"""

# who may write each origin topic (the roles file); every other role is refused
WRITERS = {ACCESS_TOPIC: "access-auditor", VERIFICATION_TOPIC: "verifier", DETECTION_TOPIC: "detector",
           ALERTS_TOPIC: "detector", RECONCILIATION_TOPIC: "reconciler"}


def _write_error(env, topic: str) -> int | None:
    """The error code of one record written to ``topic`` with ``env``'s credentials (None: written)."""
    reports = []
    producer = Producer(KafkaSettings.from_env(env).client_config(**{"message.timeout.ms": 15_000,
                                                                      "log_level": 0}))
    producer.produce(topic, b"forged", on_delivery=lambda err, _msg: reports.append(err))
    producer.flush(30)
    assert reports, f"no delivery report for {topic}"
    return reports[0].code() if reports[0] is not None else None


@pytest.mark.parametrize("topic", sorted(WRITERS))
def test_only_its_component_can_write_an_origin_topic(stack, role_env, topic):
    for role in ("producer", "sealer", "privacy", "access-auditor", "verifier", "detector", "reconciler"):
        if role == WRITERS[topic]:
            continue
        assert _write_error(role_env(role), topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED, (role, topic)
    # the sealed twin: the sealer alone
    if topic != ALERTS_TOPIC:
        twin = sealed_topic_of(topic)
        for role in ("producer", WRITERS[topic], "reconciler"):
            assert _write_error(role_env(role), twin) == KafkaError.TOPIC_AUTHORIZATION_FAILED, (role, twin)


def _forgeries(run: str) -> list[dict]:
    now = datetime.now(UTC)
    forged = [new_event(actor={"id": "User:siem", "type": "SERVICE"}, action="topic.describe",
                        resource={"type": "kafka.topic", "id": "audit.sealed"},
                        outcome={"status": "DENIED", "reason": f"DefaultDeny {run}"}, source_service="kafka-broker",
                        occurred_at=now) for _ in range(12)]
    forged.append(new_event(actor={"id": "User:verifier", "type": "SERVICE"}, action="archive.verify",
                            resource={"type": "s3.prefix", "id": "s3://audit-archive"},
                            outcome={"status": "SUCCESS", "reason": None}, source_service="auditseal",
                            occurred_at=now))
    forged.append(new_event(actor={"id": "User:verifier", "type": "SERVICE"}, action="archive.verify",
                            resource={"type": "s3.prefix", "id": "s3://audit-archive"},
                            outcome={"status": "FAILURE", "reason": "3 violation(s): chain_break"},
                            source_service="auditseal", occurred_at=now))
    forged.append(new_event(actor={"id": "User:detector", "type": "SYSTEM"}, action="alert.raised",
                            resource={"type": "principal", "id": "User:siem"},
                            outcome={"status": "SUCCESS", "reason": None}, source_service="auditseal-detector",
                            attributes={"rule": "denied_burst", "severity": "CRITICAL"}, occurred_at=now))
    # back-dated two days: had the detector judged it, its learning period (a day) would be over
    forged.append(denial("User:early") | {"occurred_at": now - timedelta(days=2), "outcome": {
        "status": "SUCCESS", "reason": None}, "action": "topic.read"})
    return forged


def _alerts(stack, topic: str, settle: float) -> list[dict]:
    from confluent_kafka import Consumer

    consumer = Consumer(KafkaSettings.from_env(stack.env("verifier")).client_config(**{
        "group.id": f"auditseal-verifier-test-{secrets.token_hex(4)}", "auto.offset.reset": "earliest"}))
    codec = EventCodec(family="alert")
    consumer.subscribe([topic])
    records = []
    try:
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                records.append(codec.decode(message.value()))
    finally:
        consumer.close()
    return records


def test_forged_denials_verification_and_alert_are_sealed_as_a_producers_and_alert_nobody(stack, role_env,
                                                                                           tmp_path):
    # the detector's sources by default are the two origin topics, never audit.raw
    assert (DetectorSettings().access_topic, DetectorSettings().verification_topic) == (ACCESS_TOPIC,
                                                                                        VERIFICATION_TOPIC)
    made = create_detector_topics(stack, partitions=3)
    app_id = new_app_id()
    rules = tmp_path / "detector.yaml"
    rules.write_text(RULES)
    run = secrets.token_hex(4)
    forged = _forgeries(run)
    detector = start_detector(stack, made, rules, app_id=app_id, log=tmp_path / "detector.log")
    try:
        # the attack: everything into audit.raw, which the producer may write ...
        emit_as(stack, "producer", RAW_TOPIC, forged, key=f"forger-{run}")
        # ... and the same into the detector's sources and its alerts topic, which it may not (the test's
        # detection topic is made by create_topics, which lets the producer write it: the real audit.detection
        # refuses it, test_only_its_component_can_write_an_origin_topic)
        for topic in (made.access, made.verification, made.alerts):
            assert _write_error(role_env("producer"), topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED, topic
        # a genuine burst from the access auditor afterwards: the detector is live and judging
        control = f"User:control-{run}"
        emit_as(stack, "access-auditor", made.access, [denial(control) for _ in range(10)])
        assert wait_for_alert(stack, made, control, timeout=180, detector=detector)["rule"] == "denied_burst"
        alerts = _alerts(stack, made.alerts, settle=5)
    finally:
        detector.send_signal(signal.SIGTERM)
        detector.wait(60)
        delete_detector_topics(stack, made, [app_id])
    # no alert against the innocent principal, no verification alert, and still learning: the first access
    # of a new principal (control) raised no new_principal alert, so the back-dated forgery did not end it
    assert [(a["rule"], a["principal"]) for a in alerts] == [("denied_burst", control)], alerts

    # the real sealer seals the forgeries as what they are: entries of audit.raw chains, a producer's source
    real = Topics(RAW_TOPIC, SEALED_TOPIC, 6, "auditseal-sealer")
    sealer = start_sealer(stack, real, log=tmp_path / "sealer.log")
    try:
        sealed = wait_until_sealed(stack, real, timeout=240)
    finally:
        sealer.send_signal(signal.SIGTERM)
        sealer.wait(60)
    codec = default_codec()
    chains = {}
    for entries in sealed.values():
        for _, kind, record in entries:
            if kind == EVENT_KIND:
                chains[str(codec.decode(record["event"])["event_id"])] = record["chain_id"]
    for event in forged:
        assert chains[str(event["event_id"])].startswith(f"{RAW_TOPIC}/"), event["action"]


def test_acl_check_fails_while_anyone_else_may_write_an_origin_topic(stack, role_env):
    import json

    from confluent_kafka.admin import AclBindingFilter, AdminClient

    from pipeline.cli.acl import acl_check
    from pipeline.dev.provision import acl_lock
    from pipeline.permissions.acls import AclEntry
    from pipeline.permissions.broker import read_state

    setup = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    forged = [AclEntry("topic", ACCESS_TOPIC, "literal", "User:producer", "write"),
              AclEntry("topic", VERIFICATION_TOPIC, "literal", "User:access-auditor", "write"),
              AclEntry("topic", "audit.sealed.", "prefixed", "User:detector", "write")]

    def check() -> tuple[int, dict]:
        lines: list[str] = []
        code = acl_check(as_json=True, out=lines.append, env=role_env("admin"))
        return code, json.loads("\n".join(lines))

    def visible(present: bool) -> None:
        deadline = time.monotonic() + 20
        while any((acl in read_state(setup).acls) != present for acl in forged):
            assert time.monotonic() < deadline, "ACLs not applied within 20 s"
            time.sleep(0.2)

    with acl_lock(stack.root):
        try:
            for future in setup.create_acls([acl.to_binding() for acl in forged]).values():
                future.result(timeout=30)
            visible(True)
            code, report = check()
            broken = {rule["name"]: rule["breaches"] for rule in report["rules"] if not rule["holds"]}
            assert code == 1
            assert set(broken) == {"only_origin_writes", "only_sealer_writes_sealed"}, broken
            assert any("User:producer can write audit.access" in b for b in broken["only_origin_writes"])
            assert any("User:access-auditor can write audit.verification" in b for b in broken["only_origin_writes"])
            assert any("User:detector can write audit.sealed.access" in b for b in broken["only_sealer_writes_sealed"])
        finally:
            filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                                        b.operation, b.permission_type) for b in (a.to_binding() for a in forged)]
            for future in setup.delete_acls(filters).values():
                future.result(timeout=30)
            visible(False)
    assert check()[0] == 0
