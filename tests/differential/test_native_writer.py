"""The compiled encoder writes exactly the checked writer's (and fastavro's) bytes, for every schema in schemas/.

The checked writer (pipeline.wire.validation, what EventCodec.encode_checked runs and what the
compiled encoder hands everything unusual to) is its one readable reference. Every invalid value
must end in the checked writer's InvalidEventError, word for word; values of unusual shapes must be
handed to the checked writer and come out with its bytes.
"""

from __future__ import annotations

import copy
import enum
import io
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.native.avro_writer import NativeEncoder, compile_native_encoder
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.catalog import default_catalog
from pipeline.wire.codec import default_codec
from pipeline.wire.validation import _INT32, _INT64, InvalidEventError, _timestamp_bounds, compile_writer
from tests.differential.strategies import valid_events
from tests.unit.test_validation import CASES, VALID, changed

pytestmark = pytest.mark.differential


def fastavro_bytes(parsed: Any, value: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, value)
    return buffer.getvalue()


class CountingFallback:
    """The checked writer, counting how often the fast path handed a value over."""

    def __init__(self, parsed: Any) -> None:
        self.write = compile_writer(parsed)
        self.calls = 0

    def __call__(self, value: Any) -> bytes:
        self.calls += 1
        out = bytearray()
        self.write(out, value)
        return bytes(out)


def outcome(encode: Callable[[Any], bytes], value: Any) -> bytes | tuple[str, str]:
    try:
        return encode(value)
    except InvalidEventError as error:
        return error.path, error.problem


GENERIC = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Node",
        "namespace": "test",
        "fields": [
            {"name": "sizes", "type": {"type": "array", "items": "int"}},
            {"name": "digest", "type": {"type": "fixed", "name": "Sha256", "size": 4}},
            {"name": "ratio", "type": ["null", "double", "string"]},
            {"name": "sealed", "type": "boolean", "default": False},
            {"name": "count", "type": "long"},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}},
            {"name": "other_kind", "type": ["null", "Kind"], "default": None},
            {"name": "labels", "type": {"type": "map", "values": {"type": "array", "items": "string"}}},
            {"name": "blob", "type": "bytes", "default": "\u00ff"},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "child", "type": ["null", "Node"], "default": None},
            {"name": "meta", "default": None, "type": ["null", {"type": "record", "name": "Meta", "fields": [
                {"name": "note", "type": ["string", "null"], "default": ""},
                {"name": "counts", "type": {"type": "map", "values": "long"}, "default": {}},
            ]}]},
        ],
    }
)


def _in_range(record: dict[str, Any], millis: int) -> dict[str, Any]:
    # fastavro's random longs fall outside the accepted timestamp range; absent "sealed": the default.
    record["at"] = millis
    if millis % 2:
        record.pop("sealed")
    if record["child"] is not None:
        _in_range(record["child"], millis + 1)
    return record


FAMILIES = ["audit_event", "sealed_event", "rejection", "checkpoint", "gap", "tree_head", "cosignature", "archived_record",
            "alert"]


def test_every_schema_family_is_covered() -> None:
    assert sorted(FAMILIES) == sorted(default_catalog().families)


def parsed(family: str) -> Any:
    return default_catalog().latest(family).parsed


def encoder(schema: Any, prefix: bytes = b"") -> tuple[Any, CountingFallback]:
    fallback = CountingFallback(schema)
    return compile_native_encoder(schema, prefix, lambda value: prefix + fallback(value)), fallback


# -- strategies for valid values of any parsed schema ----------------------------------------------


def valid_values(schema: Any, named: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Values of ``schema`` that the checked writer accepts, in the plain shapes services use."""
    named = {} if named is None else named
    if isinstance(schema, list):
        return st.one_of([valid_values(branch, named) for branch in schema])
    if isinstance(schema, str):
        if schema in named:
            return st.deferred(lambda: named[schema])
        schema = {"type": schema}
    kind, logical = schema["type"], schema.get("logicalType")
    if logical == "uuid":
        return st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
    if logical in ("timestamp-micros", "timestamp-millis"):
        low, high = _timestamp_bounds(logical)
        return st.integers(low, high - 1)
    if kind == "record":
        named[schema["name"]] = st.nothing()  # recursion: not in these schemas
        required = {f["name"]: valid_values(f["type"], named) for f in schema["fields"] if "default" not in f}
        optional = {f["name"]: valid_values(f["type"], named) for f in schema["fields"] if "default" in f}
        strategy = st.fixed_dictionaries(required, optional=optional)
    elif kind == "enum":
        strategy = st.sampled_from(schema["symbols"])
    elif kind == "map":
        strategy = st.dictionaries(st.text(max_size=8), valid_values(schema["values"], named), max_size=4)
    elif kind == "array":
        strategy = st.lists(valid_values(schema["items"], named), max_size=4)
    elif kind == "fixed":
        strategy = st.binary(min_size=schema["size"], max_size=schema["size"])
    else:
        return {
            "string": st.text(max_size=40),
            "bytes": st.binary(max_size=40),
            "int": st.integers(_INT32[0], _INT32[1] - 1),
            "long": st.integers(_INT64[0], _INT64[1] - 1),
            "boolean": st.booleans(),
            "null": st.none(),
            "float": st.floats(width=32, allow_nan=False),
            "double": st.floats(allow_nan=False),
        }[kind]
    if "name" in schema:
        named[schema["name"]] = strategy
    return strategy


_JUNK = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
         | st.text(max_size=5) | st.binary(max_size=4) | st.lists(st.integers(), max_size=2) | st.uuids()
         | st.just("\ud800") | st.just("x" * 5000) | st.just(b"\x00" * 32)
         | st.dictionaries(st.text(max_size=3), st.text(max_size=3) | st.integers(), max_size=2))


@st.composite
def damaged_values(draw: st.DrawFn, schema: Any) -> Any:
    """A valid value with one place changed: a value replaced by junk, a key deleted, or a key added."""
    value = copy.deepcopy(draw(valid_values(schema)))
    target = value
    while True:
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        inner = [k for k in keys if isinstance(target[k], (dict, list)) and target[k]]
        if not inner or not draw(st.booleans()):
            break
        target = target[draw(st.sampled_from(inner))]
    keys = list(target) if isinstance(target, dict) else list(range(len(target)))
    action = draw(st.sampled_from(["replace", "delete", "add"] if isinstance(target, dict) else ["replace"]))
    if action == "add" or not keys:
        if isinstance(target, dict):
            target[draw(st.text(max_size=4) | st.integers() | st.just("unknown"))] = draw(_JUNK)
        return value
    key = draw(st.sampled_from(keys))
    if action == "delete":
        del target[key]
    else:
        target[key] = draw(_JUNK)
    return value


# -- differential tests, every schema -------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_valid_values_match_the_checked_writer_and_fastavro_without_falling_back(family: str) -> None:
    schema = parsed(family)
    encode, fallback = encoder(schema, b"\xc3\x01")

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(valid_values(schema))
    def check(value: Any) -> None:
        calls = fallback.calls
        assert encode(value) == b"\xc3\x01" + fastavro_bytes(schema, value)
        assert fallback.calls == calls  # written by the compiled ops, not handed over
        assert encode(value) == b"\xc3\x01" + fallback(value)

    check()


@pytest.mark.parametrize("family", FAMILIES)
def test_damaged_values_get_the_same_outcome_as_the_checked_writer(family: str) -> None:
    schema = parsed(family)
    encode, _ = encoder(schema)
    checked = CountingFallback(schema)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(damaged_values(schema))
    def check(value: Any) -> None:
        assert outcome(encode, value) == outcome(checked, value)

    check()


def test_generic_schema_matches_fastavro_through_the_ops_and_delegated_nodes() -> None:
    # fixed, bytes defaults, a three-branch union (delegated), a recursive record (delegated), nested maps.
    encode, fallback = encoder(GENERIC, b"\x01\x02")
    for millis in (946_684_800_000, 1_735_689_600_123, 4_102_444_799_000):
        for record in fastavro.utils.generate_many(GENERIC, 20):
            record = _in_range(record, millis)
            assert encode(record) == b"\x01\x02" + fastavro_bytes(GENERIC, record)
    assert fallback.calls == 0


@settings(max_examples=300, deadline=None)
@given(damaged_values(GENERIC))
def test_generic_schema_damage_gets_the_checked_writers_outcome(value: Any) -> None:
    encode, _ = encoder(GENERIC)
    assert outcome(encode, value) == outcome(CountingFallback(GENERIC), value)


# -- fixed vectors --------------------------------------------------------------------------------

SEALED = {
    "chain_id": "audit.raw/3",
    "seq": 1,
    "prev_hash": bytes(32),
    "hash": bytes(range(32)),
    "source_partition": 3,
    "source_offset": 64,
    "source_timestamp_micros": 1_735_689_600_000_000,
    "event": b"\xc3\x01event",
}
SEALED_HEX = (
    "16" + b"audit.raw/3".hex()  # length 11, zig-zag 22
    + "02"  # seq 1
    + "40" + "00" * 32  # 32 bytes
    + "40" + bytes(range(32)).hex()
    + "06"  # partition 3
    + "8001"  # offset 64: zig-zag 128, two varint bytes
    + "8080e3a0b7a69506"  # 2 * 1_735_689_600_000_000 as a varint, 8 bytes
    + "0e" + b"\xc3\x01event".hex()  # 7 bytes
)


def test_sealed_event_vector() -> None:
    encode, fallback = encoder(parsed("sealed_event"))
    assert encode(SEALED).hex() == SEALED_HEX == fastavro_bytes(parsed("sealed_event"), SEALED).hex()
    assert encode({**SEALED, "prev_hash": bytearray(32)}).hex() == SEALED_HEX
    assert fallback.calls == 0


def test_the_codec_uses_it_and_prefixes_the_header() -> None:
    codec = default_codec()
    assert isinstance(codec.encode.__self__, NativeEncoder)
    event = dict(VALID)
    assert codec.encode(event) == codec.encode_checked(event) == codec.header + fastavro_bytes(codec.schema.parsed,
                                                                                              event)


INTEGERS = {"type": "record", "name": "Integers", "fields": [
    {"name": "i", "type": "int"}, {"name": "l", "type": "long"},
    {"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "m", "type": {"type": "long", "logicalType": "timestamp-millis"}},
]}


@pytest.mark.parametrize(
    ("kind", "value", "encoded"),
    [
        ("int", 0, "00"), ("int", -1, "01"), ("int", 1, "02"), ("int", 63, "7e"), ("int", -64, "7f"),
        ("int", 64, "8001"), ("int", 2**31 - 1, "feffffff0f"), ("int", -(2**31), "ffffffff0f"),
        ("long", 2**63 - 1, "feffffffffffffffff01"), ("long", -(2**63), "ffffffffffffffffff01"),
        ("string", "", "00"), ("string", "é", "04c3a9"), ("bytes", b"", "00"), ("boolean", True, "01"),
        ("boolean", False, "00"), ("null", None, ""),
        ({"type": "array", "items": "int"}, [], "00"), ({"type": "array", "items": "int"}, (1, 2), "04020400"),
        ({"type": "map", "values": "long"}, {}, "00"), ({"type": "map", "values": "long"}, {"a": -1}, "0202610100"),
        (["null", "string"], None, "00"), (["null", "string"], "a", "020261"), (["string", "null"], None, "02"),
        ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, "B", "02"),
    ],
)
def test_vectors(kind: Any, value: Any, encoded: str) -> None:
    schema = fastavro.parse_schema(kind)
    encode, fallback = encoder(schema, b"\xc3\x01")
    assert encode(value).hex() == "c301" + encoded
    assert fastavro_bytes(schema, value).hex() == encoded
    assert fallback.calls == 0


@pytest.mark.parametrize("logical", ["timestamp-micros", "timestamp-millis"])
def test_timestamp_range_edges(logical: str) -> None:
    schema = fastavro.parse_schema({"type": "long", "logicalType": logical})
    encode, fallback = encoder(schema)
    low, high = _timestamp_bounds(logical)
    for value in (low, high - 1):
        assert encode(value) == fastavro_bytes(schema, value)
    assert fallback.calls == 0
    for value in (low - 1, high):
        assert outcome(encode, value) == outcome(CountingFallback(schema), value)
        assert "timestamp out of range" in outcome(encode, value)[1]


@pytest.mark.parametrize(
    ("field", "value"),
    [("i", 2**31), ("i", -(2**31) - 1), ("l", 2**63), ("l", -(2**63) - 1),
     ("t", _timestamp_bounds("timestamp-micros")[1]), ("t", _timestamp_bounds("timestamp-micros")[0] - 1),
     ("m", _timestamp_bounds("timestamp-millis")[1]), ("m", 1_735_689_600_000_000), ("i", True), ("l", 1.0)],
)
def test_integers_out_of_range_get_the_checked_writers_error(field: str, value: Any) -> None:
    schema = fastavro.parse_schema(INTEGERS)
    encode, _ = encoder(schema)
    record = {"i": 0, "l": 0, "t": 1_735_689_600_000_000, "m": 1_735_689_600_000, field: value}
    with pytest.raises(InvalidEventError) as caught:
        encode(record)
    assert outcome(encode, record) == outcome(CountingFallback(schema), record) == (field, caught.value.problem)


def test_a_value_larger_than_the_stack_buffer_grows_it() -> None:
    encode, fallback = encoder(parsed("archived_record"))
    record = {"topic": "audit.sealed" * 1000, "partition": 1, "offset": 2, "timestamp_micros": -1000, "kind": "évent",
              "value": bytes(range(256)) * 4000}
    assert encode(record) == fastavro_bytes(parsed("archived_record"), record)
    attributes = {f"key_{i}": "välue" * (i % 7) for i in range(5000)}
    event = dict(VALID, attributes=attributes)
    assert encode_event(event) == default_codec().encode_checked(event)
    assert fallback.calls == 0


def encode_event(event: dict) -> bytes:
    return default_codec().encode(event)


# -- the audit event: unusual shapes go to the checked writer, invalid ones get its error -----------


class Text(str):
    """A str subclass, encoded as its text."""


class Level(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize(
    ("edit", "falls_back"),
    [
        (lambda e: e.update(event_id=uuid.UUID(VALID["event_id"])), True),
        (lambda e: e.update(event_id=VALID["event_id"].upper()), False),
        (lambda e: e.update(occurred_at=datetime(2025, 1, 1, tzinfo=UTC)), True),
        (lambda e: e.update(action="x" * 5000), False),
        (lambda e: e.update(action="dokument.lesen.ü.🔒"), False),
        (lambda e: e.update(action=Text("document.read")), False),
        (lambda e: e.update(attributes=OrderedDict(region="eu")), True),
        (lambda e: e.update(attributes={Text("région"): Text("eu")}), False),
        (lambda e: e.update(actor=MappingProxyType(dict(VALID["actor"]))), True),
        (lambda e: e["outcome"].update(status=Text("DENIED")), True),
        (lambda e: e.pop("attributes"), False),
        (lambda e: e["actor"].update(source_ip=None), False),
    ],
    ids=["uuid-object", "upper-case-uuid", "datetime", "long-string", "non-ascii", "str-subclass", "ordered-dict",
         "str-subclass-map", "mapping-proxy", "str-subclass-enum", "absent-default", "null"],
)
def test_unusual_values_encode_as_the_checked_writer_does(edit, falls_back: bool) -> None:
    codec = default_codec()
    encode, fallback = encoder(codec.schema.parsed, codec.header)
    event = changed(edit)
    assert encode(event) == codec.encode_checked(event)
    assert fallback.calls == int(falls_back)


@pytest.mark.parametrize(("edit", "path", "fragment"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_invalid_events_get_the_checked_writers_error(edit, path, fragment) -> None:
    codec = default_codec()
    event = changed(edit)
    with pytest.raises(InvalidEventError) as caught:
        codec.encode(event)
    assert (caught.value.path, fragment in caught.value.problem) == (path, True)
    assert outcome(codec.encode, event) == outcome(codec.encode_checked, event)


SURROGATE = "surrogates not allowed at index 0"


@pytest.mark.parametrize(
    ("edit", "path", "problem"),
    [
        (lambda e: e.update(action="\ud800"), "action", f"string is not valid Unicode text ({SURROGATE})"),
        (lambda e: e["actor"].update(source_ip="\ud800"), "actor.source_ip",
         f"string is not valid Unicode text ({SURROGATE})"),
        (lambda e: e.update(attributes={"note": "\ud800"}), "attributes['note']",
         f"string is not valid Unicode text ({SURROGATE})"),
        (lambda e: e.update(attributes={"\ud800": "v"}), "attributes",
         f"map key '\\ud800' is not valid Unicode text ({SURROGATE})"),
        (lambda e: e.update(event_id="b22cc347-4ca2-4b41-b5e4-c4bb3094254"), "event_id",
         "not a valid UUID: 'b22cc347-4ca2-4b41-b5e4-c4bb3094254' (expected 8-4-4-4-12 hex digits)"),
        (lambda e: e.update(event_id="b22cc347-4ca2-4b41-b5e4_c4bb30942540"), "event_id",
         "not a valid UUID: 'b22cc347-4ca2-4b41-b5e4_c4bb30942540' (expected 8-4-4-4-12 hex digits)"),
        (lambda e: e.update(event_id="b22cc347-4ca2-4b41-b5e4-c4bb3094254g"), "event_id",
         "not a valid UUID: 'b22cc347-4ca2-4b41-b5e4-c4bb3094254g' (expected 8-4-4-4-12 hex digits)"),
        (lambda e: e.update(event_id="b22cc347-4ca2-4b41-b5e4-c4bb3094254é"), "event_id",
         "not a valid UUID: 'b22cc347-4ca2-4b41-b5e4-c4bb3094254é' (expected 8-4-4-4-12 hex digits)"),
        (lambda e: e.update(extra="x"), "extra", None),
        (lambda e: e["actor"].pop("id"), "actor.id", "missing required field (expected string)"),
        (lambda e: e["actor"].update(type="ADMIN"), "actor.type", None),
        (lambda e: e.update(attributes={"n": 1}), "attributes['n']", "expected string, found int 1"),
        (lambda e: e.update(attributes={1: "v"}), "attributes", "map keys must be strings, found int 1"),
    ],
    ids=["string", "nullable-string", "map-value", "map-key", "uuid-short", "uuid-separator", "uuid-not-hex",
         "uuid-non-ascii", "unknown-field", "missing", "enum", "map-value-type", "map-key-type"],
)
def test_invalid_events_word_for_word(edit, path: str, problem: str | None) -> None:
    codec = default_codec()
    event = changed(edit)
    with pytest.raises(InvalidEventError) as caught:
        codec.encode(event)
    assert caught.value.path == path
    if problem is not None:
        assert caught.value.problem == problem
    assert outcome(codec.encode, event) == outcome(codec.encode_checked, event)


@pytest.mark.parametrize("value", [b"\x00" * 31, b"\x00" * 33, "x" * 32, bytearray(31), memoryview(bytes(32))])
def test_bytes_of_another_type_or_fixed_of_another_size_get_the_checked_writers_outcome(value: Any) -> None:
    schema = parsed("sealed_event")
    encode, _ = encoder(schema)
    record = dict(SEALED, prev_hash=value)
    assert outcome(encode, record) == outcome(CountingFallback(schema), record)
    fixed = fastavro.parse_schema({"type": "fixed", "name": "Hash", "size": 32})
    encode_fixed, _ = encoder(fixed)
    assert outcome(encode_fixed, value) == outcome(CountingFallback(fixed), value)


def test_int_subclasses_go_to_the_checked_writer() -> None:
    schema = fastavro.parse_schema(INTEGERS)
    encode, fallback = encoder(schema)
    record = {"i": Level.ONE, "l": Level.ONE, "t": 1_735_689_600_000_000, "m": 1_735_689_600_000}
    assert encode(record) == fastavro_bytes(schema, {**record, "i": 1, "l": 1})
    assert fallback.calls == 1


def test_every_position_of_a_uuid_is_checked() -> None:
    codec = default_codec()
    text = VALID["event_id"]
    for position in range(36):
        for replacement in ("0", "-", "g", "é"):
            event_id = text[:position] + replacement + text[position + 1:]
            event = dict(VALID, event_id=event_id)
            assert outcome(codec.encode, event) == outcome(codec.encode_checked, event)
            valid = replacement == ("-" if position in (8, 13, 18, 23) else "0")
            assert isinstance(outcome(codec.encode, event), bytes) == valid, event_id


# -- the audit event through the codec: what a service's emit runs ---------------------------------


@pytest.fixture(scope="module")
def event_encoder() -> tuple[Callable[[Any], bytes], CountingFallback, Any]:
    codec = default_codec()
    fallback = CountingFallback(codec.schema.parsed)
    return compile_native_encoder(codec.schema.parsed, b"", fallback), fallback, codec.schema.parsed


def test_generated_events_take_the_fast_path_and_match_fastavro(event_encoder) -> None:
    encode, fallback, schema = event_encoder
    calls = fallback.calls
    for event in synthetic_events(3000, seed=5):
        assert encode(event) == fastavro_bytes(schema, event)
    assert fallback.calls == calls


@settings(max_examples=300, deadline=None)
@given(valid_events)
def test_valid_events_match_the_checked_writer_and_fastavro(event_encoder, event: dict) -> None:
    # uuid.UUID and datetime values among them: those are handed over, and come back the same
    encode, fallback, schema = event_encoder
    assert encode(event) == fallback(event) == fastavro_bytes(schema, event)


_EVENT_JUNK = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
               | st.binary(max_size=4) | st.lists(st.integers(), max_size=2) | st.uuids()
               | st.dictionaries(st.text(max_size=3), st.text(max_size=3) | st.integers(), max_size=2))
_EVENT_PATHS = [("event_id",), ("occurred_at",), ("actor",), ("actor", "id"), ("actor", "type"),
                ("actor", "source_ip"), ("actor", "session_id"), ("action",), ("resource",), ("resource", "id"),
                ("outcome", "status"), ("outcome", "reason"), ("request_id",), ("attributes",),
                ("attributes", "region"), ("unknown",), ("actor", "unknown"), ("attributes", 7)]


@settings(max_examples=500, deadline=None)
@given(valid_events, st.sampled_from(_EVENT_PATHS), _EVENT_JUNK, st.booleans())
def test_any_damaged_event_gets_the_checked_writers_outcome(event_encoder, event: dict, path: tuple, junk: Any,
                                                            delete: bool) -> None:
    encode, fallback, _ = event_encoder
    damaged = copy.deepcopy(event)
    target = damaged
    for step in path[:-1]:
        target = target.setdefault(step, {})
    if delete:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = junk
    assert outcome(encode, damaged) == outcome(fallback, damaged)
