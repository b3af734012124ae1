"""The access auditor (``auditseal access-audit``): the audit trail of the audit trail.

Its sources, each read with a durable position (:mod:`pipeline.access.tail`):

- ``authorizer``: the broker's authorizer log. Each decision about an audit topic, an ``auditseal-``
  consumer group or transactional id, or a cluster right beyond DESCRIBE becomes an AuditEvent
  (:mod:`pipeline.access.authorizer_log`), allowed and denied alike, except the routine requests of the
  pipeline's own data plane.
- ``authentication``: refused connections (:mod:`pipeline.access.authentication_log`).
- ``spool``: access records written by our own reading commands (:mod:`pipeline.access.record`).
- ``metadata``: the KRaft metadata log, for the details the authorizer log lacks: which user's credential,
  which ACL binding, which config key (:mod:`pipeline.access.metadata_watch`).

A :class:`~pipeline.access.trail_watch.TrailWatch` checks meanwhile that the authorizer log is still written.

Events go to ``audit.access`` (the auditor's own origin topic: no other principal may write it, and a
sealer of its own seals it into ``audit.sealed.access``) through
:class:`~pipeline.producer.client.AuditProducer` as the ``access-auditor`` role. A batch's position is saved only after every event of the batch is
delivered: a crash before that replays the batch, and since an event id is derived from the log
entry itself (file, offset, content), a replayed entry carries the id it had the first time and
the duplicate is recognisable downstream. The routine allowed requests of the broker's own principal and
of the auditor itself are not forwarded: the auditor's writes to ``audit.raw`` are logged as allowed
decisions, and forwarding them would produce an event per event, forever.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pipeline.access.authentication_log import failed_authentication_event, parse_failed_authentication
from pipeline.access.authorizer_log import (
    EVENT_ID_NAMESPACE,
    decision_event,
    entry_event_id,
    is_audited,
    parse_decision,
)
from pipeline.access.metadata_watch import MetadataWatch, rotation_user
from pipeline.access.tail import Batch, Line, Position, RotatingLog, load_positions, save_positions
from pipeline.access.trail_watch import TrailWatch
from pipeline.producer.emit import event_from_json
from pipeline.producer.event import new_event
from pipeline.wire.validation import InvalidEventError

AUDITOR_SERVICE = "auditseal-access-auditor"
BROKER_PRINCIPAL = "Cert:broker"
# the pipeline's own data plane (and the broker replicating): their routine allowed requests are not
# forwarded, everything else they do is (see is_audited)
ROUTINE_PRINCIPALS = frozenset({"User:producer", "User:sealer", "User:sink", "User:detector", "User:reconciler",
                                BROKER_PRINCIPAL})
AUTHORIZER, AUTHENTICATION, SPOOL, METADATA = "authorizer", "authentication", "spool", "metadata"
BATCH_LINES = 1000
FLUSH_TIMEOUT_S = 60.0

_log = logging.getLogger(__name__)


class EventProducer(Protocol):
    """What the auditor needs of :class:`~pipeline.producer.client.AuditProducer`."""

    def emit(self, event: Any, *, key: str | bytes | None = None) -> object:
        """Validate and queue one event."""

    def flush(self, timeout: float | None = None) -> None:
        """Wait for delivery; raise if any event was not delivered."""


class AccessAuditor:
    """Forwards new entries of the authorizer log and the access spool to a producer, exactly once per
    entry as long as the state file survives (at least once, with stable event ids, across a crash)."""

    def __init__(
        self,
        producer: EventProducer,
        *,
        authorizer_log: Path,
        spool: Path | None,
        state_file: Path,
        own_principal: str,
        audit_topics: Collection[str],
        routine_principals: Collection[str] = ROUTINE_PRINCIPALS,
        metadata_log: Path | None = None,
        trail: TrailWatch | None = None,
        authentication_log: Path | None = None,
        start_at_end: bool = False,
    ) -> None:
        self.producer = producer
        self.sources = {AUTHORIZER: RotatingLog(authorizer_log)}
        if authentication_log is not None:
            self.sources[AUTHENTICATION] = RotatingLog(authentication_log)
        if spool is not None:
            self.sources[SPOOL] = RotatingLog(spool)
        self.state_file = state_file
        self.own_principal = own_principal
        self.audit_topics = frozenset(audit_topics)
        # the auditor's own writes to audit.raw are routine: forwarding each would make an event per event
        self.routine = frozenset(routine_principals) | {own_principal}
        self.positions: dict[str, Position] = load_positions(state_file)
        self.trail = trail
        self.metadata = None
        if metadata_log is not None:
            self.metadata = MetadataWatch(metadata_log, state_file.with_name(state_file.stem + ".metadata.json"),
                                          start_at_end=start_at_end)
        if start_at_end:
            for name, log in self.sources.items():
                end = log.end_position()
                if name not in self.positions and end is not None:
                    self.positions[name] = end
            save_positions(self.state_file, self.positions)

    def step(self) -> tuple[int, int, bool]:
        """Read one batch from each source, emit its events, wait for delivery, save the positions.

        Returns (lines read, events delivered, whether every source was read to its end). Raises the
        producer's error if delivery fails; the positions are then not advanced, so the next run
        forwards the same entries again.
        """
        lines_read = events_sent = 0
        drained = True
        for name, log in self.sources.items():
            batch = log.read(self.positions.get(name), BATCH_LINES)
            events = self._events(name, log, batch)
            for event in events:
                self.producer.emit(event, key=event["actor"]["id"])
            if events:
                self.producer.flush(FLUSH_TIMEOUT_S)
            if batch.position is not None and batch.position != self.positions.get(name):
                self.positions[name] = batch.position
                save_positions(self.state_file, self.positions)
            lines_read += len(batch.lines)
            events_sent += len(events)
            drained = drained and len(batch.lines) < BATCH_LINES
        if self.trail is not None:
            log_resource = {"type": "kafka.authorizer_log", "id": str(self.sources[AUTHORIZER].path)}
            events = [self._auditor_event(f.action, log_resource, f.reason,
                                          str(uuid.uuid5(EVENT_ID_NAMESPACE, f"trail/{f.key}")), status=f.status)
                      for f in self.trail.tick(time.time())]
            for event in events:
                self.producer.emit(event, key=event["actor"]["id"])
            if events:
                self.producer.flush(FLUSH_TIMEOUT_S)
            events_sent += len(events)
        if self.metadata is not None:
            # read after the spool, so a rotation announced by `acl apply --rotate` is known before its record
            events = self.metadata.read(BATCH_LINES)
            for event in events:
                self.producer.emit(event, key=event["resource"]["id"])
            if events:
                self.producer.flush(FLUSH_TIMEOUT_S)
            self.metadata.commit()
            lines_read += len(events)
            events_sent += len(events)
            drained = drained and len(events) < BATCH_LINES
        return lines_read, events_sent, drained

    def run(self, *, once: bool = False, poll_interval: float = 0.5,
            report: Callable[[str], Any] = print) -> int:
        """Forward entries until interrupted (``once``: until everything present now is forwarded);
        return the number of events delivered."""
        total = 0
        while True:
            lines, sent, drained = self.step()
            total += sent
            if sent and not once:
                report(f"access-audit: forwarded {sent} event(s) from {lines} log line(s)")
            # the log grows while we forward (other clients, and our own writes): "once" stops at the
            # end as it was when read, instead of chasing it
            if drained and once:
                return total
            if lines == 0:
                time.sleep(poll_interval)

    def _events(self, source: str, log: RotatingLog, batch: Batch) -> list[dict[str, Any]]:
        events = []
        if batch.gap is not None:
            _log.error("%s: %s", log.path, batch.gap)
            events.append(self._gap_event(log.path, batch.gap))
        for line in batch.lines:
            if source == AUTHENTICATION:
                failure = parse_failed_authentication(line.text.decode("utf-8", errors="replace"))
                event = None if failure is None else failed_authentication_event(
                    failure, entry_event_id(line.source_id, line.offset, line.text))
            elif source == AUTHORIZER:
                event = self._authorizer_event(line)
            else:
                event = self._spool_event(log.path, line)
            if event is not None:
                events.append(event)
        return events

    def _authorizer_event(self, line: Line) -> dict[str, Any] | None:
        decision = parse_decision(line.text.decode("utf-8", errors="replace"))
        if decision is not None and self.trail is not None:
            self.trail.observe(decision)
        if decision is None or not is_audited(decision, audit_topics=self.audit_topics,
                                              routine_principals=self.routine):
            return None
        return decision_event(decision, entry_event_id(line.source_id, line.offset, line.text))

    def _spool_event(self, path: Path, line: Line) -> dict[str, Any] | None:
        try:
            obj = json.loads(line.text)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            event = event_from_json(obj)
            user = rotation_user(event)
            if user is not None and self.metadata is not None:
                self.metadata.announce_rotation(user, _micros(event["occurred_at"]))
            return event
        except (ValueError, InvalidEventError) as exc:
            # a record we cannot forward is itself recorded, so it cannot vanish unnoticed
            reason = f"unreadable access record at byte {line.offset} of {path}: {exc}"
            _log.error("%s", reason)
            return self._auditor_event("access_record.reject", {"type": "file", "id": str(path)}, reason,
                                       entry_event_id(line.source_id, line.offset, line.text))

    def _gap_event(self, path: Path, gap: str) -> dict[str, Any]:
        return self._auditor_event("authorizer_log.gap", {"type": "file", "id": str(path)}, gap,
                                   str(uuid.uuid5(EVENT_ID_NAMESPACE, f"gap/{path}/{gap}")))

    def _auditor_event(self, action: str, resource: dict[str, str], reason: str, event_id: str,
                       status: str = "FAILURE") -> dict[str, Any]:
        return new_event(event_id=event_id, actor={"id": self.own_principal, "type": "SYSTEM"}, action=action,
                         resource=resource, outcome={"status": status, "reason": reason[:1000]},
                         source_service=AUDITOR_SERVICE)


def _micros(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1_000_000)
    return int(value)


def trail_watch(settings: Any, *, interval: float, timeout: float) -> TrailWatch:
    """The watch on the authorizer log of the cluster ``settings`` reach, probing as their principal."""
    from confluent_kafka.admin import AdminClient

    from pipeline.access.broker_logger import authorizer_levels
    from pipeline.wire.topics import ACCESS_TOPIC

    admin = AdminClient(settings.client_config())
    return TrailWatch(own_principal=f"User:{settings.username}", probe_topic=ACCESS_TOPIC,
                      probe=lambda: admin.list_topics(ACCESS_TOPIC, timeout=10),
                      read_levels=lambda: authorizer_levels(settings, sorted(admin.list_topics(timeout=10).brokers)),
                      interval=interval, timeout=timeout)


def run_access_auditor(*, metadata_log: Path | None = None, authentication_log: Path | None = None,
                       log_file: Path | None = None, spool_file: Path | None = None, state_file: Path | None = None,
                       once: bool = False, start_at_end: bool = False, poll_interval: float = 0.5,
                       trail_interval: float = 10.0, trail_timeout: float = 30.0) -> int:
    """``auditseal access-audit``: run as the role in the ``AUDITSEAL_*`` variables (``access-auditor``)."""
    from pipeline.access.record import spool_path
    from pipeline.config import KafkaSettings
    from pipeline.dev.stack import LocalStack
    from pipeline.preflight import check_kafka
    from pipeline.producer.client import AuditProducer
    from pipeline.wire.topics import ACCESS_TOPIC, AUDIT_TOPICS

    settings = KafkaSettings.from_env()
    check_kafka(settings, [ACCESS_TOPIC])  # one line and exit 2 on a bad login or a dead broker, not a retry loop
    spool = spool_file or spool_path()
    auditor_state = state_file or spool.parent / "access-auditor.position.json"
    if metadata_log is None:
        local = LocalStack().root / "kafka" / "data" / "__cluster_metadata-0"
        metadata_log = local if local.is_dir() else None
    authentication_log = authentication_log or LocalStack().root / "kafka" / "logs" / "kafka-authentication.log"
    with AuditProducer(settings, topic=ACCESS_TOPIC, config={"client.id": AUDITOR_SERVICE}) as producer:
        producer.check()
        auditor = AccessAuditor(
            producer, authorizer_log=log_file or LocalStack().authorizer_log, spool=spool, state_file=auditor_state,
            own_principal=f"User:{settings.username}", audit_topics=AUDIT_TOPICS, start_at_end=start_at_end,
            metadata_log=metadata_log, authentication_log=authentication_log,
            trail=None if once else trail_watch(settings, interval=trail_interval, timeout=trail_timeout),
        )
        total = auditor.run(once=once, poll_interval=poll_interval)
    print(f"access-audit: {total} event(s) forwarded; position saved in {auditor_state}")
    return 0
