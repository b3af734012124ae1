"""The detector's own topics: the changelogs of its Faust tables (``<app id>-<table>-changelog``).

Faust creates a table's changelog on its first start and, in the same breath, subscribes to it and reads
its end offsets; on a fresh cluster the new topic's metadata is not everywhere yet and the worker
crashed (2 starts in 3 on fresh stacks). So the detector creates them itself before Faust starts and
waits until every partition has a leader; Faust then finds them and only checks they exist.

A table's changelog must have as many partitions as ``audit.raw`` (Faust writes a record's table update
to the changelog partition of the record's own partition). A partition added to ``audit.raw`` later is
met by growing the changelogs to match (:func:`ensure_changelogs` again, from a timer of the app) before
the consumer's next metadata refresh assigns the new partition.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from pipeline.config import KafkaSettings
from pipeline.errors import AuditSealError

REQUEST_TIMEOUT_S = 30.0


class DetectorTopicError(AuditSealError):
    """A changelog topic of the detector could not be created, grown or seen with a leader in time."""


def changelog_configs(app) -> dict[str, dict[str, str]]:
    """Each table's changelog topic name -> the topic configs Faust itself would create it with."""
    configs = {}
    for table in app.tables.values():
        topic = table.changelog_topic
        config: dict[str, str] = {}
        policies = [name for name, on in (("compact", topic.compacting), ("delete", topic.deleting)) if on]
        if policies:
            config["cleanup.policy"] = ",".join(sorted(policies))
        if topic.retention:
            seconds = topic.retention.total_seconds() if isinstance(topic.retention, timedelta) else topic.retention
            config["retention.ms"] = str(int(seconds * 1000))
        config.update({k: str(v) for k, v in (topic.config or {}).items()})
        configs[topic.get_topic_name()] = config
    return configs


def ensure_changelogs(settings: KafkaSettings, configs: Mapping[str, Mapping[str, str]], *, partitions: int,
                      replication_factor: int, timeout: float = 60.0) -> list[str]:
    """Create each changelog that is missing and grow each that has fewer than ``partitions``, then wait
    until every one shows ``partitions`` partitions with a leader. Returns what was done, one line each."""
    admin = AdminClient(settings.client_config(log_level=0))
    existing = _partition_counts(admin, list(configs))
    done: list[str] = []
    missing = [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor, config=dict(config))
               for name, config in configs.items() if name not in existing]
    if missing:
        _wait_all(admin.create_topics(missing), "creating", KafkaError.TOPIC_ALREADY_EXISTS)
        done += [f"created {topic.topic} ({partitions} partitions)" for topic in missing]
    short = [NewPartitions(name, partitions) for name, count in existing.items() if count < partitions]
    if short:
        _wait_all(admin.create_partitions(short), "adding partitions to", KafkaError.INVALID_PARTITIONS)
        done += [f"grew {grow.topic} from {existing[grow.topic]} to {partitions} partitions" for grow in short]
    _wait_for_leaders(admin, list(configs), partitions, timeout)
    return done


def _partition_counts(admin: AdminClient, names: list[str]) -> dict[str, int]:
    counts = {}
    for name in names:
        try:
            topic = admin.list_topics(name, timeout=REQUEST_TIMEOUT_S).topics.get(name)
        except KafkaException as exc:
            raise DetectorTopicError(f"describing {name}: {exc.args[0].str()}") from None
        if topic is not None and topic.error is None and topic.partitions:
            counts[name] = len(topic.partitions)
        elif topic is not None and topic.error is not None and topic.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise DetectorTopicError(f"describing {name}: {topic.error.name()}: {topic.error.str()}")
    return counts


def _wait_all(futures: Mapping, what: str, tolerated: int) -> None:
    failures = []
    for name, future in futures.items():
        try:
            future.result(timeout=REQUEST_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() != tolerated:
                failures.append(f"{name}: {exc.args[0].str()}")
    if failures:
        raise DetectorTopicError(f"{what} the detector's changelog topics failed: " + "; ".join(failures))


def _wait_for_leaders(admin: AdminClient, names: list[str], partitions: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pending = []
        for name in names:
            topic = admin.list_topics(name, timeout=REQUEST_TIMEOUT_S).topics.get(name)
            ready = (topic is not None and topic.error is None and len(topic.partitions) >= partitions
                     and all(p.leader >= 0 and p.error is None for p in topic.partitions.values()))
            if not ready:
                pending.append(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise DetectorTopicError(f"{', '.join(pending)} did not show {partitions} partitions with a leader "
                                     f"within {timeout:.0f}s")
        time.sleep(0.2)
