"""Kafka's authorizer log lines, parsed, filtered, and turned into AuditEvents.

StandardAuthorizer logs each decision through the ``kafka.authorizer.logger`` logger, denials at
INFO and (for operations the broker marks as worth logging) allowed ones at DEBUG::

    [2026-11-26 05:36:34,369] INFO Principal = User:siem is Denied operation = DESCRIBE from host =
    127.0.0.1 on resource = Topic:LITERAL:audit.raw for request = Metadata with resourceRefCount = 1
    based on rule DefaultDeny (kafka.authorizer.logger)

(one line). The timestamp is either ISO 8601 with an offset (the layout ``auditseal dev up``
configures) or log4j's default ``yyyy-MM-dd HH:mm:ss,SSS`` in the broker's local time zone.
Everything here is pure: no file or network I/O.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.producer.event import new_event

BROKER_SERVICE = "kafka-broker"
AUDITSEAL_NAME_PREFIX = "auditseal-"
# Decisions on the cluster resource that change who may do what: always recorded
PERMISSION_REQUESTS = frozenset({"CreateAcls", "DeleteAcls", "AlterUserScramCredentials", "AlterConfigs",
                                 "IncrementalAlterConfigs"})
# What the pipeline's own data plane does all day, once per request: allowed, these are not forwarded for
# routine principals (see is_audited); anything else they do (delete, alter, create, ...) is
ROUTINE_OPERATIONS = frozenset({"read", "write", "describe", "describe_configs", "idempotent_write", "cluster_action"})
# transactional-id requests that open (and so fence) a chain; the per-transaction ones are routine
FENCING_REQUESTS = frozenset({"InitProducerId"})
# Event ids are UUIDv5 in this namespace over the entry's identity, so a replayed entry keeps its id
EVENT_ID_NAMESPACE = uuid.UUID("5f0c7a34-6d1e-4b8e-9a51-2a7d3c4e8b10")

_DECISION = re.compile(
    r"^\[(?P<time>[^\]]+)\] (?P<level>[A-Z]+) Principal = (?P<principal>\S+) is (?P<decision>Allowed|Denied) "
    r"operation = (?P<operation>[A-Z_]+) from host = (?P<host>\S+) on resource = "
    r"(?P<resource_type>[A-Za-z]+):(?P<pattern>[A-Z_]+):(?P<name>.*) for request = (?P<request>\S+) "
    r"with resourceRefCount = (?P<count>\d+) based on rule (?P<rule>.*) \(kafka\.authorizer\.logger\)$"
)
_RESOURCE_TYPES = {"Topic": "topic", "Group": "group", "Cluster": "cluster", "TransactionalId": "transactional_id",
                   "DelegationToken": "delegation_token", "User": "user"}


@dataclass(frozen=True)
class Decision:
    """One authorization decision of the broker."""

    occurred_at: int  # microseconds since the epoch
    principal: str
    allowed: bool
    operation: str  # lower case, e.g. "describe"
    host: str
    resource_type: str  # topic, group, cluster, transactional_id, ...
    pattern: str  # the requested resource's pattern type, e.g. LITERAL
    resource: str
    request: str  # the Kafka API, e.g. Fetch, Metadata, CreateAcls
    rule: str  # what decided: SuperUser, DefaultDeny, MatchingAcl(...)


def parse_decision(line: str) -> Decision | None:
    """The decision logged on ``line``; None for any other line (a stack trace, a log4j status line)."""
    match = _DECISION.match(line.rstrip("\r\n"))
    if match is None:
        return None
    occurred_at = _parse_time(match["time"])
    if occurred_at is None:
        return None
    resource_type = match["resource_type"]
    return Decision(
        occurred_at=occurred_at,
        principal=match["principal"],
        allowed=match["decision"] == "Allowed",
        operation=match["operation"].lower(),
        host=match["host"],
        resource_type=_RESOURCE_TYPES.get(resource_type, resource_type.lower()),
        pattern=match["pattern"],
        resource=match["name"],
        request=match["request"],
        rule=match["rule"],
    )


def _parse_time(text: str) -> int | None:
    try:
        # log4j's default layout has a comma before the milliseconds
        moment = datetime.fromisoformat(text.replace(",", "."))
    except ValueError:
        return None
    # without an offset the broker wrote its local time, which is ours (it runs next to its log)
    seconds = moment.timestamp() if moment.tzinfo is not None else moment.astimezone().timestamp()
    return round(seconds * 1_000_000)


def is_audited(decision: Decision, *, audit_topics: Collection[str], ignored_principals: Collection[str] = (),
               routine_principals: Collection[str] = ()) -> bool:
    """Whether ``decision`` belongs in the audit trail: a decision about an audit topic, an ``auditseal-``
    consumer group or transactional id, or a change of ACLs, credentials or broker configs.

    Left out are only the *routine* decisions (allowed, and one of :data:`ROUTINE_OPERATIONS`) of
    ``routine_principals``: the pipeline's own data plane (producers writing raw, the sealer reading raw,
    the sink reading sealed, the broker replicating, the access auditor writing its own events). They come
    once per fetch or produce request, forever, and sealing them makes the sealer fetch more, a loop.
    Their denials and every other act (DeleteRecords, config changes, topic deletion, fencing a chain's
    transactional id) are kept, as is every decision about anyone else. ``ignored_principals`` are left out
    entirely (none by default: every principal's privileged acts are recorded)."""
    if decision.principal in ignored_principals:
        return False
    if decision.allowed and decision.principal in routine_principals and decision.operation in ROUTINE_OPERATIONS:
        if decision.resource_type != "transactional_id" or decision.request not in FENCING_REQUESTS:
            return False
    if decision.resource_type == "topic":
        return decision.resource in audit_topics
    if decision.resource_type in ("group", "transactional_id"):
        if decision.resource_type == "transactional_id" and decision.allowed and \
                decision.request not in FENCING_REQUESTS and decision.operation in ROUTINE_OPERATIONS:
            return False
        return decision.resource.startswith(AUDITSEAL_NAME_PREFIX)
    if decision.resource_type == "cluster":
        return (not decision.allowed or decision.request in PERMISSION_REQUESTS
                or decision.operation not in ("describe", "describe_configs", "idempotent_write"))
    return False


def entry_event_id(source_id: str, offset: int, line: bytes) -> str:
    """The event id of the log entry ``line`` at byte ``offset`` of the file identified by ``source_id``:
    the same entry always gets the same id (so a replay is recognisable downstream), distinct entries
    never share one, even when their text is identical."""
    digest = hashlib.sha256(line).hexdigest()
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{source_id}/{offset}/{digest}"))


def decision_event(decision: Decision, event_id: str) -> dict[str, Any]:
    """The AuditEvent of one decision: actor = principal, action = ``<resource type>.<operation>``,
    resource = the topic, group or cluster, outcome SUCCESS (allowed) or DENIED, source = the broker."""
    return new_event(
        event_id=event_id,
        occurred_at=decision.occurred_at,
        actor={"id": decision.principal, "type": "SERVICE", "source_ip": decision.host},
        action=f"{decision.resource_type}.{decision.operation}",
        resource={"type": f"kafka.{decision.resource_type}", "id": decision.resource},
        outcome={"status": "SUCCESS"} if decision.allowed else {"status": "DENIED", "reason": decision.rule},
        source_service=BROKER_SERVICE,
        attributes={"host": decision.host, "request_api": decision.request, "resource_pattern": decision.pattern,
                    "rule": decision.rule},
    )
