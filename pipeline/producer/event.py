"""Building AuditEvent dicts: the fields a producer should not have to invent itself.

An event is a plain dict shaped like ``schemas/audit_event.v<N>.avsc``; validation happens when
it is emitted (or with :func:`pipeline.wire.validation.validate_event`), not here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any


def now_micros() -> int:
    """The current time in microseconds since the Unix epoch (the ``occurred_at`` unit)."""
    return time.time_ns() // 1000


def complete_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` with ``event_id`` (a random UUID) and ``occurred_at`` (now) filled in if absent."""
    completed = dict(event)
    if completed.get("event_id") is None:
        completed["event_id"] = str(uuid.uuid4())
    if completed.get("occurred_at") is None:
        completed["occurred_at"] = now_micros()
    return completed


def new_event(
    *,
    actor: Mapping[str, Any],
    action: str,
    resource: Mapping[str, Any],
    outcome: Mapping[str, Any],
    source_service: str,
    request_id: str | None = None,
    trace_id: str | None = None,
    attributes: Mapping[str, str] | None = None,
    event_id: str | uuid.UUID | None = None,
    occurred_at: int | datetime | None = None,
) -> dict[str, Any]:
    """Build an AuditEvent dict; ``event_id`` defaults to a random UUID and ``occurred_at`` to now.

    ``actor`` is ``{"id", "type", "source_ip"?, "user_agent"?, "session_id"?}``, ``resource``
    ``{"type", "id"}``, ``outcome`` ``{"status", "reason"?}``; ``occurred_at`` is microseconds
    since the epoch or an aware ``datetime``. Not validated here: ``AuditProducer.emit`` does it.
    """
    return complete_event(
        {
            "event_id": event_id,
            "occurred_at": occurred_at,
            "actor": dict(actor),
            "action": action,
            "resource": dict(resource),
            "outcome": dict(outcome),
            "source_service": source_service,
            "request_id": request_id,
            "trace_id": trace_id,
            "attributes": dict(attributes or {}),
        }
    )
