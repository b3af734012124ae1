"""The generated fast path writes exactly fastavro's bytes, and agrees with the checked writer on everything."""

from __future__ import annotations

import copy
import io
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.wire.codec import default_codec
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.specialised_writer import compile_encoder, writer_source
from pipeline.wire.validation import InvalidEventError, compile_writer
from tests.unit.test_codec import valid_events
from tests.unit.test_validation import CASES, VALID, changed


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


@pytest.fixture(scope="module")
def event_encoder() -> tuple[Callable[[Any], bytes], CountingFallback, Any]:
    parsed = default_codec().schema.parsed
    fallback = CountingFallback(parsed)
    return compile_encoder(parsed, b"", fallback), fallback, parsed


def test_generated_events_take_the_fast_path_and_match_fastavro(event_encoder) -> None:
    encode, fallback, parsed = event_encoder
    calls = fallback.calls
    for event in synthetic_events(3000, seed=5):
        assert encode(event) == fastavro_bytes(parsed, event)
    assert fallback.calls == calls


@pytest.mark.parametrize(
    "edit",
    [
        lambda e: e.update(event_id=uuid.UUID(VALID["event_id"])),
        lambda e: e.update(occurred_at=datetime(2025, 1, 1, tzinfo=timezone.utc)),
        lambda e: e.update(action="x" * 5000),
        lambda e: e.update(attributes=OrderedDict(region="eu")),
        lambda e: e.update(actor=MappingProxyType(dict(VALID["actor"]))),
    ],
    ids=["uuid-object", "datetime", "long-string", "ordered-dict", "mapping-proxy"],
)
def test_unusual_values_go_to_the_checked_writer_and_encode_the_same(event_encoder, edit) -> None:
    encode, fallback, parsed = event_encoder
    event = changed(edit)
    calls = fallback.calls
    expected = fastavro_bytes(parsed, {**event, "actor": dict(event["actor"])})
    assert encode(event) == expected
    assert fallback.calls == calls + 1


@pytest.mark.parametrize(("edit", "path", "fragment"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_invalid_events_get_the_checked_writers_error(event_encoder, edit, path, fragment) -> None:
    encode, _, _ = event_encoder
    with pytest.raises(InvalidEventError) as caught:
        encode(changed(edit))
    assert (caught.value.path, fragment in caught.value.problem) == (path, True)


SURROGATE = "surrogates not allowed at index 0"


@pytest.mark.parametrize(
    ("attributes", "path", "problem"),
    [
        ({"note": "\ud800"}, "attributes['note']", f"string is not valid Unicode text ({SURROGATE})"),
        ({"\ud800": "v"}, "attributes", f"map key '\\ud800' is not valid Unicode text ({SURROGATE})"),
    ],
    ids=["value", "key"],
)
def test_lone_surrogates_in_a_map_are_invalid_events(attributes: dict, path: str, problem: str) -> None:
    codec = default_codec()
    for encode in (codec.encode, codec.encode_checked):
        with pytest.raises(InvalidEventError) as caught:
            encode(dict(VALID, attributes=attributes))
        assert (caught.value.path, caught.value.problem) == (path, problem)


@settings(max_examples=300, deadline=None)
@given(valid_events)
def test_valid_events_match_fastavro(event_encoder, event: dict) -> None:
    encode, fallback, parsed = event_encoder
    assert encode(event) == fallback(event) == fastavro_bytes(parsed, event)


_JUNK = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
         | st.binary(max_size=4) | st.lists(st.integers(), max_size=2) | st.uuids()
         | st.dictionaries(st.text(max_size=3), st.text(max_size=3) | st.integers(), max_size=2))
_PATHS = [("event_id",), ("occurred_at",), ("actor",), ("actor", "id"), ("actor", "type"), ("actor", "source_ip"),
          ("actor", "session_id"), ("action",), ("resource",), ("resource", "id"), ("outcome", "status"),
          ("outcome", "reason"), ("request_id",), ("attributes",), ("attributes", "region"), ("unknown",),
          ("actor", "unknown"), ("attributes", 7)]


@settings(max_examples=500, deadline=None)
@given(valid_events, st.sampled_from(_PATHS), _JUNK, st.booleans())
def test_any_damaged_event_gets_the_same_outcome_from_both_writers(
    event_encoder, event: dict, path: tuple, junk: Any, delete: bool
) -> None:
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


def test_generic_schema_source_delegates_what_it_does_not_specialise() -> None:
    source, _ = writer_source(GENERIC)
    assert source.startswith("def encode(value):")
    assert "_write" in source  # fixed, bytes, the three-branch union and the recursive child


def _in_range(record: dict[str, Any], millis: int) -> dict[str, Any]:
    # fastavro's random longs fall outside the accepted timestamp range; absent "sealed": the default.
    record["at"] = millis
    if millis % 2:
        record.pop("sealed")
    if record["child"] is not None:
        _in_range(record["child"], millis + 1)
    return record


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=946_684_800_000, max_value=4_102_444_799_000))
def test_generic_schema_matches_fastavro(millis: int) -> None:
    fallback = CountingFallback(GENERIC)
    encode = compile_encoder(GENERIC, b"\x01\x02", fallback)
    for record in fastavro.utils.generate_many(GENERIC, 3):
        record = _in_range(record, millis)
        assert encode(record) == b"\x01\x02" + fastavro_bytes(GENERIC, record)
    assert fallback.calls == 0  # the generated code wrote them, not the checked writer
