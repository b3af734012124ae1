"""What ``auditseal emit`` sends: JSON lines from stdin, one event from options, or synthetic events.

A bad line is reported with its line number and reason and the next lines are still sent:
one malformed event must not stop a batch import, and must not pass unnoticed either.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from pipeline.producer.event import complete_event, new_event
from pipeline.wire.validation import InvalidEventError

_JSON_TYPE_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
                    type(None): "null"}


class EventSink(Protocol):
    """Anything with ``AuditProducer.emit``'s signature (an AuditProducer in production)."""

    def emit(self, event: Mapping[str, Any], *, key: str | bytes | None = None) -> object:
        """Validate and send one event; raise InvalidEventError if it is invalid."""


def event_from_json(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a decoded JSON object into an event: fill ``event_id``/``occurred_at`` when absent,
    and accept ``occurred_at`` as an ISO-8601 string with an offset (``2025-01-31T12:00:00Z``).

    Raises InvalidEventError if ``occurred_at`` is a string that is not such a timestamp.
    """
    event = complete_event(obj)
    occurred_at = event["occurred_at"]
    if isinstance(occurred_at, str):
        try:
            parsed = datetime.fromisoformat(occurred_at)
        except ValueError:
            raise InvalidEventError(
                "occurred_at", f"not an ISO-8601 timestamp: {occurred_at[:60]!r}"
            ) from None
        if parsed.tzinfo is None:
            raise InvalidEventError(
                "occurred_at", f"timestamp {occurred_at!r} has no UTC offset; add Z or +HH:MM"
            )
        event["occurred_at"] = parsed
    return event


def emit_lines(lines: Iterable[str], producer: EventSink) -> tuple[int, list[tuple[int, str]]]:
    """Emit one event per non-blank JSON line; return (events handed to the producer, [(line number, reason)]).

    Line numbers start at 1. Delivery is not awaited: call ``producer.flush()`` afterwards, which
    raises if any handed-over event was not delivered. Errors other than an invalid line (the
    producer stopped, its queue stayed full) propagate and end the run.
    """
    sent = 0
    invalid: list[tuple[int, str]] = []
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            invalid.append((line_number, f"not valid JSON: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(obj, dict):
            invalid.append((line_number, f"expected a JSON object, found {_JSON_TYPE_NAMES.get(type(obj), 'a value')}"))
            continue
        try:
            producer.emit(event_from_json(obj))
        except InvalidEventError as exc:
            invalid.append((line_number, f"{exc.path}: {exc.problem}" if exc.path else exc.problem))
            continue
        sent += 1
    return sent, invalid


def attribute(text: str) -> tuple[str, str]:
    """Parse one ``--attr key=value`` (the value may contain ``=``); ValueError without a ``=`` or a key."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise ValueError(f"expected key=value, found {text!r}")
    return key, value


def event_from_options(
    *,
    actor_id: str,
    actor_type: str,
    action: str,
    resource_type: str,
    resource_id: str,
    outcome: str,
    reason: str | None,
    source_service: str,
    attributes: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    """One event from ``auditseal emit``'s options, with a fresh ``event_id`` and ``occurred_at`` (now).

    Not validated here: the producer does it, so a bad ``--actor-type`` gets the usual message.
    """
    return new_event(
        actor={"id": actor_id, "type": actor_type},
        action=action,
        resource={"type": resource_type, "id": resource_id},
        outcome={"status": outcome, "reason": reason},
        source_service=source_service,
        attributes=dict(attributes),
    )
