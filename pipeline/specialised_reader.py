"""A schema-specialised, strict decoder for flat Avro records, generated as Python source once per schema.

``fastavro.schemaless_reader`` costs a few microseconds per call before it decodes a byte, and
returns a dict the verifier takes apart again. The records the verifier reads most
(``ArchivedRecord``, ``SealedEvent``, ``Rejection``, ``Checkpoint``) are flat: their fields are
only ``string``, ``bytes``, ``int`` and ``long``, which the Avro 1.11 specification ("Binary
encoding") writes as zig-zag varints and length-prefixed bytes, in schema order. Like
:mod:`pipeline.specialised_writer`, this module turns such a schema into the source of one
straight-line function; it returns the field values as a tuple in schema order.

For valid input the values are exactly fastavro's (the unit tests compare them, on real sealed
records and on generated ones). Where fastavro is lenient with damaged input, this decoder is
strict and raises :class:`~pipeline.codec.CorruptBodyError` naming the field and the problem:

- a varint longer than 10 bytes, or one whose value does not fit in 64 bits (fastavro drops the
  high bits);
- an ``int`` outside the 32-bit range (fastavro returns it);
- a negative length, or a length running past the end (fastavro returns a short value);
- a string that is not UTF-8.

The generated function only finds *that* something is wrong; :func:`decode_fields` (the plain,
readable reference decoder) then finds *what*, so the error message is the same either way.
Schemas with any other field type are not specialised: :func:`compile_decoder` returns None and
the caller keeps fastavro.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipeline.codec import CorruptBodyError

Decoder = Callable[[bytes, int, int], tuple[tuple[Any, ...], int]]
"""``decode(data, start, end) -> (field values, position after the record)``; the record must lie
in ``data[start:end]`` (it need not fill it: the caller checks what follows)."""

SUPPORTED_TYPES = frozenset({"string", "bytes", "int", "long"})
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
_MAX_VARINT_BYTES = 10


class _Damaged(Exception):
    """Raised inside the generated function: the input is damaged; the reference decoder says how."""


def record_fields(parsed_schema: Any) -> tuple[tuple[str, str], ...] | None:
    """((name, type), ...) of a record schema whose fields are all of SUPPORTED_TYPES, else None."""
    if not isinstance(parsed_schema, Mapping) or parsed_schema.get("type") != "record":
        return None
    fields = tuple((field["name"], field["type"]) for field in parsed_schema["fields"])
    if not all(isinstance(kind, str) and kind in SUPPORTED_TYPES for _, kind in fields):
        return None
    return fields


def read_long(data: bytes, position: int, end: int, name: str) -> tuple[int, int]:
    """The zig-zag varint ``long`` at ``position`` and the position after it; CorruptBodyError if damaged."""
    value = shift = 0
    for count in range(_MAX_VARINT_BYTES):
        if position >= end:
            raise CorruptBodyError(f"field {name}: the record ends inside its varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >> 64:
                raise CorruptBodyError(f"field {name}: varint value does not fit in 64 bits")
            return (value >> 1) ^ -(value & 1), position
        shift += 7
    raise CorruptBodyError(f"field {name}: varint longer than {_MAX_VARINT_BYTES} bytes")


def decode_fields(fields: tuple[tuple[str, str], ...], data: bytes, start: int, end: int) -> tuple[tuple[Any, ...], int]:
    """The reference decoder: field values of one record in ``data[start:end]`` and the position after it.

    Raises CorruptBodyError naming the first damaged field. The generated decoders return the
    same values and raise the same errors, faster.
    """
    values: list[Any] = []
    position, end = start, min(end, len(data))
    for name, kind in fields:
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


_HIGH_BYTES: dict[bytes, int] = {}
"""Bytes 4 to 8 of 8-byte varints seen -> their value bits 21 to 55. Timestamps in microseconds
(2**44 to 2**49 after zig-zag) take exactly 8 bytes, and their high bytes change once every few
seconds of event time, so a run of records reuses a handful of entries."""
_HIGH_BYTES_LIMIT = 4096


def _long_tail(data: bytes, position: int) -> tuple[int, int]:
    # the varint at ``position`` whose first three bytes all have the continuation bit
    # (the generated code decodes shorter ones inline); raises IndexError or _Damaged if damaged
    value = shift = 0
    start = position
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 63:
            raise _Damaged
    if value >> 64:
        raise _Damaged
    if position - start == 8:
        if len(_HIGH_BYTES) >= _HIGH_BYTES_LIMIT:
            _HIGH_BYTES.clear()
        _HIGH_BYTES[data[start + 3:position]] = value & ~0x1FFFFF
    return (value >> 1) ^ -(value & 1), position


def _varint_lines(target: str) -> list[str]:
    # Statements that decode the zig-zag varint at p into ``target`` and advance p. One to three
    # bytes inline; eight bytes whose high five were seen before from _HIGH_BYTES (a slice match
    # there proves bytes 4 to 7 continue and byte 8 ends the varint); anything else in _long_tail.
    # Past the end of data: IndexError; the caller turns it into the reference decoder's error.
    return [
        "        b = data[p]",
        "        if b < 128:",
        "            p += 1",
        f"            {target} = (b >> 1) ^ -(b & 1)",
        "        else:",
        "            c = data[p + 1]",
        "            if c < 128:",
        "                u = (b & 127) | c << 7",
        "                p += 2",
        "            else:",
        "                d = data[p + 2]",
        "                if d < 128:",
        "                    u = (b & 127) | (c & 127) << 7 | d << 14",
        "                    p += 3",
        "                else:",
        "                    h = _high.get(data[p + 3:p + 8])",
        "                    if h is None:",
        "                        u = -1",
        f"                        {target}, p = _long_tail(data, p)",
        "                    else:",
        "                        u = (b & 127) | (c & 127) << 7 | (d & 127) << 14 | h",
        "                        p += 8",
        f"            if u >= 0: {target} = (u >> 1) ^ -(u & 1)",
    ]


def decoder_source(fields: tuple[tuple[str, str], ...]) -> str:
    """The Python source of ``decode(data, start, end)`` for these (name, type) fields."""
    lines = ["def decode(data, start, end):", "    p = start", "    try:"]
    names = []
    for index, (name, kind) in enumerate(fields):
        value = f"v{index}"
        names.append(value)
        lines.append(f"        # {name}: {kind}")
        lines += _varint_lines(value if kind in ("int", "long") else "n")
        if kind == "int":
            lines.append(f"        if not {INT_MIN} <= {value} <= {INT_MAX}: raise _Damaged")
        elif kind in ("bytes", "string"):
            lines += [
                "        e = p + n",
                "        if n < 0 or e > end: raise _Damaged",
                f"        {value} = data[p:e]" + (".decode()" if kind == "string" else ""),
                "        p = e",
            ]
    lines += [
        "        if p > end: raise _Damaged",
        "    except (_Damaged, IndexError, UnicodeDecodeError):",
        "        return _reference(_fields, data, start, end)",
        f"    return ({', '.join(names)}{',' if len(names) == 1 else ''}), p",
    ]
    return "\n".join(lines) + "\n"


def compile_decoder(parsed_schema: Any) -> Decoder | None:
    """Generate and compile the decoder of a flat record schema (a ``fastavro.parse_schema`` result).

    None if the schema has a field of a type outside SUPPORTED_TYPES: keep fastavro for it.
    """
    fields = record_fields(parsed_schema)
    if fields is None:
        return None
    namespace: dict[str, Any] = {"_Damaged": _Damaged, "_long_tail": _long_tail, "_high": _HIGH_BYTES,
                                 "_reference": _checked_reference, "_fields": fields}
    code = compile(decoder_source(fields), f"<specialised reader for {parsed_schema.get('name', 'record')}>", "exec")
    exec(code, namespace)  # noqa: S102 - our own generated source, from a schema in schemas/
    decode: Decoder = namespace["decode"]
    decode.__doc__ = "Field values (schema order) of the record in data[start:end] and the position after it."
    return decode


def _checked_reference(fields: tuple[tuple[str, str], ...], data: bytes, start: int,
                       end: int) -> tuple[tuple[Any, ...], int]:
    # The fast path found damage the reference decoder must name; never return a value it did not check.
    values, position = decode_fields(fields, data, start, end)
    if position > end:
        raise CorruptBodyError("the record runs past its end")
    return values, position
