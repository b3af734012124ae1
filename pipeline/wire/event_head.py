"""The leading fields of an encoded AuditEvent, read without decoding the rest (pure, no I/O).

A timeline query and the archive's query index need, for each event, only who did what to which
resource, when, and how it ended. Every version of ``schemas/audit_event.v*.avsc`` starts with the
same fields in the same order (Avro 1.11, "Binary encoding": fields in schema order, strings as a
zig-zag length and UTF-8 bytes, enums and union branches as zig-zag ints)::

    event_id string, occurred_at long,
    actor {id string, type enum, source_ip [null,string], user_agent [null,string], session_id [null,string]},
    action string, resource {type string, id string}, outcome {status enum, ...}

:func:`read_event_head` reads exactly those, and :func:`check_layout` proves at first use that every
schema version of the catalog still has that prefix, so a schema change that moves a field is a
ConfigError, never a misread. The unit tests compare the result with the codec's full decode.
The reading itself is compiled (:mod:`pipeline.native.event_head`); the readable reference below
(:func:`read_event_head_reference`) is what names the field of damaged bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pipeline.errors import ConfigError
from pipeline.native.event_head import read_head as _read_head
from pipeline.wire.catalog import AUDIT_EVENT, default_catalog
from pipeline.wire.codec import HEADER_SIZE, MARKER, CorruptBodyError
from pipeline.wire.varint import VarintError, read_long

ACTOR_TYPES = ("USER", "SERVICE", "SYSTEM", "UNKNOWN")
OUTCOME_STATUSES = ("SUCCESS", "FAILURE", "DENIED", "UNKNOWN")

# the prefix every AuditEvent version must have: (field path, Avro type) in schema order
_LAYOUT = (
    ("event_id", "string"), ("occurred_at", "long"),
    ("actor.id", "string"), ("actor.type", "enum"), ("actor.source_ip", "nullable string"),
    ("actor.user_agent", "nullable string"), ("actor.session_id", "nullable string"),
    ("action", "string"), ("resource.type", "string"), ("resource.id", "string"), ("outcome.status", "enum"),
)


@dataclass(frozen=True)
class EventHead:
    """Who did what to which resource, when, and how it ended: the fields a timeline filters on."""

    event_id: str
    occurred_at_micros: int
    actor_id: str
    actor_type: str
    action: str
    resource_type: str
    resource_id: str
    outcome: str


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        return "string" if kind == "string" else str(kind)
    if isinstance(avro_type, list) and len(avro_type) == 2 and avro_type[0] == "null" and avro_type[1] == "string":
        return "nullable string"
    return str(avro_type)


def _flatten(fields: list[dict[str, Any]], prefix: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for item in fields:
        avro_type = item["type"]
        if isinstance(avro_type, dict) and avro_type.get("type") == "record":
            out.extend(_flatten(avro_type["fields"], f"{prefix}{item['name']}."))
        else:
            out.append((f"{prefix}{item['name']}", _type_name(avro_type)))
    return out


@lru_cache(maxsize=1)
def check_layout() -> frozenset[bytes]:
    """The single-object headers of every AuditEvent version whose leading fields are ``_LAYOUT``;
    ConfigError naming the first version that differs (this module must then follow the schema)."""
    headers = set()
    for version in default_catalog().versions(AUDIT_EVENT):
        flat = _flatten(version.parsed["fields"], "")
        found = tuple((name, "string" if kind == "string" else kind) for name, kind in flat[:len(_LAYOUT)])
        if found != _LAYOUT:
            raise ConfigError(f"{version.name}: leading fields {found} are not those pipeline/wire/event_head.py "
                              f"reads {_LAYOUT}; update it with the schema")
        headers.add(MARKER + version.fingerprint)
    return frozenset(headers)


def _string(data: bytes, position: int, end: int, name: str) -> tuple[str, int]:
    length, position = read_long(data, position, end)
    stop = position + length
    if length < 0 or stop > end:
        raise CorruptBodyError(f"AuditEvent.{name}: length {length} runs past the end of the record")
    try:
        return data[position:stop].decode("utf-8"), stop
    except UnicodeDecodeError:
        raise CorruptBodyError(f"AuditEvent.{name}: not UTF-8") from None


def _enum(data: bytes, position: int, end: int, symbols: tuple[str, ...], name: str) -> tuple[str, int]:
    index, position = read_long(data, position, end)
    if not 0 <= index < len(symbols):
        raise CorruptBodyError(f"AuditEvent.{name}: enum index {index} out of range")
    return symbols[index], position


def _skip_nullable_string(data: bytes, position: int, end: int, name: str) -> int:
    branch, position = read_long(data, position, end)
    if branch == 0:
        return position
    if branch != 1:
        raise CorruptBodyError(f"AuditEvent.{name}: union branch {branch}, expected 0 or 1")
    return _string(data, position, end, name)[1]


def read_event_head(value: bytes) -> EventHead:
    """The leading fields of AuditEvent single-object bytes (any catalog version); CorruptBodyError
    naming the field if the bytes are damaged or not an AuditEvent of this catalog."""
    if value[:HEADER_SIZE] in check_layout():
        found = _read_head(bytes(value), HEADER_SIZE, len(ACTOR_TYPES), len(OUTCOME_STATUSES))
        if found is not None:
            event_id, occurred_at, actor_id, actor_type, action, resource_type, resource_id, outcome = found
            return EventHead(event_id, occurred_at, actor_id, ACTOR_TYPES[actor_type], action, resource_type,
                             resource_id, OUTCOME_STATUSES[outcome])
    return read_event_head_reference(value)


def read_event_index_fields(value: bytes) -> tuple[int, str, str]:
    """(occurred_at, actor.id, resource.id) of AuditEvent bytes: what the archive's query index holds, read by the
    compiled reader without building an EventHead (the sink reads every event); CorruptBodyError as
    :func:`read_event_head`."""
    if value[:HEADER_SIZE] in check_layout():
        found = _read_head(bytes(value), HEADER_SIZE, len(ACTOR_TYPES), len(OUTCOME_STATUSES))
        if found is not None:
            return found[1], found[2], found[6]
    head = read_event_head_reference(value)
    return head.occurred_at_micros, head.actor_id, head.resource_id


def read_event_head_reference(value: bytes) -> EventHead:
    """:func:`read_event_head`, in plain Python: the reference the compiled reader is tested against, and
    what words the error for damaged bytes."""
    if bytes(value[:HEADER_SIZE]) not in check_layout():
        raise CorruptBodyError(f"not an AuditEvent of this catalog: header {bytes(value[:HEADER_SIZE]).hex()}")
    end = len(value)
    try:
        event_id, position = _string(value, HEADER_SIZE, end, "event_id")
        occurred_at, position = read_long(value, position, end)
        actor_id, position = _string(value, position, end, "actor.id")
        actor_type, position = _enum(value, position, end, ACTOR_TYPES, "actor.type")
        for name in ("source_ip", "user_agent", "session_id"):
            position = _skip_nullable_string(value, position, end, f"actor.{name}")
        action, position = _string(value, position, end, "action")
        resource_type, position = _string(value, position, end, "resource.type")
        resource_id, position = _string(value, position, end, "resource.id")
        outcome, position = _enum(value, position, end, OUTCOME_STATUSES, "outcome.status")
    except VarintError as exc:
        raise CorruptBodyError(f"AuditEvent: {exc}") from None
    return EventHead(event_id, occurred_at, actor_id, actor_type, action, resource_type, resource_id, outcome)
