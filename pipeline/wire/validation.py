"""What makes an audit event valid, compiled from its Avro schema.

The schema is compiled once into a *checked writer*: one small function per schema node that
checks a value and appends its Avro binary encoding (Avro 1.11 specification, "Binary Encoding")
to a ``bytearray`` in the same pass. Validating and encoding an event is therefore one walk, and
the encoder can never accept a value the validator would reject. The bytes are identical to
``fastavro.schemaless_writer``'s (the unit tests check this on generated events); fastavro's own
writer is not used on the hot path because it costs about three times as much per event and
reports problems without the field path. In front of it, :mod:`pipeline.native.avro_writer`
(compiled) is a fast path for the common shapes of values, which hands everything else, including
every invalid value, to this checked writer: the checked writer is its readable reference, and
the differential tests (tests/differential/test_native_writer.py) hold the two to the same bytes
and the same errors. Varints are :mod:`pipeline.wire.varint`'s.

A rejected value raises one :class:`InvalidEventError` naming the field path (``actor.source_ip``,
``attributes['region']``) and the problem: missing, wrong type (expected vs found), enum symbol
not allowed (listing the allowed ones), not a UUID, timestamp out of range, unknown field.

Besides what Avro types allow, two rules catch the usual producer bugs before they become
permanent, immutable records:

- ``timestamp-micros``/``timestamp-millis`` values must fall in [2000-01-01, 2100-01-01) UTC:
  a time given in the wrong unit (seconds, milliseconds, nanoseconds) lands far outside it.
  ``datetime`` values are accepted only with a timezone, because a naive one would be read
  as local time and recorded at the wrong instant.
- ``uuid`` strings must have the RFC 4122 textual form (8-4-4-4-12 hex digits); ``uuid.UUID``
  objects are accepted and written in that form.
"""

from __future__ import annotations

import difflib
import re
import struct
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from pipeline.errors import AuditSealError, ConfigError
from pipeline.wire.varint import LENGTH_TABLE_SIZE as _LENGTH_TABLE_SIZE
from pipeline.wire.varint import LENGTHS as _LENGTH
from pipeline.wire.varint import encode_eight_byte_long as _micros_varint
from pipeline.wire.varint import encode_length as _length
from pipeline.wire.varint import encode_long as _zigzag

Writer = Callable[[bytearray, Any], None]
"""A compiled schema node: checks a value and appends its Avro binary encoding."""

EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIMESTAMP = datetime(2100, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)
_ONE_MILLISECOND = timedelta(milliseconds=1)
_INT32 = (-(2**31), 2**31)
_INT64 = (-(2**63), 2**63)
_UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
).fullmatch
_ABSENT = object()
# The UTF-8 of a str's text, also for subclasses (whose own encode() might do something else).
_utf8 = str.encode


class InvalidEventError(AuditSealError, ValueError):
    """An event does not match its schema; nothing was sent.

    ``path`` is the dotted field path (empty for the event as a whole), ``problem`` what is wrong.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"invalid audit event: {path}: {problem}" if path else f"invalid audit event: {problem}")


class _Problem(Exception):
    """Raised inside the compiled writer; the path is collected while it unwinds (innermost first)."""

    def __init__(self, problem: str = "", *, expected: str = "", value: Any = None) -> None:
        self.problem = problem
        self.expected = expected
        self.value = value
        self.path: list[str] = []

    def to_error(self) -> InvalidEventError:
        path = ""
        for segment in reversed(self.path):
            path += segment if segment.startswith("[") or not path else "." + segment
        problem = self.problem or f"expected {self.expected}, found {_found(self.value)}"
        return InvalidEventError(path, problem)


def _found(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_error(expected: str, value: Any) -> _Problem:
    return _Problem(expected=expected, value=value)


def _is_integer(value: Any) -> bool:
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def _is_mapping(value: Any) -> bool:
    return type(value) is dict or isinstance(value, Mapping)


class _Compiler:
    """Compiles a fastavro-parsed schema into :data:`Writer` functions."""

    def __init__(self) -> None:
        # Named types by full name; a record is registered before its fields are compiled so
        # a recursive reference resolves to it.
        self.named: dict[str, tuple[Writer, str, Callable[[Any], bool]]] = {}

    def compile(self, schema: Any) -> tuple[Writer, str, Callable[[Any], bool]]:
        """Return (writer, human description, predicate telling whether a value could be this type)."""
        if isinstance(schema, list):
            return self._union(schema)
        if isinstance(schema, str):
            if schema in self.named:
                return self.named[schema]
            return self._primitive(schema)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical is not None:
            return self._logical(kind, logical)
        if kind == "record" or kind == "error":
            return self._record(schema)
        if kind == "enum":
            return self._enum(schema)
        if kind == "array":
            return self._array(schema)
        if kind == "map":
            return self._map(schema)
        if kind == "fixed":
            return self._fixed(schema)
        return self._primitive(kind)

    # -- primitives ---------------------------------------------------------------------------

    def _primitive(self, kind: str) -> tuple[Writer, str, Callable[[Any], bool]]:
        if kind == "string":
            return _write_string, "string", lambda v: isinstance(v, str)
        if kind == "null":

            def write_null(out: bytearray, value: Any) -> None:
                if value is not None:
                    raise _type_error("null", value)

            return write_null, "null", lambda v: v is None
        if kind == "boolean":

            def write_boolean(out: bytearray, value: Any) -> None:
                if value is True:
                    out += b"\x01"
                elif value is False:
                    out += b"\x00"
                else:
                    raise _type_error("boolean", value)

            return write_boolean, "boolean", lambda v: isinstance(v, bool)
        if kind == "int" or kind == "long":
            low, high = _INT32 if kind == "int" else _INT64

            def write_integer(out: bytearray, value: Any) -> None:
                if not _is_integer(value):
                    raise _type_error(kind, value)
                if not low <= value < high:
                    raise _Problem(f"{value} does not fit in an Avro {kind} ({low} .. {high - 1})")
                out += _zigzag(value)

            return write_integer, kind, _is_integer
        if kind == "float" or kind == "double":
            pack = struct.Struct("<f" if kind == "float" else "<d").pack

            def write_real(out: bytearray, value: Any) -> None:
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise _type_error(kind, value)
                try:
                    out += pack(value)
                except OverflowError:
                    raise _Problem(f"{value} does not fit in an Avro {kind}") from None

            return write_real, kind, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
        if kind == "bytes":

            def write_bytes(out: bytearray, value: Any) -> None:
                if not isinstance(value, (bytes, bytearray)):
                    raise _type_error("bytes", value)
                out += _length(len(value))
                out += value

            return write_bytes, "bytes", lambda v: isinstance(v, (bytes, bytearray))
        raise ConfigError(f"unknown Avro type {kind!r} in schema")

    # -- logical types ------------------------------------------------------------------------

    def _logical(self, kind: str, logical: str) -> tuple[Writer, str, Callable[[Any], bool]]:
        if kind == "string" and logical == "uuid":
            return _write_uuid, "UUID string", lambda v: isinstance(v, (str, uuid.UUID))
        if kind == "long" and logical in ("timestamp-micros", "timestamp-millis"):
            return _timestamp_writer(logical), f"{logical} timestamp", lambda v: _is_integer(v) or isinstance(
                v, datetime
            )
        raise ConfigError(
            f"logical type {logical!r} on {kind!r} is not supported by pipeline/wire/validation.py; "
            "add a checked writer for it before using it in a schema"
        )

    # -- named and complex types --------------------------------------------------------------

    def _record(self, schema: Mapping[str, Any]) -> tuple[Writer, str, Callable[[Any], bool]]:
        full_name = schema["name"]
        short_name = full_name.rsplit(".", 1)[-1]
        description = f"{short_name} record (a dict)"
        # (name, writer, default bytes or None when the field is required); filled below so a
        # recursive reference to this record can be compiled first.
        fields: list[tuple[str, Writer, bytes | None]] = []
        allowed = frozenset(f["name"] for f in schema["fields"])
        field_list = ", ".join(f["name"] for f in schema["fields"])

        def write_record(out: bytearray, value: Any) -> None:
            if type(value) is not dict and not isinstance(value, Mapping):
                raise _type_error(description, value)
            if not allowed.issuperset(value):
                raise _unknown_field(value, allowed, short_name, field_list)
            for name, write, default in fields:
                if default is None:
                    try:
                        item = value[name]
                    except KeyError:
                        problem = _Problem(f"missing required field (expected {types[name]})")
                        problem.path.append(name)
                        raise problem from None
                else:
                    item = value.get(name, _ABSENT)
                    if item is _ABSENT:
                        out += default
                        continue
                try:
                    write(out, item)
                except _Problem as problem:
                    problem.path.append(name)
                    raise

        self.named[full_name] = (write_record, description, _is_mapping)
        types: dict[str, str] = {}
        for avro_field in schema["fields"]:
            write, field_description, _ = self.compile(avro_field["type"])
            types[avro_field["name"]] = field_description
            default = None
            if "default" in avro_field:
                default = self._default_bytes(write, avro_field)
            fields.append((avro_field["name"], write, default))
        return self.named[full_name]

    def _default_bytes(self, write: Writer, avro_field: Mapping[str, Any]) -> bytes:
        out = bytearray()
        try:
            write(out, default_value(avro_field))
        except _Problem as problem:
            raise ConfigError(
                f"default of field {avro_field['name']!r} does not match its type: {problem.to_error().problem}"
            ) from None
        return bytes(out)

    def _enum(self, schema: Mapping[str, Any]) -> tuple[Writer, str, Callable[[Any], bool]]:
        short_name = schema["name"].rsplit(".", 1)[-1]
        symbols = list(schema["symbols"])
        index = {symbol: _zigzag(i) for i, symbol in enumerate(symbols)}
        description = f"{short_name} symbol"
        allowed = ", ".join(symbols)

        def write_enum(out: bytearray, value: Any) -> None:
            try:
                out += index[value]
            except (KeyError, TypeError):
                if not isinstance(value, str):
                    raise _Problem(f"expected a symbol of {short_name} ({allowed}), found {_found(value)}") from None
                raise _Problem(f"{value!r} is not a symbol of {short_name}; allowed: {allowed}") from None

        entry = (write_enum, description, lambda v: isinstance(v, str) and v in index)
        self.named[schema["name"]] = entry
        return entry

    def _fixed(self, schema: Mapping[str, Any]) -> tuple[Writer, str, Callable[[Any], bool]]:
        size = schema["size"]
        description = f"{size} bytes ({schema['name'].rsplit('.', 1)[-1]})"

        def write_fixed(out: bytearray, value: Any) -> None:
            if not isinstance(value, (bytes, bytearray)):
                raise _type_error(description, value)
            if len(value) != size:
                raise _Problem(f"expected exactly {size} bytes, found {len(value)}")
            out += value

        entry = (write_fixed, description, lambda v: isinstance(v, (bytes, bytearray)) and len(v) == size)
        self.named[schema["name"]] = entry
        return entry

    def _array(self, schema: Mapping[str, Any]) -> tuple[Writer, str, Callable[[Any], bool]]:
        write_item, item_description, _ = self.compile(schema["items"])
        description = f"array of {item_description} (a list)"

        def write_array(out: bytearray, value: Any) -> None:
            if not isinstance(value, (list, tuple)):
                raise _type_error(description, value)
            if value:
                out += _length(len(value))
                for position, item in enumerate(value):
                    try:
                        write_item(out, item)
                    except _Problem as problem:
                        problem.path.append(f"[{position}]")
                        raise
            out += b"\x00"

        return write_array, description, lambda v: isinstance(v, (list, tuple))

    def _map(self, schema: Mapping[str, Any]) -> tuple[Writer, str, Callable[[Any], bool]]:
        write_value, value_description, _ = self.compile(schema["values"])
        description = f"map of {value_description} (a dict with string keys)"
        values_are_strings = write_value is _write_string

        def write_map(out: bytearray, value: Any) -> None:
            if type(value) is not dict and not isinstance(value, Mapping):
                raise _type_error(description, value)
            if value:
                out += _length(len(value))
                for key, item in value.items():
                    if type(key) is not str:
                        if not isinstance(key, str):
                            raise _Problem(f"map keys must be strings, found {_found(key)}")
                    try:
                        encoded = _utf8(key)
                    except UnicodeEncodeError as exc:
                        raise _Problem(
                            f"map key {key[:60]!r} is not valid Unicode text ({exc.reason} at index {exc.start})"
                        ) from None
                    out += _length(len(encoded))
                    out += encoded
                    # string maps (attributes) are the common case: skip one call per value
                    if values_are_strings and type(item) is str and item.isascii():
                        out += _length(len(item))
                        out += _utf8(item)
                        continue
                    try:
                        write_value(out, item)
                    except _Problem as problem:
                        problem.path.append(f"[{key!r}]")
                        raise
            out += b"\x00"

        return write_map, description, _is_mapping

    def _union(self, branches: list[Any]) -> tuple[Writer, str, Callable[[Any], bool]]:
        compiled = [self.compile(branch) for branch in branches]
        descriptions = [description for _, description, _ in compiled]
        non_null = [i for i, branch in enumerate(branches) if branch != "null"]
        if len(non_null) == 1 and len(branches) == 2:
            return self._nullable(branches.index("null"), non_null[0], compiled[non_null[0]])
        if sum(1 for _, _, accepts in compiled if accepts is _is_mapping) > 1:
            raise ConfigError(
                f"union {branches} has more than one record or map branch; the writer could not tell "
                "which one a dict is meant to be"
            )
        indexed = [(_zigzag(i), write, accepts) for i, (write, _, accepts) in enumerate(compiled)]
        description = " or ".join(descriptions)

        def write_union(out: bytearray, value: Any) -> None:
            for index, write, accepts in indexed:
                if accepts(value):
                    out += index
                    write(out, value)
                    return
            raise _type_error(description, value)

        return write_union, description, lambda v: any(accepts(v) for _, _, accepts in indexed)

    @staticmethod
    def _nullable(
        null_index: int, value_index: int, branch: tuple[Writer, str, Callable[[Any], bool]]
    ) -> tuple[Writer, str, Callable[[Any], bool]]:
        write_value, value_description, accepts = branch
        null_tag = _zigzag(null_index)
        value_tag = _zigzag(value_index)
        description = f"{value_description} or null"

        def write_nullable(out: bytearray, value: Any) -> None:
            if value is None:
                out += null_tag
                return
            out += value_tag
            try:
                write_value(out, value)
            except _Problem as problem:
                if problem.expected and not problem.path:
                    problem.expected = description
                raise

        def write_nullable_string(out: bytearray, value: Any) -> None:
            # Most optional fields of an audit event are nullable strings: one call, not two.
            if value is None:
                out += null_tag
            elif type(value) is str and value.isascii():
                encoded = value.encode()
                n = len(encoded)
                out += value_tag
                out += _LENGTH[n] if n < _LENGTH_TABLE_SIZE else _zigzag(n)
                out += encoded
            else:
                write_nullable(out, value)

        writer = write_nullable_string if write_value is _write_string else write_nullable
        return writer, description, lambda v: v is None or accepts(v)


def _write_string(out: bytearray, value: Any) -> None:
    if type(value) is not str and not isinstance(value, str):
        raise _type_error("string", value)
    try:
        encoded = _utf8(value)
    except UnicodeEncodeError as exc:
        raise _Problem(f"string is not valid Unicode text ({exc.reason} at index {exc.start})") from None
    n = len(encoded)
    out += _LENGTH[n] if n < _LENGTH_TABLE_SIZE else _zigzag(n)
    out += encoded


def _write_uuid(out: bytearray, value: Any) -> None:
    if type(value) is not str:
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif not isinstance(value, str):
            raise _type_error("UUID string", value)
    if _UUID_TEXT(value) is None:
        raise _Problem(f"not a valid UUID: {value[:60]!r} (expected 8-4-4-4-12 hex digits)")
    out += b"\x48"  # the length of every UUID string, 36, zig-zag encoded
    out += value.encode()


def _timestamp_bounds(logical: str) -> tuple[int, int]:
    """The accepted range [low, high) of a ``timestamp-micros``/``timestamp-millis`` value, in its unit."""
    unit = _ONE_MICROSECOND if logical == "timestamp-micros" else _ONE_MILLISECOND
    return (EARLIEST_TIMESTAMP - _EPOCH) // unit, (LATEST_TIMESTAMP - _EPOCH) // unit


def _timestamp_writer(logical: str) -> Writer:
    micros = logical == "timestamp-micros"
    unit = _ONE_MICROSECOND if micros else _ONE_MILLISECOND
    unit_name = "microseconds" if micros else "milliseconds"
    low, high = _timestamp_bounds(logical)
    expected = f"{logical} ({unit_name} since the epoch as an int, or an aware datetime)"

    def write_timestamp(out: bytearray, value: Any) -> None:
        if type(value) is not int:
            if isinstance(value, datetime):
                if value.tzinfo is None or value.utcoffset() is None:
                    raise _Problem(
                        "naive datetime (no tzinfo) would be read as local time; give an aware one, "
                        "e.g. datetime.now(timezone.utc)"
                    )
                value = (value - _EPOCH) // unit
            elif not _is_integer(value):
                raise _type_error(expected, value)
        if not low <= value < high:
            raise _Problem(_timestamp_range_problem(value, unit, unit_name))
        out += _micros_varint(value) if micros else _zigzag(value)

    return write_timestamp


def _timestamp_range_problem(value: int, unit: timedelta, unit_name: str) -> str:
    try:
        shown = (_EPOCH + value * unit).isoformat().replace("+00:00", "Z")
    except OverflowError:
        shown = "outside the datetime range"
    return (
        f"timestamp out of range: {value} {unit_name} is {shown}; expected {unit_name} since the "
        f"epoch between {EARLIEST_TIMESTAMP.date()} and {LATEST_TIMESTAMP.date()} "
        "(a value in the wrong unit lands far outside)"
    )


def _unknown_field(value: Mapping[str, Any], allowed: frozenset[str], record: str, field_list: str) -> _Problem:
    unknown = sorted((key for key in value if key not in allowed), key=str)[0]
    if not isinstance(unknown, str):
        return _Problem(f"field names must be strings, found {_found(unknown)}")
    hint = difflib.get_close_matches(unknown, allowed, n=1)
    suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
    problem = _Problem(f"unknown field; {record} has: {field_list}{suffix}")
    problem.path.append(unknown)
    return problem


def default_value(avro_field: Mapping[str, Any]) -> Any:
    """The Python value of a field's ``default``, as the writer takes it (bytes for bytes and fixed)."""
    value = avro_field["default"]
    kind = avro_field["type"]
    if kind == "bytes" or (isinstance(kind, dict) and kind.get("type") in ("bytes", "fixed")):
        # Avro JSON writes bytes defaults as strings of code points 0-255.
        value = value.encode("latin-1")
    return value


def compile_writer(parsed_schema: Any) -> Writer:
    """Compile a ``fastavro.parse_schema`` result into a checked writer.

    The writer appends the Avro binary encoding of a value to a ``bytearray``, or raises
    :class:`InvalidEventError` (leaving the buffer partly written) if the value does not match.
    Raises ConfigError if the schema uses a construct the writer does not support.
    """
    write, _, _ = _Compiler().compile(parsed_schema)

    def checked_write(out: bytearray, value: Any) -> None:
        try:
            write(out, value)
        except _Problem as problem:
            raise problem.to_error() from None

    checked_write.__doc__ = "Append the Avro binary encoding of a valid value to ``out``; InvalidEventError otherwise."
    return checked_write


@lru_cache(maxsize=1)
def _latest_event_writer() -> Writer:
    from pipeline.wire.catalog import AUDIT_EVENT, default_catalog

    return compile_writer(default_catalog().latest(AUDIT_EVENT).parsed)


def validate_event(event: Mapping[str, Any]) -> None:
    """Check ``event`` against the latest AuditEvent schema; raise InvalidEventError naming the field path.

    Accepts ``datetime`` (aware) for timestamp fields and ``uuid.UUID`` for UUID fields, as the
    encoder does. Fields with a schema default (the nullable ones, ``attributes``) may be absent.
    """
    _latest_event_writer()(bytearray(), event)
