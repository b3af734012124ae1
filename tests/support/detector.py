"""Helpers for tests that run real detector workers (``auditseal detect``) on topics of their own."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.config import KafkaSettings
from pipeline.permissions.topology import Grant
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
    """A raw topic (and its sealed twin) and an alerts topic made for one test, with the detector's grants."""

    topics: Topics
    alerts: str

    @property
    def raw(self) -> str:
        return self.topics.raw


def create_detector_topics(stack, partitions: int = 3) -> DetectorTopics:
    """Fresh raw and alerts topics; the detector may read and write raw and write alerts, the verifier reads alerts."""
    made = create_topics(stack, partitions=partitions)
    alerts = f"test.alerts.{made.raw.rsplit('.', 1)[1]}"
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    for future in admin.create_topics([NewTopic(alerts, num_partitions=1, replication_factor=1)]).values():
        future.result(timeout=30)
    grants = [("User:detector", Grant("topic", made.raw, op)) for op in ("read", "describe", "write")]
    grants += [("User:detector", Grant("topic", alerts, op)) for op in ("write", "describe")]
    grants += [("User:verifier", Grant("topic", alerts, op)) for op in ("read", "describe")]
    create_acls(stack, grants)
    return DetectorTopics(made, alerts)


def delete_detector_topics(stack, made: DetectorTopics, app_ids: list[str]) -> None:
    """Remove the test's topics, and the changelogs of every detector app id it ran."""
    delete_topics(stack, made.topics)
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    doomed = [made.alerts] + [t for t in admin.list_topics(timeout=30).topics if t.startswith(tuple(app_ids))]
    for future in admin.delete_topics(doomed).values():
        future.result(timeout=30)


def new_app_id() -> str:
    """An app id no detector ran with yet: its changelog topics do not exist (a first start)."""
    return f"auditseal-detector-test-{secrets.token_hex(4)}"


def start_detector(stack, made: DetectorTopics, rules: Path, *, app_id: str, log: Path,
                   alerts_topic: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A real detector process as the detector role on the test's topics."""
    argv = [sys.executable, "-m", "pipeline.cli.main", "detect", "--rules", str(rules), "--raw-topic", made.raw,
            "--alerts-topic", alerts_topic or made.alerts, "--app-id", app_id, "--metrics-port", "0",
            "--loglevel", "warning"]
    return subprocess.Popen(argv, env=dict(os.environ, **stack.env("detector"), **(env or {})), cwd=REPO,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def denial(principal: str) -> dict:
    """One DENIED access event of ``principal`` as the access auditor forwards it, dated now."""
    return new_event(actor={"id": principal, "type": "SERVICE"}, action="topic.describe",
                     resource={"type": "kafka.topic", "id": "audit.sealed"},
                     outcome={"status": "DENIED", "reason": "DefaultDeny"}, source_service="kafka-broker",
                     occurred_at=datetime.now(timezone.utc))


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
