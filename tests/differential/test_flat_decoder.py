"""The compiled flat decoder (FlatDecoder, from compile_decoder) reads exactly fastavro's values from valid
records, and names the damage (as the reference decode_fields words it) in
damaged ones where fastavro would crash or return a short or wrapped value."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.archive.container import archived_record_schema, build_object, read_archived_records
from pipeline.verifier.archive import archived_values
from pipeline.wire.catalog import default_catalog
from pipeline.wire.codec import CorruptBodyError, DecodeError
from pipeline.wire.flat_decoder import compile_decoder, decode_fields, record_fields
from pipeline.wire.sealed import ENTRY_FIELDS, entry_payload, entry_payload_of_fields, sealed_codecs
from tests.unit.test_sink_objects import PROFILE, _records

pytestmark = pytest.mark.differential

FLAT_SCHEMAS = {family: default_catalog().latest(family).parsed
                for family in ("sealed_event", "rejection", "checkpoint", "archived_record")}

_VALUES = {
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "bytes": st.binary(max_size=300),
    "string": st.text(max_size=60),
}


def _records_of(parsed: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: _VALUES[kind] for name, kind in record_fields(parsed)})


def _fastavro_bytes(parsed: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


def _fastavro_values(parsed: Any, data: bytes) -> tuple[Any, ...]:
    return tuple(fastavro.schemaless_reader(io.BytesIO(data), parsed).values())


def _zigzag_varint(value: int) -> bytes:
    n, out = (value << 1) ^ (value >> 63), bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes((n,)))


@pytest.mark.parametrize("family", sorted(FLAT_SCHEMAS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_values_are_fastavros(family, data):
    parsed = FLAT_SCHEMAS[family]
    record = data.draw(_records_of(parsed))
    encoded = b"pad" + _fastavro_bytes(parsed, record)
    values, end = compile_decoder(parsed)(encoded, 3, len(encoded))
    assert values == _fastavro_values(parsed, encoded[3:]) == tuple(record[name] for name, _ in record_fields(parsed))
    assert end == len(encoded)
    assert decode_fields(record_fields(parsed), encoded, 3, len(encoded)) == (values, end)


def test_timestamp_sized_varints_decode_the_same_after_they_are_cached():
    parsed = FLAT_SCHEMAS["sealed_event"]
    decode = compile_decoder(parsed)
    base = {"chain_id": "audit.raw/0", "seq": 70_000, "prev_hash": bytes(32), "hash": bytes(range(32)),
            "source_partition": 0, "source_offset": 2**20, "event": b"\xc3\x01event"}
    # the same high bytes with different low bytes, then the boundary values of 8-byte varints
    micros = [1_767_225_600_000_000 + n for n in (0, 1, 127, 128, 16_383, 16_384, 2_097_151)]
    micros += [2**27, -(2**27), 2**48 - 1, -(2**48), 2**55 - 1, 2**55, -(2**55) - 1]
    for value in micros * 2:
        record = dict(base, source_timestamp_micros=value)
        encoded = _fastavro_bytes(parsed, record)
        expected = tuple(record[name] for name, _ in record_fields(parsed))
        assert decode(encoded, 0, len(encoded)) == (expected, len(encoded))


def test_real_sealed_records_decode_as_the_codecs_decode_them():
    codecs = sealed_codecs()
    kinds = set()
    for _, _, value in _records():
        kind, record = codecs.decode(value)
        assert codecs.decode_fields(value) == (kind, tuple(record.values()))
        if kind != b"checkpoint":
            _, fields = codecs.decode_fields(value)
            assert fields[:len(ENTRY_FIELDS)] == tuple(record[name] for name in ENTRY_FIELDS)
            assert entry_payload_of_fields(kind, fields) == entry_payload(kind, record)
        else:
            assert codecs.record_of_fields(kind, codecs.decode_fields(value)[1]) == record
        kinds.add(kind)
    assert kinds == {b"event", b"rejection", b"checkpoint"}


@pytest.mark.parametrize("codec", ["deflate", "null"])
def test_archived_values_are_the_records_fastavro_reads(codec):
    body = build_object("audit.sealed", 4, _records(), profile=PROFILE, codec=codec).body
    assert list(archived_values(body)) == [(r["offset"], r["value"]) for r in read_archived_records(body)]


def _expect_damage(decode, fields, data: bytes, message: str) -> None:
    with pytest.raises(CorruptBodyError, match=message):
        decode(data, 0, len(data))
    with pytest.raises(CorruptBodyError, match=message):
        decode_fields(fields, data, 0, len(data))


def test_every_truncation_is_named_never_an_index_error():
    decode = compile_decoder(FLAT_SCHEMAS["sealed_event"])
    value = _records()[0][2][10:]
    for cut in range(len(value)):
        with pytest.raises(CorruptBodyError, match="field "):
            decode(value[:cut], 0, cut)
        # the same bytes inside a larger buffer, bounded by ``end``: the bound is what counts
        with pytest.raises(CorruptBodyError, match="field |past its end"):
            decode(value, 0, cut)


def test_damaged_fields_are_named():
    parsed = FLAT_SCHEMAS["checkpoint"]  # chain_id string, first_seq long, ...
    decode, fields = compile_decoder(parsed), record_fields(parsed)
    _expect_damage(decode, fields, b"\xff" * 11, "field chain_id: varint longer than 10 bytes")
    _expect_damage(decode, fields, b"\x02a" + b"\xff" * 9 + b"\x02", "field first_seq: varint value does not fit in 64 bits")
    _expect_damage(decode, fields, b"\x01", "field chain_id: negative length -1")
    _expect_damage(decode, fields, b"\x0aab", r"field chain_id: length 5 runs past the end of the record \(2 bytes left\)")
    _expect_damage(decode, fields, b"\x04\xff\xfe", "field chain_id: not UTF-8")
    rejection = FLAT_SCHEMAS["rejection"]
    head = b"\x02a\x00\x00\x00"  # chain_id "a", seq 0, empty prev_hash and hash
    _expect_damage(compile_decoder(rejection), record_fields(rejection), head + _zigzag_varint(2**31),
                   "field source_partition: 2147483648 is outside the 32-bit int range")


def test_trailing_bytes_and_unknown_headers_are_decode_errors():
    codecs = sealed_codecs()
    value = _records()[0][2]
    with pytest.raises(CorruptBodyError, match="1 unexpected trailing byte"):
        codecs.decode_fields(value + b"\x00")
    with pytest.raises(DecodeError, match="expected marker c301"):
        codecs.decode_fields(b"\x00\x01" + value[2:])
    with pytest.raises(ValueError, match="not an audit.sealed record"):
        codecs.decode_fields(value[:2] + bytes(8) + value[10:])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_the_reference_values_or_a_named_error(data):
    for parsed in FLAT_SCHEMAS.values():
        fields = record_fields(parsed)
        try:
            expected = decode_fields(fields, data, 0, len(data))
        except CorruptBodyError:
            with pytest.raises(CorruptBodyError):
                compile_decoder(parsed)(data, 0, len(data))
            continue
        assert compile_decoder(parsed)(data, 0, len(data)) == expected
        values, end = expected
        assert values == _fastavro_values(parsed, data[:end])


def test_a_block_with_bytes_after_its_records_is_rejected():
    records = [{"topic": "t", "partition": 0, "offset": n, "timestamp_micros": 0, "kind": "event", "value": b"v"}
               for n in range(3)]
    out = io.BytesIO()
    fastavro.writer(out, archived_record_schema(), records, codec="null")
    body = out.getvalue()
    # the block header: count 3 (0x06), then the block's byte size; grow the block by one byte
    size = len(_fastavro_bytes(archived_record_schema(), records[0])) * 3
    block = b"\x06" + _zigzag_varint(size) + body[body.index(b"\x06" + _zigzag_varint(size)) + 2:][:size]
    start = body.index(block)
    damaged = body[:start] + b"\x06" + _zigzag_varint(size + 1) + block[2:] + b"\x00" + body[start + len(block):]
    assert len(list(read_archived_records(damaged))) == 3  # fastavro ignores the extra byte
    with pytest.raises(CorruptBodyError, match="1 bytes after the last of the 3 records"):
        list(archived_values(damaged))


def test_schemas_outside_the_flat_subset_are_not_specialised():
    assert compile_decoder(default_catalog().latest("audit_event").parsed) is None
    assert record_fields({"type": "record", "name": "r", "fields": [{"name": "x", "type": "double"}]}) is None
