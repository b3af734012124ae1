"""A schema-specialised, strict decoder for flat Avro records, compiled (Cython) and driven by the schema.

``fastavro.schemaless_reader`` costs a few microseconds per call before it decodes a byte, and
returns a dict the verifier takes apart again. The records the verifier reads most
(``ArchivedRecord``, ``SealedEvent``, ``Rejection``, ``Checkpoint``) are flat: their fields are
only ``string``, ``bytes``, ``int`` and ``long``, which the Avro 1.11 specification ("Binary
encoding") writes as zig-zag varints and length-prefixed bytes, in schema order. For such a schema
:func:`compile_decoder` returns a :class:`pipeline.native.flat_reader.FlatDecoder`, which returns
the field values as a tuple in schema order.

For valid input the values are exactly fastavro's (the unit tests compare them, on real sealed
records and on generated ones). Where fastavro is lenient with damaged input, this decoder is
strict and raises :class:`~pipeline.wire.codec.CorruptBodyError` naming the field and the problem:

- a varint longer than 10 bytes, or one whose value does not fit in 64 bits (fastavro drops the
  high bits): the rule of :mod:`pipeline.wire.varint`, the one varint codec;
- an ``int`` outside the 32-bit range (fastavro returns it);
- a negative length, or a length running past the end (fastavro returns a short value);
- a string that is not UTF-8.

The compiled decoder only finds *that* something is wrong; :func:`decode_fields` (the plain,
readable reference decoder) then finds *what*, so the error message is the same either way.
Schemas with any other field type are not specialised: :func:`compile_decoder` returns None and
the caller keeps fastavro.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipeline.native.flat_reader import FlatDecoder
from pipeline.wire import varint
from pipeline.wire.codec import CorruptBodyError

Decoder = Callable[[bytes, int, int], tuple[tuple[Any, ...], int]]
"""``decode(data, start, end) -> (field values, position after the record)``; the record must lie
in ``data[start:end]`` (it need not fill it: the caller checks what follows)."""

SUPPORTED_TYPES = frozenset({"string", "bytes", "int", "long"})
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def record_fields(parsed_schema: Any) -> tuple[tuple[str, str], ...] | None:
    """((name, type), ...) of a record schema whose fields are all of SUPPORTED_TYPES, else None."""
    if not isinstance(parsed_schema, Mapping) or parsed_schema.get("type") != "record":
        return None
    fields = tuple((field["name"], field["type"]) for field in parsed_schema["fields"])
    if not all(isinstance(kind, str) and kind in SUPPORTED_TYPES for _, kind in fields):
        return None
    return fields


def read_long(data: bytes, position: int, end: int, name: str) -> tuple[int, int]:
    """The zig-zag varint ``long`` at ``position`` (:func:`pipeline.wire.varint.read_long`, strict) and the
    position after it; CorruptBodyError naming the field if damaged."""
    try:
        return varint.read_long(data, position, end)
    except varint.VarintError as exc:
        raise CorruptBodyError(f"field {name}: {exc}") from None


def decode_fields(fields: tuple[tuple[str, str], ...], data: bytes, start: int, end: int) -> tuple[tuple[Any, ...], int]:
    """The reference decoder: field values of one record in ``data[start:end]`` and the position after it.

    Raises CorruptBodyError naming the first damaged field. The compiled decoders return the
    same values and raise the same errors, faster.
    """
    values: list[Any] = []
    position, end = start, min(end, len(data))
    for name, kind in fields:
        value: Any
        value, position = read_long(data, position, end, name)
        if kind == "int":
            if not INT_MIN <= value <= INT_MAX:
                raise CorruptBodyError(f"field {name}: {value} is outside the 32-bit int range")
        elif kind in ("bytes", "string"):
            if value < 0:
                raise CorruptBodyError(f"field {name}: negative length {value}")
            if position + value > end:
                raise CorruptBodyError(f"field {name}: length {value} runs past the end of the record "
                                       f"({end - position} bytes left)")
            raw = data[position:position + value]
            position += value
            if kind == "string":
                try:
                    value = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise CorruptBodyError(f"field {name}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            else:
                value = raw
        values.append(value)
    return tuple(values), position


def compile_decoder(parsed_schema: Any) -> Decoder | None:
    """The compiled decoder of a flat record schema (a ``fastavro.parse_schema`` result).

    None if the schema has a field of a type outside SUPPORTED_TYPES: keep fastavro for it.
    """
    fields = record_fields(parsed_schema)
    if fields is None:
        return None
    decoder: Decoder = FlatDecoder(fields, _checked_reference)
    return decoder


def _checked_reference(fields: tuple[tuple[str, str], ...], data: bytes, start: int,
                       end: int) -> tuple[tuple[Any, ...], int]:
    # The fast path found damage the reference decoder must name; never return a value it did not check.
    values, position = decode_fields(fields, data, start, end)
    if position > end:
        raise CorruptBodyError("the record runs past its end")
    return values, position
