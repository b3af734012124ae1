"""A schema-specialised acceptance check for single-object encoded records, generated as Python source.

The sealer asks one question of every raw record: does it decode as an event of a known schema
version (:meth:`pipeline.wire.codec.EventCodec.decode`, fastavro) *and* does the decoded event pass
every rule of :mod:`pipeline.wire.validation`? Answered that way it costs ~40 µs per record: fastavro
builds a dict of ``datetime``, ``UUID`` and nested dicts, and the checked writer walks it again.
Like :mod:`pipeline.wire.specialised_writer`, this module turns the newest schema into the source of
one straight-line function that walks the Avro binary encoding (Avro 1.11 specification, "Binary
encoding") once and checks each field while reading it, building no values.

The generated function is a fast path that can only say "certainly valid", never "invalid":

- it returns True only for bytes in the plain shape a conforming writer produces: the newest
  schema's header, varints of at most 9 bytes, non-negative lengths inside the record, strictly
  valid UTF-8, enum and union indexes in range, UUIDs in the 8-4-4-4-12 hex form, timestamps in
  the validation range, map and array blocks with positive counts, and no trailing bytes. For
  such bytes fastavro decodes exactly the values the check read, and :mod:`pipeline.wire.validation`
  accepts them;
- everything else returns False (an older schema version, a negative block count, a UUID in
  another form that ``uuid.UUID`` might still accept, and every damaged record), and the caller
  asks the reference path, which gives the decision and the one precise error message.

So the accept/reject decision and the reason are always the reference path's; the unit tests
check it on generated events and on mutated, truncated and garbled bytes. Schemas with a node the
generator does not handle (bytes, fixed, floats, booleans, unions other than nullable ones, named
references, enums of more than 64 symbols) get no checker: :func:`compile_checker` returns None.
Read the generated source with :func:`checker_source`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.native import sealing as native
from pipeline.wire.validation import _INT32, _INT64, _UUID_TEXT, _timestamp_bounds

Checker = Callable[[bytes], bool]
"""``check(data) -> True`` if ``data`` certainly decodes and validates; False: ask the reference path."""

_UUID_BYTES = re.compile(_UUID_TEXT.__self__.pattern.encode("ascii")).fullmatch  # type: ignore[attr-defined]
_MAX_VARINT_BYTES = 9  # 63 bits: no reader truncates or wraps a varint this short
_MAX_ONE_BYTE_ENUM = 64  # zig-zag indexes 0..63 are one varint byte


class Unsupported(Exception):
    """The schema has a node the generator does not check; keep the reference path for it."""


class _NotSure(Exception):
    """Raised inside the generated function: the bytes are unusual or damaged; ask the reference path."""


def _varint(data: bytes, position: int) -> tuple[int, int]:
    # The raw (not yet zig-zag decoded) value of the varint at ``position``, of 2 to 9 bytes
    # (the generated code reads 1-byte ones inline), and the position after it.
    value = 0
    for shift in range(0, 7 * _MAX_VARINT_BYTES, 7):
        byte = data[position]  # IndexError: the record ends inside the varint
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
    raise _NotSure


class _Generator:
    """Emits the body of ``check(data)``; each ``node`` call reads one schema node at position ``p``.

    With ``decode_strings`` every string is decoded as UTF-8 where it is read. Without, strings
    are skipped and ``hi`` counts the bytes >= 0x80 that are not string content (varint bytes
    with more to follow); the caller compares it with all such bytes of the record, which proves
    every string ASCII (so valid UTF-8) in one C-speed pass.
    """

    def __init__(self, decode_strings: bool) -> None:
        self.decode_strings = decode_strings
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {"_varint": _varint, "_uuid": _UUID_BYTES, "_NotSure": _NotSure,
                                          "_from_bytes": int.from_bytes}
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def count_high(self, indent: int, expression: str) -> None:
        if not self.decode_strings:
            self.emit(indent, f"hi += {expression}")

    def unsigned(self, target: str, indent: int) -> None:
        """Read the varint at ``p`` into ``target`` without zig-zag decoding; ``b`` keeps its first byte."""
        self.emit(indent, "b = data[p]")
        self.emit(indent, f"if b < 128: {target} = b; p += 1")
        self.emit(indent, "else:")
        count_two, count_more = ("", "") if self.decode_strings else ("; hi += 1", "; hi += q - p - 1")
        self.emit(indent + 1, "c = data[p + 1]")
        self.emit(indent + 1, f"if c < 128: {target} = (b & 127) | c << 7; p += 2{count_two}")
        self.emit(indent + 1, f"else: {target}, q = _varint(data, p){count_more}; p = q")

    def length(self, target: str, indent: int) -> None:
        """Read a length or block count into ``target``; a negative one is not the plain shape."""
        self.unsigned(target, indent)
        # The zig-zag sign is the lowest bit, in the first byte.
        self.emit(indent, "if b & 1: raise _NotSure")
        self.emit(indent, f"{target} >>= 1")

    def node(self, schema: Any, indent: int) -> None:
        """Emit statements reading one value of ``schema`` at ``p`` and checking it."""
        if isinstance(schema, list):
            self.union(schema, indent)
            return
        if isinstance(schema, str):
            self.primitive(schema, indent)
            return
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical is not None:
            self.logical(kind, logical, indent)
        elif kind == "record":
            for avro_field in schema["fields"]:
                self.emit(indent, f"# {schema['name'].rsplit('.', 1)[-1]}.{avro_field['name']}")
                self.node(avro_field["type"], indent)
        elif kind == "enum":
            count = len(schema["symbols"])
            if count > _MAX_ONE_BYTE_ENUM:
                raise Unsupported(f"enum {schema['name']} has more than {_MAX_ONE_BYTE_ENUM} symbols")
            self.emit(indent, "b = data[p]; p += 1")
            self.emit(indent, f"if b & 1 or b >= {2 * count}: raise _NotSure")
        elif kind in ("map", "array"):
            self.repeated(schema, indent)
        else:
            self.primitive(kind, indent)

    def primitive(self, kind: str, indent: int) -> None:
        if kind == "string":
            n = self.name("n")
            self.length(n, indent)
            # A length past the end leaves p > end: every node reads data[p] first (IndexError),
            # and the walk ends with p == end or fails; no check needed here.
            if self.decode_strings:
                self.emit(indent, f"e = p + {n}")
                self.emit(indent, "data[p:e].decode(); p = e")  # UnicodeDecodeError: not UTF-8
            else:
                self.emit(indent, f"p += {n}")
        elif kind in ("int", "long"):
            low, high = _INT32 if kind == "int" else _INT64
            u = self.name("u")
            self.unsigned(u, indent)
            if kind == "int":
                self.emit(indent, f"if not {low} <= ({u} >> 1) ^ -({u} & 1) < {high}: raise _NotSure")
        elif kind == "null":
            pass
        else:
            raise Unsupported(f"{kind!r} nodes are not checked by the generated code")

    def logical(self, kind: str, logical: str, indent: int) -> None:
        if kind == "string" and logical == "uuid":
            # The 36-character text form only: uuid.UUID, which fastavro applies, accepts more
            # forms (braces, urn:uuid:, no hyphens); those take the reference path.
            self.emit(indent, "if data[p] != 72: raise _NotSure")  # 36, zig-zag encoded
            self.emit(indent, "e = p + 37")
            self.emit(indent, "if _uuid(data, p + 1, e) is None: raise _NotSure")
            self.emit(indent, "p = e")
        elif kind == "long" and logical in ("timestamp-micros", "timestamp-millis"):
            self.timestamp(*_timestamp_bounds(logical), indent)
        else:
            raise Unsupported(f"logical type {logical!r} on {kind!r} is not checked by the generated code")

    def timestamp(self, low: int, high: int, indent: int) -> None:
        fixed = _fixed_length_range(low, high)
        general = indent
        if fixed is not None:
            # Every in-range value has a varint of the same length; read as a little-endian
            # integer, such varints compare like the values they encode (the last byte holds the
            # highest bits), so one comparison checks the range. Anything else: the general read.
            size, low_word, high_word, shape_mask, shape = fixed
            x = self.name("x")
            self.emit(indent, f"{x} = _from_bytes(data[p:p + {size}], 'little')")
            self.emit(indent, f"if p + {size} <= end and {x} & {shape_mask} == {shape} "
                              f"and {low_word} <= {x} <= {high_word} and not {x} & 1:")
            self.emit(indent + 1, f"p += {size}")
            self.count_high(indent + 1, str(size - 1))
            self.emit(indent, "else:")
            general = indent + 1
        u = self.name("u")
        self.unsigned(u, general)
        self.emit(general, f"if not {low} <= ({u} >> 1) ^ -({u} & 1) < {high}: raise _NotSure")

    def repeated(self, schema: Mapping[str, Any], indent: int) -> None:
        count = self.name("count")
        self.emit(indent, "while True:")
        self.length(count, indent + 1)
        self.emit(indent + 1, f"if not {count}: break")
        self.emit(indent + 1, f"for _ in range({count}):")
        if schema["type"] == "map":
            self.primitive("string", indent + 2)
            self.node(schema["values"], indent + 2)
        else:
            self.node(schema["items"], indent + 2)

    def union(self, branches: list[Any], indent: int) -> None:
        if len(branches) != 2 or "null" not in branches:
            raise Unsupported(f"union {branches} is not a nullable type")
        value_index = 1 - branches.index("null")
        self.emit(indent, "b = data[p]; p += 1")
        self.emit(indent, f"if b == {2 * value_index}:")
        self.node(branches[value_index], indent + 1)
        self.emit(indent, f"elif b != {2 * (1 - value_index)}: raise _NotSure")


def _varint_word(value: int) -> tuple[int, int]:
    # (the varint bytes of ``value`` read as a little-endian integer, their count)
    encoded = bytearray()
    while value >= 0x80:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return int.from_bytes(encoded, "little"), len(encoded)


def _fixed_length_range(low: int, high: int) -> tuple[int, int, int, int, int] | None:
    """(size, lowest word, highest word, shape mask, shape) if every zig-zag value of [low, high)
    has a varint of one size; None otherwise (the general read only)."""
    if low <= 0:
        return None
    low_word, size = _varint_word(2 * low)
    high_word, high_size = _varint_word(2 * (high - 1))
    if size != high_size:
        return None
    # the continuation bit set in every byte but the last, clear in the last
    shape_mask = int.from_bytes(b"\x80" * size, "little")
    shape = int.from_bytes(b"\x80" * (size - 1) + b"\x00", "little")
    return size, low_word, high_word, shape_mask, shape


def checker_source(parsed_schema: Any, header: bytes) -> tuple[str, dict[str, Any]]:
    """The Python source of ``check(data)`` for a ``fastavro.parse_schema`` result, and its globals.

    Raises Unsupported if the schema has a node the generator does not handle.
    """
    skipping, decoding = _Generator(decode_strings=False), _Generator(decode_strings=True)
    skipping.node(parsed_schema, 2)
    decoding.node(parsed_schema, 2)
    namespace = {**skipping.namespace, "_header": bytes(header), "_ascii": bytes(range(128))}
    prologue = (
        "    if type(data) is not bytes or not data.startswith(_header):\n"
        "        return False\n"
        "    end = len(data)\n"
        f"    p = {len(header)}\n"
    )
    # Bytes >= 0x80 of the header and of varints are not string content; if they are all the
    # record has, every string is ASCII and none needs decoding.
    header_high = sum(1 for byte in header if byte >= 0x80)
    source = (
        "def check(data):\n"
        f"{prologue}"
        "    hi = 0\n"
        "    try:\n"
        + "\n".join(skipping.lines) + "\n"
        "    except (_NotSure, IndexError):\n"
        "        return False\n"
        "    if p != end:\n"
        "        return False\n"
        f"    if len(data.translate(None, _ascii)) == {header_high} + hi:\n"
        "        return True\n"
        "    return check_decoding(data)\n"
        "\n\n"
        "def check_decoding(data):\n"
        f"{prologue}"
        "    try:\n"
        + "\n".join(decoding.lines) + "\n"
        "    except (_NotSure, IndexError, UnicodeDecodeError):\n"
        "        return False\n"
        "    return p == end\n"
    )
    return source, namespace


def checker_program(parsed_schema: Any) -> tuple[int, ...]:
    """The program :class:`pipeline.native.sealing.Checker` runs for ``parsed_schema``: the same walk
    and the same checks as the generated source of :func:`checker_source`, as opcodes and operands.

    Raises Unsupported for the nodes :func:`checker_source` does not handle.
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
                raise Unsupported(f"logical type {logical!r} on {kind!r} is not checked by the generated code")
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
        if kind in ("string", "int", "long"):
            program.append({"string": native.OP_STRING, "int": native.OP_INT, "long": native.OP_LONG}[kind])
        elif kind != "null":
            raise Unsupported(f"{kind!r} nodes are not checked by the generated code")

    node(parsed_schema)
    return tuple(program)


def compile_checker(parsed_schema: Any, header: bytes) -> Checker | None:
    """The compiled ``check(data)`` for records ``header`` + Avro body of ``parsed_schema``.

    ``check`` returns True only if the bytes decode with this schema and the values pass
    :mod:`pipeline.wire.validation`; False means "ask the reference path". None if the schema has a
    node the checker does not handle. It answers what :func:`compile_python_checker` answers
    (the unit tests compare the two), at C speed.
    """
    try:
        return native.Checker(checker_program(parsed_schema), bytes(header))
    except Unsupported:
        return None


def compile_python_checker(parsed_schema: Any, header: bytes) -> Checker | None:
    """The generated-Python ``check(data)`` of :func:`checker_source`: the readable reference of the
    compiled checker. None if the schema has a node the generator does not handle."""
    try:
        source, namespace = checker_source(parsed_schema, header)
    except Unsupported:
        return None
    code = compile(source, f"<specialised checker for {parsed_schema.get('name', 'schema')}>", "exec")
    exec(code, namespace)  # noqa: S102 - our own generated source, from a schema in schemas/
    check: Checker = namespace["check"]
    check.__doc__ = "True if data certainly decodes and validates; False: ask the reference decoder and validator."
    return check
