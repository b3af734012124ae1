"""Helpers for tests that run real detector workers (``auditseal detect``) on topics of their own."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.config import KafkaSettings
from pipeline.permissions.topology import Grant
from pipeline.producer.client import AuditProducer
from pipeline.producer.event import new_event
from pipeline.wire.codec import EventCodec
from tests.support.sealing import REPO, Topics, create_acls, create_topics, delete_topics

# a burst rule that fires after a handful of denials, and nothing else
BURST_RULES = """
version: 1
learning_period: 86400
rules:
  denied_burst: {severity: CRITICAL, threshold: 3, window: 600}
"""


@dataclass(frozen=True)
class DetectorTopics:
    """The detector's topics made for one test, granted as the roles file grants the real ones: an access
    topic only the access auditor writes and a verification topic only the verifier writes (the detector's
    sources, co-partitioned), a detection topic for its alert events (``detection.raw``, sealed into
    ``detection.sealed``) and an alerts topic, both written by the detector only."""

    access: str
    verification: str
    reconciliation: str
    detection: Topics
    alerts: str


def create_detector_topics(stack, partitions: int = 3) -> DetectorTopics:
    """Fresh topics and grants of :class:`DetectorTopics`; the verifier may read the alerts."""
    detection = create_topics(stack, partitions=1)
    suffix = detection.raw.rsplit(".", 1)[1]
    access, verification, alerts = f"test.access.{suffix}", f"test.verification.{suffix}", f"test.alerts.{suffix}"
    reconciliation = f"test.reconciliation.{suffix}"
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    new = [NewTopic(access, num_partitions=partitions, replication_factor=1),
           NewTopic(verification, num_partitions=partitions, replication_factor=1),
           NewTopic(reconciliation, num_partitions=partitions, replication_factor=1),
           NewTopic(alerts, num_partitions=1, replication_factor=1)]
    for future in admin.create_topics(new).values():
        future.result(timeout=30)
    grants = [("User:access-auditor", Grant("topic", access, op)) for op in ("write", "describe")]
    grants += [("User:verifier", Grant("topic", verification, op)) for op in ("write", "describe")]
    grants += [("User:reconciler", Grant("topic", reconciliation, op)) for op in ("write", "describe", "read")]
    grants += [("User:detector", Grant("topic", topic, op)) for topic in (access, verification, reconciliation)
               for op in ("read", "describe")]
    grants += [("User:detector", Grant("topic", topic, op)) for topic in (detection.raw, alerts)
               for op in ("write", "describe")]
    grants += [("User:verifier", Grant("topic", alerts, op)) for op in ("read", "describe")]
    create_acls(stack, grants)
    return DetectorTopics(access, verification, reconciliation, detection, alerts)


def delete_detector_topics(stack, made: DetectorTopics, app_ids: list[str]) -> None:
    """Remove the test's topics, and the changelogs of every detector app id it ran."""
    delete_topics(stack, made.detection)
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    doomed = [made.access, made.verification, made.reconciliation, made.alerts]
    doomed += [t for t in admin.list_topics(timeout=30).topics if t.startswith(tuple(app_ids))]
    for future in admin.delete_topics(doomed).values():
        future.result(timeout=30)


def new_app_id() -> str:
    """An app id no detector ran with yet: its changelog topics do not exist (a first start)."""
    return f"auditseal-detector-test-{secrets.token_hex(4)}"


def start_detector(stack, made: DetectorTopics, rules: Path, *, app_id: str, log: Path,
                   alerts_topic: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A real detector process as the detector role on the test's topics."""
    argv = [sys.executable, "-m", "pipeline.cli.main", "detect", "--rules", str(rules), "--access-topic", made.access,
            "--verification-topic", made.verification, "--reconciliation-topic", made.reconciliation,
            "--detection-topic", made.detection.raw,
            "--alerts-topic", alerts_topic or made.alerts, "--app-id", app_id, "--metrics-port", "0",
            "--loglevel", "warning"]
    return subprocess.Popen(argv, env=dict(os.environ, **stack.env("detector"), **(env or {})), cwd=REPO,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def emit_as(stack, role: str, topic: str, events: list[dict], key: str | None = None) -> None:
    """Deliver ``events`` to ``topic`` as ``role`` (one key: one partition, in order, when ``key`` is given)."""
    with AuditProducer(KafkaSettings.from_env(stack.env(role)), topic=topic) as producer:
        for event in events:
            producer.emit(event, key=key or event["actor"]["id"])


def denial(principal: str) -> dict:
    """One DENIED access event of ``principal`` as the access auditor forwards it, dated now."""
    return new_event(actor={"id": principal, "type": "SERVICE"}, action="topic.describe",
                     resource={"type": "kafka.topic", "id": "audit.sealed"},
                     outcome={"status": "DENIED", "reason": "DefaultDeny"}, source_service="kafka-broker",
                     occurred_at=datetime.now(UTC))


def wait_for_alert(stack, made: DetectorTopics, principal: str, timeout: float,
                   detector: subprocess.Popen | None = None) -> dict:
    """The first alert about ``principal`` on the alerts topic; AssertionError if none within ``timeout``
    or if ``detector`` exits meanwhile."""
    consumer = Consumer(KafkaSettings.from_env(stack.env("verifier")).client_config(**{
        "group.id": f"auditseal-verifier-test-{secrets.token_hex(4)}", "auto.offset.reset": "earliest"}))
    codec = EventCodec(family="alert")
    consumer.subscribe([made.alerts])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if detector is not None and detector.poll() is not None:
                raise AssertionError(f"the detector exited ({detector.returncode}) before alerting on {principal}")
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                record = codec.decode(message.value())
                if record["principal"] == principal:
                    return record
    finally:
        consumer.close()
    raise AssertionError(f"no alert about {principal} within {timeout}s")
