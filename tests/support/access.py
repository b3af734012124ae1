"""Reading back what the access auditor forwarded, for the integration tests of the audit trail."""

from __future__ import annotations

import secrets
import time

from confluent_kafka import Consumer, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.producer.client import AuditProducer, DeliveryResult
from pipeline.wire.codec import default_codec
from pipeline.wire.topics import ACCESS_TOPIC


class RecordingProducer(AuditProducer):
    """An AuditProducer that remembers where each event landed, so the test reads exactly those records
    instead of scanning a topic other tests and benchmarks write millions of events to."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("topic", ACCESS_TOPIC)  # where the access auditor writes
        super().__init__(*args, **kwargs)
        self.results: list[DeliveryResult] = []

    def emit(self, event, **kwargs):
        result = super().emit(event, **kwargs)
        self.results.append(result)
        return result


def read_back(env, results: list[DeliveryResult], topic: str = ACCESS_TOPIC) -> list[dict]:
    """The events at the delivered offsets of ``topic`` (the access auditor's), read back as the sealer role."""
    consumer = Consumer(KafkaSettings.from_env(env).client_config(**{
        "group.id": f"auditseal-sealer-test-{secrets.token_hex(4)}", "enable.auto.commit": False}))
    codec = default_codec()
    events = []
    try:
        for result in results:
            consumer.assign([TopicPartition(topic, result.partition, result.offset)])
            message = None
            deadline = time.monotonic() + 10
            while message is None and time.monotonic() < deadline:
                message = consumer.poll(0.5)
            assert message is not None and not message.error(), f"cannot read back {result}"
            events.append(codec.decode(message.value()))
    finally:
        consumer.close()
    return events


def detector_alerts(events: list[dict]) -> list:
    """The alerts the detector's rules (config/detector.yaml, the roles file's ACLs declared) raise over ``events``,
    replayed in order with in-memory tables as the Faust agent keeps them."""
    from dataclasses import replace

    from pipeline.cli.detect import rules_path
    from pipeline.detector.rules import access_from_event, judge, load_detector_config
    from pipeline.permissions.acls import desired_acls
    from pipeline.permissions.topology import roles

    config = replace(load_detector_config(rules_path(None)),
                     declared_acls=frozenset(a.describe() for a in desired_acls(roles())))
    profiles: dict = {}
    buckets: dict = {}
    started = None
    raised = []
    for event in events:
        access = access_from_event(event, config, own_principal="User:detector")
        if access is None:
            continue
        window = access.occurred_at // (config.burst_window * 1_000_000)
        verdict = judge(access, profiles.get(access.principal), buckets.get((access.principal, window)),
                        config=config, learning_started=started, window_start=window * config.burst_window * 1_000_000)
        profiles[access.principal] = verdict.profile
        if verdict.bucket is not None:
            buckets[(access.principal, window)] = verdict.bucket
        started = verdict.learning_started
        raised += verdict.alerts
    return raised
