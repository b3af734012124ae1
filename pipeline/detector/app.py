"""The Faust app of the detector: ``auditseal detect`` runs one worker.

One agent reads its authenticated sources only: ``audit.access`` (written by the access auditor alone),
``audit.verification`` (the verifier alone) and ``audit.reconciliation`` (the reconciler alone), never
``audit.raw``, where any producer could write an
event claiming ``source_service: kafka-broker`` (``acl check``, only_origin_writes, proves who can write
each). It keeps two tables keyed by principal, and judges each access event with the pure rules of
:mod:`pipeline.detector.rules`:

- ``principal-profiles``: what each principal read, when, and since when it is known;
- ``denied-attempts``: DENIED decisions per principal in a tumbling window (Faust windowed table, by
  the record's Kafka timestamp), expiring after two windows.

An alert is written twice before the agent moves on (so before Faust commits the offset): as an
``Alert`` record on ``audit.alerts`` and as an ``alert.raised`` AuditEvent on ``audit.detection`` (the
detector's own origin topic), which a sealer seals into ``audit.sealed.detection``. A crash in between replays the access event and raises the same
alert id again: at least once, with recognisable duplicates.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import faust
from mode import CrashingSupervisor
from prometheus_client import Counter, Gauge

from pipeline.config import KafkaSettings
from pipeline.detector.rules import Alert, DetectorConfig, access_from_event, judge
from pipeline.detector.topics import changelog_configs, ensure_changelogs
from pipeline.producer.client import AuditProducer
from pipeline.producer.event import new_event
from pipeline.wire.codec import DecodeError, EventCodec, default_codec
from pipeline.wire.topics import (
    ACCESS_TOPIC,
    ALERTS_TOPIC,
    DETECTION_TOPIC,
    RECONCILIATION_TOPIC,
    VERIFICATION_TOPIC,
)

log = logging.getLogger(__name__)

DETECTOR_SERVICE = "auditseal-detector"
ALERT_ACTION = "alert.raised"
FLUSH_TIMEOUT_S = 30.0
METADATA_MAX_AGE_S = 30.0

ACCESS_EVENTS = Counter("auditseal_detector_access_events_total", "Access events judged by the rules, by outcome",
                        ["status"])
SKIPPED = Counter("auditseal_detector_records_skipped_total",
                  "Raw records the rules do not look at (not access events, own alerts, undecodable)", ["reason"])
ALERTS = Counter("auditseal_detector_alerts_total", "Alerts raised (records on audit.alerts and events in audit.raw)",
                 ["rule", "severity"])
EVENT_LAG = Gauge("auditseal_detector_event_lag_seconds",
                  "Age of the last raw record judged when it was judged (now - its Kafka timestamp)")
LAST_EVENT = Gauge("auditseal_detector_last_event_timestamp_seconds", "Kafka timestamp of the last raw record read")


@dataclass(frozen=True)
class DetectorSettings:
    """Where the detector reads and writes, and its identity."""

    app_id: str = "auditseal-detector"
    # the authenticated sources the rules judge (co-partitioned: one agent, one set of tables)
    access_topic: str = ACCESS_TOPIC
    verification_topic: str = VERIFICATION_TOPIC
    reconciliation_topic: str = RECONCILIATION_TOPIC
    # where each alert is sealed as an alert.raised event
    detection_topic: str = DETECTION_TOPIC
    alerts_topic: str = ALERTS_TOPIC
    partitions: int = 3
    replication_factor: int = 1


def alert_event(record: Mapping[str, Any], *, principal: str) -> dict[str, Any]:
    """The AuditEvent that seals an alert record into the log: action ``alert.raised``, event id = alert id."""
    attributes = {"rule": record["rule"], "severity": record["severity"], "count": str(record["count"]),
                  "threshold": str(record["threshold"]), "window_start": str(record["window_start"]),
                  "window_end": str(record["window_end"]), "summary": record["summary"][:1000],
                  "evidence_event_ids": ",".join(record["evidence_event_ids"])[:4000]}
    return new_event(event_id=record["alert_id"], occurred_at=record["raised_at"],
                     actor={"id": principal, "type": "SYSTEM"}, action=ALERT_ACTION,
                     resource={"type": "principal", "id": record["principal"]},
                     outcome={"status": "SUCCESS", "reason": None}, source_service=DETECTOR_SERVICE,
                     attributes={**{f"evidence_{k}": v for k, v in record["attributes"].items()}, **attributes})


class AlertPublisher:
    """Writes each alert to the alerts topic (Alert record) and the detection topic (AuditEvent), and waits."""

    def __init__(self, settings: KafkaSettings, detector: DetectorSettings) -> None:
        self.principal = f"User:{settings.username}"
        self.alerts = AuditProducer(settings, topic=detector.alerts_topic, codec=EventCodec(family="alert"),
                                    config={"client.id": f"{DETECTOR_SERVICE}-alerts"})
        self.raw = AuditProducer(settings, topic=detector.detection_topic, config={"client.id": DETECTOR_SERVICE})

    def publish(self, alert: Alert) -> dict[str, Any]:
        """Deliver one alert to both topics (raises the producer's error if either is not delivered)."""
        record = alert.record(raised_at=time.time_ns() // 1000)
        self.alerts.emit(record, key=alert.principal)
        self.raw.emit(alert_event(record, principal=self.principal), key=self.principal)
        self.alerts.flush(FLUSH_TIMEOUT_S)
        self.raw.flush(FLUSH_TIMEOUT_S)
        log.warning("alert %s [%s] %s", alert.rule, alert.severity, alert.summary)
        return record

    def close(self) -> None:
        """Flush and close both producers."""
        self.alerts.close()
        self.raw.close()


class ChangelogPartitions:
    """Keeps the tables' changelogs as wide as the raw topic: a record from a partition added to the raw
    topic since the start grows them first (:func:`~pipeline.detector.topics.ensure_changelogs`), so its
    table updates have a changelog partition to go to instead of crashing the worker."""

    def __init__(self, app: faust.App, settings: KafkaSettings, detector: DetectorSettings) -> None:
        self.app, self.settings, self.detector = app, settings, detector
        self.partitions = detector.partitions

    async def cover(self, partition: int) -> None:
        """Make sure every changelog has a partition ``partition``; a no-op in the usual case."""
        if partition < self.partitions:
            return
        wanted = partition + 1
        loop = asyncio.get_running_loop()
        done = await loop.run_in_executor(None, functools.partial(
            ensure_changelogs, self.settings, changelog_configs(self.app), partitions=wanted,
            replication_factor=self.detector.replication_factor))
        # Faust's producer checks a record's partition against its cached metadata: refresh it now
        await self.app.producer._producer.client.force_metadata_update()
        log.warning("%s now has a partition %d: %s", self.detector.access_topic, partition,
                    "; ".join(done) or "the changelogs already had it")
        self.partitions = wanted


def create_app(settings: KafkaSettings, config: DetectorConfig, detector: DetectorSettings = DetectorSettings(),
               publisher: AlertPublisher | None = None) -> faust.App:
    """The Faust app of one detector worker, authenticated as ``settings`` (the detector role)."""
    app = faust.App(
        detector.app_id,
        broker=f"kafka://{settings.bootstrap}",
        broker_credentials=faust.SASLCredentials(
            username=settings.username, password=settings.password,
            ssl_context=ssl.create_default_context(cafile=settings.ca_file), mechanism="SCRAM-SHA-512"),
        topic_disable_leader=True,
        # the tables' changelog topics (<app id>-<table>-changelog) are created on first start
        topic_allow_declare=True,
        topic_partitions=detector.partitions,
        topic_replication_factor=detector.replication_factor,
        web_enabled=False,
        store="memory://",
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        agent_supervisor=CrashingSupervisor,
        # a partition added to the raw topic is taken up within this time (the detector's volume is low)
        consumer_metadata_max_age_ms=int(METADATA_MAX_AGE_S * 1000),
    )
    publisher = publisher or AlertPublisher(settings, detector)
    own_principal = publisher.principal
    codec = default_codec()
    sources = app.topic(detector.access_topic, detector.verification_topic, detector.reconciliation_topic,
                        value_serializer="raw",
                        key_serializer="raw", internal=False)
    profiles = app.Table("principal-profiles", default=dict, partitions=detector.partitions)
    learning = app.Table("learning", default=int, partitions=detector.partitions)
    window = config.burst_window
    denied = app.Table("denied-attempts", default=dict, partitions=detector.partitions).tumbling(
        timedelta(seconds=window), expires=timedelta(seconds=2 * window))

    changelogs = ChangelogPartitions(app, settings, detector)

    @app.agent(sources, name="detect")
    async def detect(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for event in stream.events():
            timestamp = event.message.timestamp
            LAST_EVENT.set(timestamp)
            EVENT_LAG.set(max(0.0, time.time() - timestamp))
            if event.value is None:  # a tombstone or a bare key: nothing to judge, and nothing to decode
                SKIPPED.labels("null_value").inc()
                continue
            # the table updates below go to the changelog partition of this record's partition
            await changelogs.cover(event.message.partition)
            try:
                decoded = codec.decode(event.value)
            except DecodeError:
                SKIPPED.labels("undecodable").inc()
                continue
            access = access_from_event(decoded, config, own_principal=own_principal)
            if access is None:
                SKIPPED.labels("own_alert" if decoded["source_service"] == DETECTOR_SERVICE else "not_access").inc()
                continue
            ACCESS_EVENTS.labels(access.status).inc()
            # the learning start is stored per partition (a table key lives in one partition's changelog);
            # the earliest of the partitions this worker holds is the detector's
            started_key = f"started/{event.message.partition}"
            started = min((v for v in learning.values() if v), default=None)
            verdict = judge(access, profiles[access.principal] or None, denied[access.principal].current() or None,
                            config=config, learning_started=started,
                            window_start=int(timestamp // window * window) * 1_000_000)
            profiles[access.principal] = verdict.profile
            if verdict.bucket is not None:
                denied[access.principal] = verdict.bucket
            if verdict.learning_started != started:
                learning[started_key] = verdict.learning_started
            for alert in verdict.alerts:
                await loop.run_in_executor(None, publisher.publish, alert)
                ALERTS.labels(alert.rule, alert.severity).inc()

    @app.on_before_shutdown.connect
    async def close(app: faust.App, **kwargs) -> None:
        await asyncio.get_running_loop().run_in_executor(None, publisher.close)

    return app
