"""The audit topics and their explicit configuration: where each kind of record travels.

Topic names are part of the wire contract (a producer writes ``audit.raw``, the SIEM reads
``audit.sealed``); the configuration here is what ``auditseal dev up``, the helm chart and the
compose file are checked against.
"""

from __future__ import annotations

from dataclasses import dataclass

RAW_TOPIC = "audit.raw"
SEALED_TOPIC = "audit.sealed"
ALERTS_TOPIC = "audit.alerts"
# sealed records as OCSF JSON with their integrity evidence, one per sealed record (auditseal siem-bridge)
OCSF_TOPIC = "audit.ocsf"
AUDIT_TOPICS = (RAW_TOPIC, SEALED_TOPIC, ALERTS_TOPIC)
# data subjects' keys (compacted, destroyable: not an audit topic); configured in pipeline.privacy.keystore
KEYS_TOPIC = "audit.keys"

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
    # partition p holds partition p of audit.sealed in the same order; kept as long as the sealed records
    TopicSpec(OCSF_TOPIC, partitions=6, retention_ms=30 * DAY_MS),
)
