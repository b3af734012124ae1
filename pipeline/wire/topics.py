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
# Origin topics: each written by one component's principal only (`acl check`: only_origin_writes), each
# sealed by a sealer of its own into its sealed twin (chain ids ``audit.access/0`` ...), so a sealed entry
# names the authenticated source it came from. A producer can write audit.raw only: an access event,
# verification record or alert it forges there is sealed on an audit.raw chain, as a producer's, and the
# detector (which reads the access and verification topics only) never sees it.
ACCESS_TOPIC = "audit.access"                # the access auditor's access events
VERIFICATION_TOPIC = "audit.verification"    # the verifier's records of its runs (archive.verify)
DETECTION_TOPIC = "audit.detection"          # the detector's alert.raised events
RECONCILIATION_TOPIC = "audit.reconciliation"  # the reconciler's signed attestations
SEALED_TWIN_PREFIX = SEALED_TOPIC + "."


def sealed_topic_of(source: str) -> str:
    """The sealed topic a source topic's chains are sealed into: ``audit.raw`` -> ``audit.sealed``,
    ``audit.access`` -> ``audit.sealed.access`` (one prefixed ACL on ``audit.sealed.`` covers the twins)."""
    return SEALED_TOPIC if source == RAW_TOPIC else SEALED_TWIN_PREFIX + source.removeprefix("audit.")


ORIGIN_TOPICS = (ACCESS_TOPIC, VERIFICATION_TOPIC, DETECTION_TOPIC, RECONCILIATION_TOPIC)
SOURCE_TOPICS = (RAW_TOPIC, *ORIGIN_TOPICS)
"""Every topic a sealer seals, each into :func:`sealed_topic_of` it."""
AUDIT_TOPICS = (RAW_TOPIC, SEALED_TOPIC, ALERTS_TOPIC, *ORIGIN_TOPICS,
                *(sealed_topic_of(topic) for topic in ORIGIN_TOPICS))
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
    # access, verification and reconciliation records share the detector's Faust agent: co-partitioned (3 each)
    TopicSpec(ACCESS_TOPIC, partitions=3, retention_ms=7 * DAY_MS),
    TopicSpec(sealed_topic_of(ACCESS_TOPIC), partitions=3, retention_ms=30 * DAY_MS),
    TopicSpec(VERIFICATION_TOPIC, partitions=3, retention_ms=7 * DAY_MS),
    TopicSpec(sealed_topic_of(VERIFICATION_TOPIC), partitions=3, retention_ms=30 * DAY_MS),
    TopicSpec(DETECTION_TOPIC, partitions=1, retention_ms=7 * DAY_MS),
    TopicSpec(sealed_topic_of(DETECTION_TOPIC), partitions=1, retention_ms=30 * DAY_MS),
    # read by the detector's agent too (reconcile.mismatch alerts): co-partitioned with access and verification
    TopicSpec(RECONCILIATION_TOPIC, partitions=3, retention_ms=7 * DAY_MS),
    TopicSpec(sealed_topic_of(RECONCILIATION_TOPIC), partitions=3, retention_ms=30 * DAY_MS),
    # partition p holds partition p of audit.sealed in the same order; kept as long as the sealed records
    TopicSpec(OCSF_TOPIC, partitions=6, retention_ms=30 * DAY_MS),
)
