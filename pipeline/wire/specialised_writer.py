"""A schema-specialised fast path for the checked writer, generated as Python source once per schema.

The readable reference for the compiled encoder the codec uses,
:mod:`pipeline.native.avro_writer` (same contract, same design rule, same bytes; the unit tests
compare the two with the checked writer and fastavro). Not on the hot path any more: ~2.6 µs per
audit event here against ~0.5 µs compiled.

:func:`pipeline.wire.validation.compile_writer` walks a tree of small closures: one call per schema
node, one ``bytearray`` append per piece. That costs ~5 µs per audit event, more than
librdkafka's whole produce path. Like fastavro's and avro-fastread's code generators, this module
turns the schema into the source of one straight-line function instead: field lookups, exact type
checks and encodings inlined, and the pieces joined once with ``b"".join``.

The generated function is only a fast path, never a second validator with its own rules:

- it accepts only the plain common shapes (exact ``dict``/``int``/``list``, ``str`` and its
  subclasses, UUIDs as strings, timestamps as ints, lengths below 4096) and checks everything
  :mod:`pipeline.wire.validation` checks for them: required fields present, no unknown field, exact
  types, enum symbols, UUID text form, timestamp range, integer ranges, UTF-8 encodability;
- anything else (a datetime, a ``uuid.UUID``, a Mapping that is not a dict, a long string, and
  every invalid value) makes it call ``fallback``, the checked writer, which encodes the value
  or raises the one precise :class:`~pipeline.wire.validation.InvalidEventError`;
- schema nodes it does not specialise (bytes, fixed, floats, unions other than nullable ones,
  recursive records) are delegated to the checked writer's compiled closure for that node.

So every value is either encoded with the same bytes as the checked writer (and fastavro; the unit
tests compare all three) or handed to the checked writer. Read the generated source with
:func:`writer_source`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from pipeline.wire.validation import (
    _INT32,
    _INT64,
    _LENGTH,
    _UUID_TEXT,
    _Compiler,
    _Problem,
    _timestamp_bounds,
    _utf8,
    _zigzag,
    default_value,
)

Encoder = Callable[[Any], bytes]

_LOW7 = tuple(bytes((group | 128,)) for group in range(128))  # a varint byte with more to follow


class _NotFast(Exception):
    """Raised inside the generated function: this value takes the checked writer's path."""


class _Generator:
    """Emits the body of ``encode(value)``; every ``node`` call returns the expressions of its pieces."""

    def __init__(self, compiler: _Compiler) -> None:
        self.compiler = compiler
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {"_L": _LENGTH, "_NotFast": _NotFast, "_Problem": _Problem,
                                          "_zigzag": _zigzag, "_utf8": _utf8, "_uuid_text": _UUID_TEXT, "_low7": _LOW7,
                                          "_varint_high": _varint_high}
        self.definitions: dict[str, Any] = {}
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, value: Any, prefix: str = "_c") -> str:
        name = self.name(prefix)
        self.namespace[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def node(self, schema: Any, value: str, indent: int, records: tuple[str, ...]) -> list[str]:
        """Emit statements checking local ``value`` against ``schema``; return its piece expressions."""
        if isinstance(schema, str):
            if schema in self.definitions:
                if schema in records:  # recursion: not worth specialising
                    return self.delegate(schema, value, indent)
                return self.node(self.definitions[schema], value, indent, records)
            return self.primitive(schema, value, indent)
        if isinstance(schema, list):
            return self.union(schema, value, indent, records)
        kind = schema["type"]
        if "name" in schema:
            self.definitions[schema["name"]] = schema
        logical = schema.get("logicalType")
        if logical is not None:
            return self.logical(kind, logical, value, indent)
        if kind == "record":
            return self.record(schema, value, indent, records + (schema["name"],))
        if kind == "enum":
            symbols = self.const({symbol: _zigzag(i) for i, symbol in enumerate(schema["symbols"])}, "_enum")
            piece = self.name("p")
            self.emit(indent, f"{piece} = {symbols}[{value}]")  # KeyError, TypeError: not a symbol
            return [piece]
        if kind in ("map", "array"):
            return self.repeated(schema, value, indent, records)
        if kind in ("string", "int", "long", "boolean", "null"):
            return self.primitive(kind, value, indent)
        return self.delegate(schema, value, indent)

    def primitive(self, kind: str, value: str, indent: int) -> list[str]:
        if kind == "string":
            encoded = self.name("s")
            # TypeError: not a str; UnicodeEncodeError: a lone surrogate
            self.emit(indent, f"{encoded} = _utf8({value})")
            return [f"_L[len({encoded})]", encoded]  # IndexError: 4096 bytes or more
        if kind in ("int", "long"):
            low, high = _INT32 if kind == "int" else _INT64
            self.emit(indent, f"if type({value}) is not int or not {low} <= {value} < {high}: raise _NotFast")
            return [f"_zigzag({value})"]
        if kind == "boolean":
            piece = self.name("p")
            self.emit(indent, f"if {value} is True: {piece} = b'\\x01'")
            self.emit(indent, f"elif {value} is False: {piece} = b'\\x00'")
            self.emit(indent, "else: raise _NotFast")
            return [piece]
        if kind == "null":
            self.emit(indent, f"if {value} is not None: raise _NotFast")
            return []
        return self.delegate(kind, value, indent)

    def logical(self, kind: str, logical: str, value: str, indent: int) -> list[str]:
        if kind == "string" and logical == "uuid":
            self.emit(indent, f"if type({value}) is not str or _uuid_text({value}) is None: raise _NotFast")
            return ["b'\\x48'", f"{value}.encode()"]  # 36 characters, zig-zag encoded
        if kind == "long" and logical == "timestamp-micros":
            low, high = _timestamp_bounds(logical)
            self.emit(indent, f"if type({value}) is not int or not {low} <= {value} < {high}: raise _NotFast")
            # In range, the zig-zag value 2*micros always takes 8 varint bytes: the low two
            # come from a table, the high six change every 8 ms of event time and are cached.
            z = self.name("z")
            self.emit(indent, f"{z} = {value} << 1")
            return [f"_low7[{z} & 127]", f"_low7[{z} >> 7 & 127]", f"_varint_high({z} >> 14)"]
        if kind == "long" and logical == "timestamp-millis":
            low, high = _timestamp_bounds(logical)
            self.emit(indent, f"if type({value}) is not int or not {low} <= {value} < {high}: raise _NotFast")
            return [f"_zigzag({value})"]
        return self.delegate({"type": kind, "logicalType": logical}, value, indent)

    def record(self, schema: Mapping[str, Any], value: str, indent: int, records: tuple[str, ...]) -> list[str]:
        allowed = self.const(frozenset(field["name"] for field in schema["fields"]), "_fields")
        self.emit(indent, f"if type({value}) is not dict or not {allowed}.issuperset({value}): raise _NotFast")
        pieces: list[str] = []
        for avro_field in schema["fields"]:
            item = self.name("v")
            if "default" not in avro_field:
                self.emit(indent, f"{item} = {value}[{avro_field['name']!r}]")  # KeyError: missing
            elif avro_field["default"] is None:
                self.emit(indent, f"{item} = {value}.get({avro_field['name']!r})")
            else:
                # Absent means the default, whose encoding is the default's bytes.
                default = self.const(default_value(avro_field), "_default")
                self.emit(indent, f"{item} = {value}.get({avro_field['name']!r}, {default})")
            pieces += self.node(avro_field["type"], item, indent, records)
        return pieces

    def repeated(self, schema: Mapping[str, Any], value: str, indent: int, records: tuple[str, ...]) -> list[str]:
        is_map = schema["type"] == "map"
        parts, piece, item = self.name("parts"), self.name("p"), self.name("v")
        self.emit(indent, f"if type({value}) is not {'dict' if is_map else 'list'}: raise _NotFast")
        self.emit(indent, f"if {value}:")
        self.emit(indent + 1, f"{parts} = [_L[len({value})]]")  # one block holding every item
        if is_map:
            key = self.name("k")
            self.emit(indent + 1, f"for {key}, {item} in {value}.items():")
            key_pieces = self.primitive("string", key, indent + 2)
        else:
            self.emit(indent + 1, f"for {item} in {value}:")
            key_pieces = []
        item_pieces = key_pieces + self.node(schema["values" if is_map else "items"], item, indent + 2, records)
        if item_pieces:
            self.emit(indent + 2, f"{parts} += ({', '.join(item_pieces)},)")
        self.emit(indent + 1, f"{parts}.append(b'\\x00')")
        self.emit(indent + 1, f"{piece} = b''.join({parts})")
        self.emit(indent, f"else: {piece} = b'\\x00'")
        return [piece]

    def union(self, branches: list[Any], value: str, indent: int, records: tuple[str, ...]) -> list[str]:
        if len(branches) != 2 or "null" not in branches:
            return self.delegate(branches, value, indent)
        null_index = branches.index("null")
        if self.resolve(branches[1 - null_index]) == "string":
            # The common optional string: the tag and the length are one table lookup.
            tagged_lengths = self.const(tuple(_zigzag(1 - null_index) + length for length in _LENGTH), "_tagged")
            piece, encoded = self.name("p"), self.name("s")
            self.emit(indent, f"if {value} is None: {piece} = {_zigzag(null_index)!r}; {encoded} = b''")
            self.emit(indent, "else:")
            self.emit(indent + 1, f"{encoded} = _utf8({value})")
            self.emit(indent + 1, f"{piece} = {tagged_lengths}[len({encoded})]")
            return [piece, encoded]
        tag = self.name("t")
        self.emit(indent, f"if {value} is None:")
        # Placeholders first, so both branches assign the same names; filled in below.
        null_line = len(self.lines)
        self.emit(indent + 1, "")
        self.emit(indent, "else:")
        names = []
        for expression in self.node(branches[1 - null_index], value, indent + 1, records):
            if expression.isidentifier():  # already a local: reuse it
                names.append(expression)
            else:
                names.append(self.name("p"))
                self.emit(indent + 1, f"{names[-1]} = {expression}")
        self.emit(indent + 1, f"{tag} = {_zigzag(1 - null_index)!r}")
        empty = "".join(f"{name} = " for name in names) + "b''; " if names else ""
        self.lines[null_line] = "    " * (indent + 1) + f"{empty}{tag} = {_zigzag(null_index)!r}"
        return [tag, *names]

    def resolve(self, schema: Any) -> Any:
        """A named reference's definition (when already seen), else the schema itself."""
        return self.definitions.get(schema, schema) if isinstance(schema, str) else schema

    def delegate(self, schema: Any, value: str, indent: int) -> list[str]:
        """Use the checked writer's closure for this node (it raises _Problem when invalid)."""
        write, _, _ = self.compiler.compile(schema)
        writer, out = self.const(write, "_write"), self.name("b")
        self.emit(indent, f"{out} = bytearray()")
        self.emit(indent, f"{writer}({out}, {value})")
        return [out]


def writer_source(parsed_schema: Any, prefix: bytes = b"") -> tuple[str, dict[str, Any]]:
    """The Python source of ``encode(value)`` for a ``fastavro.parse_schema`` result, and its globals.

    ``encode`` returns ``prefix`` followed by the Avro binary encoding of ``value``, or
    ``_fallback(value)`` (to be added to the globals) for anything outside its fast path.
    """
    compiler = _Compiler()
    compiler.compile(parsed_schema)  # registers named types, so delegated references resolve
    generator = _Generator(compiler)
    pieces = _merge_literals([repr(bytes(prefix))] * bool(prefix) + generator.node(parsed_schema, "value", 2, ()))
    body = "\n".join(generator.lines)
    source = (
        "def encode(value):\n"
        "    try:\n"
        f"{body}\n"
        f"        return b''.join(({', '.join(pieces)},))\n"
        "    except (_NotFast, KeyError, TypeError, IndexError, UnicodeEncodeError, _Problem):\n"
        "        pass\n"
        "    return _fallback(value)\n"
    )
    return source, generator.namespace


_BYTES_LITERAL = ("b'", 'b"')


def _merge_literals(pieces: list[str]) -> list[str]:
    # Adjacent constant pieces (the header, a UUID's length) become one literal: fewer to join.
    merged: list[str] = []
    for piece in pieces:
        if merged and piece[:2] in _BYTES_LITERAL and merged[-1][:2] in _BYTES_LITERAL:
            merged[-1] = repr(ast.literal_eval(merged[-1]) + ast.literal_eval(piece))
        else:
            merged.append(piece)
    return merged


@lru_cache(maxsize=1024)
def _varint_high(high: int) -> bytes:
    """Bytes 3 to 8 of the 8-byte varint of a value whose bits from the 15th on are ``high``."""
    return bytes((high & 127 | 128, high >> 7 & 127 | 128, high >> 14 & 127 | 128, high >> 21 & 127 | 128,
                  high >> 28 & 127 | 128, high >> 35))


def compile_encoder(parsed_schema: Any, prefix: bytes, fallback: Encoder) -> Encoder:
    """Generate and compile ``encode(value) -> prefix + Avro body`` for the schema.

    ``fallback(value)`` must return the same bytes (prefix included) or raise for invalid
    values: it is called for every value the fast path does not handle itself.
    """
    source, namespace = writer_source(parsed_schema, prefix)
    namespace["_fallback"] = fallback
    code = compile(source, f"<specialised writer for {parsed_schema.get('name', 'schema')}>", "exec")
    exec(code, namespace)  # noqa: S102 - our own generated source, from a schema in schemas/
    encode: Encoder = namespace["encode"]
    encode.__doc__ = "Single-object bytes of a valid value; InvalidEventError (from the checked writer) otherwise."
    return encode
