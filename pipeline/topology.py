"""The audit topics, the roles, and the minimal Kafka ACLs and S3 grants each role needs.

This is the one description of the deployment that ``auditseal dev up``, the helm chart and the
compose file are checked against. The roles come from the roles file (``config/roles.yaml``, see
:mod:`pipeline.permissions.roles`), loaded once at import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.permissions.roles import Grant, Role, RolesFile, load_roles

RAW_TOPIC = "audit.raw"
SEALED_TOPIC = "audit.sealed"
ALERTS_TOPIC = "audit.alerts"
AUDIT_TOPICS = (RAW_TOPIC, SEALED_TOPIC, ALERTS_TOPIC)
BUCKET = "audit-archive"

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A topic and its explicit configuration (nothing left to broker defaults)."""

    name: str
    partitions: int
    retention_ms: int
    replication_factor: int = 1
    min_insync_replicas: int = 1

    def configs(self) -> dict[str, str]:
        """Topic-level configs: deletion only by retention, never compaction; CreateTime kept for latency."""
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(self.retention_ms),
            "retention.bytes": "-1",
            "min.insync.replicas": str(self.min_insync_replicas),
            "unclean.leader.election.enable": "false",
            "message.timestamp.type": "CreateTime",
            "max.message.bytes": str(1024 * 1024),
        }


TOPICS = (
    # raw events only need to live until sealed; a week covers a long sealer outage
    TopicSpec(RAW_TOPIC, partitions=6, retention_ms=7 * DAY_MS),
    # sealed records live in Kafka for SIEM replay; the locked archive in S3 is the long-term copy
    TopicSpec(SEALED_TOPIC, partitions=6, retention_ms=30 * DAY_MS),
    TopicSpec(ALERTS_TOPIC, partitions=3, retention_ms=90 * DAY_MS),
)


def roles_file_path() -> Path:
    """The roles file: ``$AUDITSEAL_ROLES_FILE``, or ``config/roles.yaml`` in the checkout."""
    configured = os.environ.get("AUDITSEAL_ROLES_FILE")
    return Path(configured) if configured else Path(__file__).resolve().parent.parent / "config" / "roles.yaml"


def load_roles_file(path: Path | None = None) -> RolesFile:
    """The roles file at ``path`` (default :func:`roles_file_path`), validated."""
    return load_roles(path or roles_file_path(), raw_topic=RAW_TOPIC)


# Roles, their minimal Kafka grants and archive access live in the roles file; these names stay the
# way the rest of the code (dev up, dev env, the S3 policy) reads them.
ROLES_FILE = load_roles_file()
ROLES = ROLES_FILE.roles
ROLE_NAMES = tuple(role.name for role in ROLES)
SUPER_USERS = ROLES_FILE.super_users


def role(name: str) -> Role:
    """The role called ``name``; ValueError listing the known roles otherwise."""
    for candidate in ROLES:
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown role {name!r}; expected one of {', '.join(ROLE_NAMES)}")


__all__ = ["ALERTS_TOPIC", "AUDIT_TOPICS", "BUCKET", "RAW_TOPIC", "ROLES", "ROLES_FILE", "ROLE_NAMES", "SEALED_TOPIC",
           "SUPER_USERS", "TOPICS", "Grant", "Role", "TopicSpec", "load_roles_file", "role", "roles_file_path"]
