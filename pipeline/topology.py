"""The audit topics, the roles, and the minimal Kafka ACLs and S3 grants each role needs.

This is the one description of the deployment that ``auditseal dev up``, the helm chart and the
compose file are checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Grant:
    """One allowed operation: resource type (topic, group, transactional_id, cluster), pattern, name, operation."""

    resource: str
    name: str
    operation: str
    pattern: str = "literal"


@dataclass(frozen=True)
class Role:
    """A role: its Kafka grants and what it may do in the archive bucket (none, read or write)."""

    name: str
    kafka: tuple[Grant, ...]
    s3_access: str = "none"
    description: str = ""
    group_prefix: str = field(default="")

    @property
    def principal(self) -> str:
        """The Kafka principal of the role's SCRAM user."""
        return f"User:{self.name}"


def _topic(name: str, *operations: str) -> tuple[Grant, ...]:
    return tuple(Grant("topic", name, op) for op in operations)


def _group(prefix: str) -> tuple[Grant, ...]:
    return (Grant("group", prefix, "read", "prefixed"), Grant("group", prefix, "describe", "prefixed"))


ROLES = (
    Role("producer", _topic(RAW_TOPIC, "write", "describe"),
         description="services emitting audit events"),
    Role("sealer",
         _topic(RAW_TOPIC, "read", "describe") + _topic(SEALED_TOPIC, "write", "describe")
         + _group("auditseal-sealer")
         + (Grant("transactional_id", "auditseal-sealer", "write", "prefixed"),
            Grant("transactional_id", "auditseal-sealer", "describe", "prefixed"))
         # Faust keeps its table changelogs in topics named after the app
         + tuple(Grant("topic", "auditseal-sealer", op, "prefixed")
                 for op in ("create", "read", "write", "describe", "describe_configs")),
         description="the Faust agent that chains and signs events"),
    Role("sink", _topic(SEALED_TOPIC, "read", "describe") + _group("auditseal-sink"), s3_access="write",
         description="the S3 Object Lock sink connector"),
    Role("siem", _topic(SEALED_TOPIC, "read", "describe") + _group("auditseal-siem"), s3_access="read",
         description="the security team's SIEM, read-only"),
    Role("verifier", _topic(SEALED_TOPIC, "read", "describe") + _group("auditseal-verifier"), s3_access="read",
         description="the integrity verifier job"),
    Role("access-auditor", _topic(RAW_TOPIC, "write", "describe"),
         description="turns broker authorizer decisions into audit events"),
    Role("admin",
         (Grant("cluster", "kafka-cluster", "describe"), Grant("cluster", "kafka-cluster", "alter"),
          Grant("cluster", "kafka-cluster", "create"))
         + tuple(g for t in AUDIT_TOPICS for g in _topic(t, "describe", "describe_configs")),
         s3_access="admin",
         description="manages users, ACLs and topics; cannot write events or delete the log"),
)
ROLE_NAMES = tuple(role.name for role in ROLES)


def role(name: str) -> Role:
    """The role called ``name``; ValueError listing the known roles otherwise."""
    for candidate in ROLES:
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown role {name!r}; expected one of {', '.join(ROLE_NAMES)}")
