"""``auditseal detect``: run one detector worker (Faust) with its Prometheus endpoint."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError

RULES_VARIABLE = "AUDITSEAL_DETECTOR_RULES"


def rules_path(explicit: Path | None = None) -> Path:
    """The rules file: ``--rules``, ``$AUDITSEAL_DETECTOR_RULES``, or ``config/detector.yaml`` in the checkout."""
    configured = explicit or os.environ.get(RULES_VARIABLE)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "config" / "detector.yaml"


def topic_partitions(settings: KafkaSettings, topic: str, timeout: float = 15.0) -> int:
    """The partition count of ``topic`` (the tables' changelogs need the same); ConfigError if unreadable."""
    from confluent_kafka import Consumer

    consumer = Consumer(settings.client_config(**{"group.id": "auditseal-detector-metadata"}))
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    finally:
        consumer.close()
    if metadata is None or metadata.error is not None or not metadata.partitions:
        reason = metadata.error.str() if metadata is not None and metadata.error else "no such topic"
        raise ConfigError(f"cannot describe {topic} as {settings.username}: {reason}")
    return len(metadata.partitions)


def run_detector(*, rules: Path | None, raw_topic: str, alerts_topic: str, app_id: str, metrics_port: int,
                 metrics_addr: str | None = None, replication_factor: int = 1, loglevel: str = "info") -> int:
    """Start the detector's Faust worker as the role in the ``AUDITSEAL_*`` variables until stopped."""
    from faust.worker import Worker

    from pipeline.detector.app import DetectorSettings, create_app
    from pipeline.detector.rules import load_detector_config
    from pipeline.metrics import serve_metrics

    if not app_id.startswith("auditseal-detector"):
        raise ConfigError(f"--app-id must start with auditseal-detector (the role's group and topics), found {app_id!r}")
    from dataclasses import replace

    from pipeline.permissions.acls import desired_acls
    from pipeline.permissions.topology import roles

    # the ACLs the roles file declares are provisioning, not an attack: acl_change alerts on the others
    config = replace(load_detector_config(rules_path(rules)),
                     declared_acls=frozenset(acl.describe() for acl in desired_acls(roles())))
    settings = KafkaSettings.from_env()
    detector = DetectorSettings(app_id=app_id, raw_topic=raw_topic, alerts_topic=alerts_topic,
                                partitions=topic_partitions(settings, raw_topic),
                                replication_factor=replication_factor)
    app = create_app(settings, config, detector)
    serve_metrics(metrics_port, metrics_addr)
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
    return 0
