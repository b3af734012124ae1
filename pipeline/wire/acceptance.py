"""The sealer's acceptance decision for a raw record: the reference path, and its compiled fast path.

The sealer asks one question of every raw record: does it decode as an event of a known schema
version (:meth:`pipeline.wire.codec.EventCodec.decode`, fastavro) *and* does the decoded event pass
every rule of :mod:`pipeline.wire.validation`? :func:`refusal` answers it that way, the reference
path, which also words the reason a rejection records. Answered that way it costs ~40 µs per
record: fastavro builds a dict of ``datetime``, ``UUID`` and nested dicts, and the checked writer
walks it again.

:func:`compile_checker` gives the fast path in front of it: :func:`checker_program` turns the
newest schema into a small opcode program that :class:`pipeline.native.sealing.Checker` runs over
the Avro binary encoding (Avro 1.11 specification, "Binary encoding") once, checking each field
while reading it, building no values. It can only say "certainly valid", never "invalid":

- it returns True only for bytes in the plain shape a conforming writer produces: the newest
  schema's header, varints within the one rule of :mod:`pipeline.wire.varint` (at most 10 bytes,
  64 bits: what fastavro decodes to the value read), non-negative lengths inside the record,
  strictly valid UTF-8 (any content for bytes), enum and union indexes in range and of one byte, UUIDs in the
  8-4-4-4-12 hex form, timestamps in the validation range, map and array blocks with positive
  counts, and no trailing bytes. For such bytes fastavro decodes exactly the values the check
  read, and :mod:`pipeline.wire.validation` accepts them;
- everything else returns False (an older schema version, a negative block count, a UUID in
  another form that ``uuid.UUID`` might still accept, and every damaged record), and the sealer
  asks :func:`refusal`, which gives the decision and the one precise error message.

So the accept/reject decision and the reason are always the reference path's; the differential
tests (tests/differential/test_acceptance_check.py) hold the check to it on generated events and
on mutated, truncated and garbled bytes. Schemas with a node the checker does not handle (fixed, floats, booleans, unions other than nullable ones, named references, enums of more than 64
symbols) get no checker: :func:`compile_checker` returns None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pipeline.native.sealing as native
from pipeline.wire.codec import DecodeError, EventCodec
from pipeline.wire.validation import InvalidEventError, _timestamp_bounds, validate_event

Checker = Callable[[bytes], bool]
"""``check(data) -> True`` if ``data`` certainly decodes and validates; False: ask :func:`refusal`."""

_MAX_ONE_BYTE_ENUM = 64  # zig-zag indexes 0..63 are one varint byte


def refusal(codec: EventCodec, value: bytes | None) -> str | None:
    """The reference decision on one raw record: None if it decodes with ``codec`` and passes
    :func:`~pipeline.wire.validation.validate_event`, else the reason, worded for the rejection record."""
    if value is None:
        return "empty record value (a tombstone): an audit event was expected"
    try:
        validate_event(codec.decode(value))
    except (DecodeError, InvalidEventError) as exc:
        return str(exc)
    return None


class Unsupported(Exception):
    """The schema has a node the checker does not handle; keep the reference path for it."""


def checker_program(parsed_schema: Any) -> tuple[int, ...]:
    """The program :class:`pipeline.native.sealing.Checker` runs for ``parsed_schema``: one walk of
    the Avro binary encoding in schema order, as opcodes and operands (module docstring).

    Raises Unsupported for a node the checker does not handle.
    """
    program: list[int] = []

    def node(schema: Any) -> None:
        if isinstance(schema, list):
            if len(schema) != 2 or "null" not in schema:
                raise Unsupported(f"union {schema} is not a nullable type")
            value_index = 1 - schema.index("null")
            at = len(program)
            program.extend((native.OP_NULLABLE, value_index, 0))
            node(schema[value_index])
            program[at + 2] = len(program) - at - 3
            return
        if isinstance(schema, str):
            primitive(schema)
            return
        kind, logical = schema["type"], schema.get("logicalType")
        if logical is not None:
            if kind == "string" and logical == "uuid":
                program.append(native.OP_UUID)
            elif kind == "long" and logical in ("timestamp-micros", "timestamp-millis"):
                program.extend((native.OP_RANGE, *_timestamp_bounds(logical)))
            else:
                raise Unsupported(f"logical type {logical!r} on {kind!r} is not checked")
        elif kind == "record":
            for avro_field in schema["fields"]:
                node(avro_field["type"])
        elif kind == "enum":
            if len(schema["symbols"]) > _MAX_ONE_BYTE_ENUM:
                raise Unsupported(f"enum {schema['name']} has more than {_MAX_ONE_BYTE_ENUM} symbols")
            program.extend((native.OP_ENUM, len(schema["symbols"])))
        elif kind in ("map", "array"):
            at = len(program)
            program.extend((native.OP_REPEAT, int(kind == "map"), 0))
            node(schema["values" if kind == "map" else "items"])
            program[at + 2] = len(program) - at - 3
        else:
            primitive(kind)

    def primitive(kind: str) -> None:
        if kind in ("string", "int", "long", "bytes"):
            program.append({"string": native.OP_STRING, "int": native.OP_INT, "long": native.OP_LONG,
                            "bytes": native.OP_BYTES}[kind])
        elif kind != "null":
            raise Unsupported(f"{kind!r} nodes are not checked")

    node(parsed_schema)
    return tuple(program)


def compile_checker(parsed_schema: Any, header: bytes) -> Checker | None:
    """The compiled ``check(data)`` for records ``header`` + Avro body of ``parsed_schema``.

    ``check`` returns True only if the bytes decode with this schema and the values pass
    :mod:`pipeline.wire.validation`; False means "ask the reference path". None if the schema has a
    node the checker does not handle. Its reference is :func:`refusal`, which the sealer
    runs for every record the check is not sure of (the differential tests hold the two together).
    """
    try:
        checker: Callable[[bytes], bool] = native.Checker(checker_program(parsed_schema), bytes(header))
        return checker
    except Unsupported:
        return None
