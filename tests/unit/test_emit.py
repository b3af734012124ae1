"""``emit_lines``: JSON lines in, valid events sent, every bad line reported with its number."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.producer.emit import emit_lines
from pipeline.wire.codec import default_codec


class RecordingSink:
    """Validates and encodes like AuditProducer.emit, and keeps what it would have sent."""

    def __init__(self) -> None:
        self.sent: list[Mapping[str, Any]] = []

    def emit(self, event: Mapping[str, Any], *, key: str | bytes | None = None) -> None:
        default_codec().encode(event)
        self.sent.append(event)


LINE = {
    "actor": {"id": "usr_42", "type": "USER", "source_ip": "203.0.113.7"},
    "action": "document.read",
    "resource": {"type": "document", "id": "doc-1"},
    "outcome": {"status": "SUCCESS"},
    "source_service": "storage",
}


def line(**changes: Any) -> str:
    return json.dumps({**LINE, **changes})


def test_valid_lines_are_sent_and_invalid_ones_reported() -> None:
    sink = RecordingSink()
    lines = [
        line(),
        "",
        "{not json",
        line(outcome={"status": "MAYBE"}),
        "[1, 2]",
        line(event_id="0b0e7e6c-3f4a-4a8e-9d21-6c1f1f3a2b10", occurred_at="2025-01-31T12:00:00Z"),
        line(occurred_at="2025-01-31T12:00:00"),
        line(occurred_at="yesterday"),
        line(colour="blue"),
        "   \n",
        line(occurred_at=1735689600123456),
    ]
    sent, invalid = emit_lines(lines, sink)
    assert sent == 3 == len(sink.sent)
    assert [number for number, _ in invalid] == [3, 4, 5, 7, 8, 9]
    reasons = dict(invalid)
    assert reasons[3].startswith("not valid JSON: ")
    assert reasons[4] == "outcome.status: 'MAYBE' is not a symbol of OutcomeStatus; allowed: SUCCESS, FAILURE, DENIED, UNKNOWN"
    assert reasons[5] == "expected a JSON object, found an array"
    assert reasons[7] == "occurred_at: timestamp '2025-01-31T12:00:00' has no UTC offset; add Z or +HH:MM"
    assert reasons[8] == "occurred_at: not an ISO-8601 timestamp: 'yesterday'"
    assert reasons[9].startswith("colour: unknown field")


def test_missing_id_and_time_are_filled_and_given_ones_kept() -> None:
    sink = RecordingSink()
    emit_lines([line(), line(event_id="0b0e7e6c-3f4a-4a8e-9d21-6c1f1f3a2b10", occurred_at="2025-01-31T13:00:00+01:00")], sink)
    generated, given = sink.sent
    assert uuid.UUID(generated["event_id"]).version == 4
    assert isinstance(generated["occurred_at"], int)
    assert given["event_id"] == "0b0e7e6c-3f4a-4a8e-9d21-6c1f1f3a2b10"
    assert given["occurred_at"] == datetime(2025, 1, 31, 12, tzinfo=UTC)


def test_producer_failures_other_than_invalid_events_propagate() -> None:
    class StoppedSink:
        def emit(self, event: Mapping[str, Any], *, key: str | bytes | None = None) -> None:
            raise RuntimeError("producer stopped")

    with pytest.raises(RuntimeError, match="producer stopped"):
        emit_lines([line()], StoppedSink())
