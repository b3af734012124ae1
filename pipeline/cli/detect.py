"""``auditseal detect``: run one detector worker (Faust) with its Prometheus endpoint."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError

RULES_VARIABLE = "AUDITSEAL_DETECTOR_RULES"


def rules_path(explicit: Path | None = None) -> Path:
    """The rules file: ``--rules``, ``$AUDITSEAL_DETECTOR_RULES``, or ``config/detector.yaml`` in the checkout."""
    configured = explicit or os.environ.get(RULES_VARIABLE)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "config" / "detector.yaml"


def run_detector(*, rules: Path | None, access_topic: str, verification_topic: str, reconciliation_topic: str,
                 detection_topic: str, alerts_topic: str, app_id: str, metrics_port: int,
                 metrics_addr: str | None = None, replication_factor: int = 1, loglevel: str = "info") -> int:
    """Start the detector's Faust worker as the role in the ``AUDITSEAL_*`` variables until stopped."""
    from faust.worker import Worker

    from pipeline.detector.app import DetectorSettings, create_app
    from pipeline.detector.rules import load_detector_config
    from pipeline.detector.topics import changelog_configs, ensure_changelogs
    from pipeline.metrics import serve_metrics
    from pipeline.preflight import check_kafka

    if not app_id.startswith("auditseal-detector"):
        raise ConfigError(f"--app-id must start with auditseal-detector (the role's group and topics), found {app_id!r}")
    from dataclasses import replace

    from pipeline.permissions.acls import desired_acls
    from pipeline.permissions.topology import roles

    # the ACLs the roles file declares are provisioning, not an attack: acl_change alerts on the others
    config = replace(load_detector_config(rules_path(rules)),
                     declared_acls=frozenset(acl.describe() for acl in desired_acls(roles())))
    settings = KafkaSettings.from_env()
    # A missing or forbidden alerts topic, a bad login or a dead broker: one line and exit 2 now. Waiting
    # for audit.alerts to appear was the alternative; but it is created with the stack, never by the
    # detector, so its absence is a deployment error that a retry loop would only hide.
    sources = (access_topic, verification_topic, reconciliation_topic)
    partitions = check_kafka(settings, [*sources, detection_topic, alerts_topic])
    if len({partitions[topic] for topic in sources}) != 1:
        raise ConfigError("the detector's one agent needs its sources co-partitioned, found "
                          + ", ".join(f"{topic} {partitions[topic]}" for topic in sources) + " partitions")
    detector = DetectorSettings(app_id=app_id, access_topic=access_topic, verification_topic=verification_topic,
                                reconciliation_topic=reconciliation_topic, detection_topic=detection_topic, alerts_topic=alerts_topic,
                                partitions=partitions[access_topic], replication_factor=replication_factor)
    app = create_app(settings, config, detector)
    # the tables' changelogs exist, with a leader per partition, before Faust looks for them
    for line in ensure_changelogs(settings, changelog_configs(app), partitions=detector.partitions,
                                  replication_factor=replication_factor):
        print(f"detector: {line}", file=sys.stderr)
    serve_metrics(metrics_port, metrics_addr)
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
    return 0
