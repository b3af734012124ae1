"""Every kind of invalid event is refused with one error naming the field path and the problem."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from pipeline.errors import AuditSealError
from pipeline.producer.event import complete_event, new_event
from pipeline.wire.validation import InvalidEventError, compile_writer, validate_event

VALID = {
    "event_id": "0b0e7e6c-3f4a-4a8e-9d21-6c1f1f3a2b10",
    "occurred_at": 1735689600123456,
    "actor": {"id": "usr_42", "type": "USER", "source_ip": "203.0.113.7", "user_agent": "curl/8.8.0",
              "session_id": "sess_1"},
    "action": "document.read",
    "resource": {"type": "document", "id": "doc-1"},
    "outcome": {"status": "SUCCESS", "reason": None},
    "source_service": "storage",
    "request_id": "req_1",
    "trace_id": None,
    "attributes": {"region": "eu-west-1"},
}


def changed(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    event = copy.deepcopy(VALID)
    edit(event)
    return event


def test_the_reference_event_is_valid() -> None:
    validate_event(VALID)


CASES = [
    # (description, edit, expected path, expected fragment of the problem)
    ("missing top-level", lambda e: e.pop("action"), "action", "missing required field (expected string)"),
    ("missing nested", lambda e: e["actor"].pop("id"), "actor.id", "missing required field"),
    ("missing record", lambda e: e.pop("outcome"), "outcome", "missing required field (expected Outcome record"),
    ("wrong type", lambda e: e.update(source_service=7), "source_service", "expected string, found int 7"),
    ("null for required", lambda e: e.update(action=None), "action", "expected string, found null"),
    ("wrong type in nullable", lambda e: e["actor"].update(source_ip=10), "actor.source_ip",
     "expected string or null, found int 10"),
    ("bytes for string", lambda e: e["resource"].update(id=b"doc-1"), "resource.id", "expected string, found bytes"),
    ("record not a dict", lambda e: e.update(actor="usr_42"), "actor",
     "expected Actor record (a dict), found str 'usr_42'"),
    ("bad enum symbol", lambda e: e["actor"].update(type="ADMIN"), "actor.type",
     "'ADMIN' is not a symbol of ActorType; allowed: USER, SERVICE, SYSTEM, UNKNOWN"),
    ("lower-case enum symbol", lambda e: e["outcome"].update(status="success"), "outcome.status",
     "allowed: SUCCESS, FAILURE, DENIED, UNKNOWN"),
    ("enum wrong type", lambda e: e["outcome"].update(status=0), "outcome.status",
     "expected a symbol of OutcomeStatus (SUCCESS, FAILURE, DENIED, UNKNOWN), found int 0"),
    ("not a uuid", lambda e: e.update(event_id="evt-123"), "event_id",
     "not a valid UUID: 'evt-123' (expected 8-4-4-4-12 hex digits)"),
    ("uuid without dashes", lambda e: e.update(event_id=uuid.UUID(VALID["event_id"]).hex), "event_id",
     "not a valid UUID"),
    ("uuid wrong type", lambda e: e.update(event_id=12), "event_id", "expected UUID string, found int 12"),
    ("timestamp in seconds", lambda e: e.update(occurred_at=1_735_689_600), "occurred_at",
     "timestamp out of range: 1735689600 microseconds is 1970-01-01T00:28:55.689600Z"),
    ("timestamp in milliseconds", lambda e: e.update(occurred_at=1_735_689_600_123), "occurred_at",
     "timestamp out of range"),
    ("timestamp in nanoseconds", lambda e: e.update(occurred_at=1_735_689_600_123_456_789), "occurred_at",
     "between 2000-01-01 and 2100-01-01"),
    ("timestamp as float", lambda e: e.update(occurred_at=1735689600123456.0), "occurred_at",
     "expected timestamp-micros (microseconds since the epoch as an int, or an aware datetime), found float"),
    ("timestamp as bool", lambda e: e.update(occurred_at=True), "occurred_at", "found bool True"),
    ("timestamp as string", lambda e: e.update(occurred_at="2025-01-01T00:00:00Z"), "occurred_at", "found str"),
    ("naive datetime", lambda e: e.update(occurred_at=datetime(2025, 1, 1)), "occurred_at",
     "naive datetime (no tzinfo)"),
    ("unknown top-level field", lambda e: e.update(sevice="billing"), "sevice",
     "unknown field; AuditEvent has: event_id, occurred_at, actor, action"),
    ("unknown nested field", lambda e: e["outcome"].update(reasons="x"), "outcome.reasons",
     "unknown field; Outcome has: status, reason (did you mean 'reason'?)"),
    ("map value wrong type", lambda e: e["attributes"].update(amount=12), "attributes['amount']",
     "expected string, found int 12"),
    ("map key not a string", lambda e: e["attributes"].update({3: "x"}), "attributes",
     "map keys must be strings, found int 3"),
    ("map not a dict", lambda e: e.update(attributes=["region"]), "attributes",
     "expected map of string (a dict with string keys), found list"),
    ("lone surrogate", lambda e: e.update(action="document.\ud800"), "action", "string is not valid Unicode text"),
]


@pytest.mark.parametrize(("edit", "path", "fragment"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_invalid_event_names_the_field_and_the_problem(
    edit: Callable[[dict[str, Any]], None], path: str, fragment: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        validate_event(changed(edit))
    assert caught.value.path == path
    assert fragment in caught.value.problem
    assert str(caught.value).startswith(f"invalid audit event: {path}: ")


def test_an_event_that_is_not_a_dict() -> None:
    with pytest.raises(InvalidEventError) as caught:
        validate_event([("action", "document.read")])  # type: ignore[arg-type]
    assert caught.value.path == ""
    assert caught.value.problem.startswith("expected AuditEvent record (a dict), found list")


def test_invalid_event_error_is_catchable_as_auditseal_and_value_error() -> None:
    with pytest.raises(AuditSealError):
        validate_event(changed(lambda e: e.pop("action")))
    with pytest.raises(ValueError):
        validate_event(changed(lambda e: e.pop("action")))


def test_the_first_problem_in_schema_order_is_reported() -> None:
    def two_problems(event: dict[str, Any]) -> None:
        event["actor"]["type"] = "ROBOT"
        event["source_service"] = None

    with pytest.raises(InvalidEventError, match=r"actor\.type"):
        validate_event(changed(two_problems))


@pytest.mark.parametrize(
    "edit",
    [
        lambda e: e.update(event_id=uuid.UUID(VALID["event_id"])),
        lambda e: e.update(event_id=VALID["event_id"].upper()),
        lambda e: e.update(occurred_at=datetime(2025, 1, 1, tzinfo=UTC)),
        lambda e: e.update(occurred_at=datetime(2025, 1, 1, 3, tzinfo=timezone(timedelta(hours=3)))),
        lambda e: [e.pop(name) for name in ("request_id", "trace_id", "attributes")],
        lambda e: [e["actor"].pop(name) for name in ("source_ip", "user_agent", "session_id")],
        lambda e: e["outcome"].pop("reason"),
        lambda e: e.update(attributes={}),
        lambda e: e.update(action="dokument.läsa ✓"),  # any Unicode text
    ],
    ids=["uuid-object", "upper-case-uuid", "utc-datetime", "offset-datetime", "no-optional-top-level",
         "no-optional-actor", "no-reason", "empty-attributes", "unicode"],
)
def test_accepted_variations(edit: Callable[[dict[str, Any]], None]) -> None:
    validate_event(changed(edit))


def test_timestamp_range_edges() -> None:
    earliest = (datetime(2000, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1
    )
    latest = (datetime(2100, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1
    )
    validate_event(dict(VALID, occurred_at=earliest))
    validate_event(dict(VALID, occurred_at=latest - 1))
    for outside in (earliest - 1, latest):
        with pytest.raises(InvalidEventError, match="timestamp out of range"):
            validate_event(dict(VALID, occurred_at=outside))


def test_new_event_fills_id_and_time() -> None:
    before = datetime.now(UTC)
    event = new_event(
        actor={"id": "svc-billing-worker", "type": "SERVICE"},
        action="invoice.create",
        resource={"type": "invoice", "id": "inv-1"},
        outcome={"status": "SUCCESS"},
        source_service="billing",
    )
    validate_event(event)
    assert uuid.UUID(event["event_id"]).version == 4
    occurred_at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=event["occurred_at"])
    assert before - timedelta(seconds=1) <= occurred_at <= datetime.now(UTC)
    assert event["attributes"] == {}


def test_new_event_keeps_given_id_and_time() -> None:
    at = datetime(2025, 6, 1, tzinfo=UTC)
    event = new_event(
        actor={"id": "usr_1", "type": "USER"},
        action="document.read",
        resource={"type": "document", "id": "d"},
        outcome={"status": "DENIED", "reason": "policy"},
        source_service="storage",
        event_id=VALID["event_id"],
        occurred_at=at,
        attributes={"k": "v"},
    )
    validate_event(event)
    assert event["event_id"] == VALID["event_id"]
    assert event["occurred_at"] == at


def test_complete_event_does_not_modify_its_argument() -> None:
    partial = {k: v for k, v in VALID.items() if k not in ("event_id", "occurred_at")}
    completed = complete_event(partial)
    assert "event_id" not in partial
    validate_event(completed)


def test_the_checker_is_generic_over_schemas() -> None:
    import fastavro

    write = compile_writer(
        fastavro.parse_schema(
            {
                "type": "record",
                "name": "Batch",
                "fields": [
                    {"name": "sizes", "type": {"type": "array", "items": "int"}},
                    {"name": "digest", "type": {"type": "fixed", "name": "Sha256", "size": 32}},
                    {"name": "ratio", "type": ["null", "double", "string"]},
                    {"name": "sealed", "type": "boolean", "default": False},
                ],
            }
        )
    )
    out = bytearray()
    write(out, {"sizes": [1, 2], "digest": bytes(32), "ratio": 0.5})
    assert len(out) > 32
    for value, path, fragment in [
        ({"sizes": [1, "2"], "digest": bytes(32), "ratio": None}, "sizes[1]", "expected int, found str '2'"),
        ({"sizes": [2**31], "digest": bytes(32), "ratio": None}, "sizes[0]", "does not fit in an Avro int"),
        ({"sizes": [], "digest": bytes(31), "ratio": None}, "digest", "expected exactly 32 bytes, found 31"),
        ({"sizes": [], "digest": bytes(32), "ratio": []}, "ratio", "expected null or double or string, found list"),
        ({"sizes": [], "digest": bytes(32), "ratio": 1, "sealed": 1}, "sealed", "expected boolean, found int 1"),
    ]:
        with pytest.raises(InvalidEventError) as caught:
            write(bytearray(), value)
        assert (caught.value.path, fragment in caught.value.problem) == (path, True), caught.value
