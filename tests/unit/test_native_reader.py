"""The compiled reader and hashes agree with their readable references.

- FlatDecoder (what compile_decoder returns) gives decode_fields' values for valid records and
  raises decode_fields' CorruptBodyError for truncated, garbled and overlong ones;
- the verifier with its compiled EntryScan reports exactly what it reports with every record
  checked the readable way, on clean and on tampered archives;
- the compiled chain hash and Merkle roots equal chain_hash, RFC 6962's vectors and the readable build.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.archive.container import build_object
from pipeline.archive.retention import ComplianceProfile
from pipeline.wire.codec import CorruptBodyError, default_codec
from pipeline.producer.synthetic import synthetic_events
from pipeline.integrity.chain import ChainHead, chain_hash
from pipeline.integrity.keyring import Keyring, generate_signing_key
from pipeline.integrity.merkle import _levels, leaf_hash, record_leaf_hash, record_tree_root, root_from_leaf_hashes
from pipeline.native.flat_reader import event_chain_hash
from pipeline.native.merkle_native import root_of_leaf_hashes, root_of_record_hashes
from pipeline.wire.catalog import default_catalog
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.wire.sealed import event_payload
from pipeline.wire.flat_decoder import compile_decoder, decode_fields, record_fields
from pipeline.verifier import archive
from pipeline.verifier.archive import ArchiveVerifier, DirectorySource, sink_blocks
from tests.unit.test_merkle import LEAF_INPUTS, REFERENCE_LEAF_HASHES, ROOTS

FLAT_SCHEMAS = {family: default_catalog().latest(family).parsed
                for family in ("sealed_event", "rejection", "checkpoint", "archived_record")}
_VALUES = {
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "bytes": st.binary(max_size=200),
    "string": st.text(max_size=40),
}


def _encode(parsed, record) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


def _outcome(decode, *args):
    # (values, position) or the CorruptBodyError message: what a caller of either decoder sees
    try:
        return decode(*args)
    except CorruptBodyError as exc:
        return f"CorruptBodyError: {exc}"


def _same_as_reference(parsed, data: bytes, start: int, end: int):
    fields = record_fields(parsed)
    native = _outcome(compile_decoder(parsed), data, start, end)
    reference = _outcome(decode_fields, fields, data, start, end)
    assert native == reference
    return native


@pytest.mark.parametrize("family", sorted(FLAT_SCHEMAS))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_valid_truncated_and_garbled_records_decode_as_the_reference_does(family, data):
    parsed = FLAT_SCHEMAS[family]
    record = data.draw(st.fixed_dictionaries({name: _VALUES[kind] for name, kind in record_fields(parsed)}))
    body = _encode(parsed, record)
    prefix, suffix = data.draw(st.binary(max_size=3)), data.draw(st.binary(max_size=3))
    encoded = prefix + body + suffix
    values, position = _same_as_reference(parsed, encoded, len(prefix), len(prefix) + len(body))
    assert values == tuple(record[name] for name, _ in record_fields(parsed)) and position == len(prefix) + len(body)
    # truncated: the record's end moved inside it
    cut = data.draw(st.integers(0, len(body)))
    _same_as_reference(parsed, encoded, len(prefix), len(prefix) + cut)
    # garbled: some bytes replaced
    garbled = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        garbled[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    _same_as_reference(parsed, bytes(garbled), 0, len(garbled))
    # an end past the data: both read only what is there
    _same_as_reference(parsed, body, 0, len(body) + 5)


@pytest.mark.parametrize("family", sorted(FLAT_SCHEMAS))
@settings(max_examples=200, deadline=None)
@given(noise=st.binary(max_size=80))
def test_arbitrary_bytes_decode_or_fail_as_the_reference_does(family, noise):
    _same_as_reference(FLAT_SCHEMAS[family], noise, 0, len(noise))


def _varint(raw: int) -> bytes:
    out = bytearray()
    while raw >= 0x80:
        out.append(raw & 0x7F | 0x80)
        raw >>= 7
    return bytes(out + bytes((raw,)))


def _length(n: int) -> bytes:
    return _varint(2 * n)  # zig-zag of a non-negative length


INT_LONG = {"type": "record", "name": "Pair", "fields": [{"name": "small", "type": "int"},
                                                          {"name": "big", "type": "long"}]}
TEXT = {"type": "record", "name": "Text", "fields": [{"name": "text", "type": "string"},
                                                      {"name": "blob", "type": "bytes"}]}


@pytest.mark.parametrize("data", [
    _varint(2 * (2**31 - 1)) + _varint(0),            # the largest int
    _varint(2 * 2**31) + _varint(0),                  # one past it
    _varint(2 * 2**31 - 1) + _varint(0),              # the smallest int
    _varint(2 * 2**31 + 1) + _varint(0),              # one below it
    _varint(0) + _varint(2**64 - 1),                  # the smallest long: ten bytes, last 0x01
    _varint(0) + _varint(2**64 - 2),                  # the largest long
    _varint(0) + _varint(2**64),                      # 65 bits: last byte 0x02
    _varint(0) + b"\xff" * 9 + b"\x7f",               # ten bytes, value far past 64 bits
    _varint(0) + b"\x80" * 10 + b"\x00",              # eleven bytes
    _varint(0) + b"\x80" * 9 + b"\x00",               # ten bytes of a redundant zero: 0
    _varint(0) + b"\x80\x80",                         # ends inside its varint
    b"",
])
def test_varint_and_int_edges_decode_as_the_reference_does(data):
    _same_as_reference(fastavro.parse_schema(INT_LONG), data, 0, len(data))


@pytest.mark.parametrize("data", [
    _varint(1) + b"\xff",                             # a string length of -1 (zig-zag 1)
    _length(6) + b"\xed\xa0\x80" + _length(0),        # a UTF-16 surrogate is not UTF-8
    _length(4) + b"\xc0\x80" + _length(0),            # an overlong NUL
    _length(6) + "é€".encode()[:-1] + b"!" + _length(0),  # a cut sequence
    _length(10) + "é€".encode() + _length(2) + b"\x00",  # valid multibyte text, then one byte
    _length(2) + b"ok" + _length(20) + b"short",      # a length past the end
    _length(2) + b"ok" + _length(2**62) + b"x",   # a length that overflows position + length
])
def test_lengths_and_utf8_decode_as_the_reference_does(data):
    _same_as_reference(fastavro.parse_schema(TEXT), data, 0, len(data))


def test_a_damaged_record_raises_the_reference_message():
    decode = compile_decoder(fastavro.parse_schema(TEXT))
    with pytest.raises(CorruptBodyError, match=r"field blob: length 5 runs past the end of the record \(3 bytes left\)"):
        decode(_length(1) + b"a" + _length(5) + b"abc", 0, 8)
    with pytest.raises(CorruptBodyError, match="field text: not UTF-8"):
        decode(_length(1) + b"\xff" + _length(0), 0, 3)


def test_bytes_like_input_is_decoded_by_the_reference():
    decode = compile_decoder(fastavro.parse_schema(TEXT))
    data = _length(2) + b"hi" + _length(1) + b"\x00"
    assert decode(bytearray(data), 0, len(data)) == decode(data, 0, len(data)) == (("hi", b"\x00"), len(data))


@settings(max_examples=100, deadline=None)
@given(prev=st.binary(min_size=32, max_size=32), seq=st.integers(0, 2**63 - 1), partition=st.integers(0, 2**31 - 1),
       offset=st.integers(0, 2**63 - 1), timestamp=st.integers(0, 2**63 - 1), event=st.binary(max_size=600))
def test_the_compiled_chain_hash_is_chain_hash(prev, seq, partition, offset, timestamp, event):
    assert event_chain_hash(prev, seq, partition, offset, timestamp, event) == \
        chain_hash(prev, seq, event_payload(partition, offset, timestamp, event))


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_compiled_roots_match_rfc6962_vectors(size):
    assert root_of_leaf_hashes(REFERENCE_LEAF_HASHES[:size]).hex() == ROOTS[size]
    assert root_of_leaf_hashes(tuple(REFERENCE_LEAF_HASHES[:size])).hex() == ROOTS[size]
    assert LEAF_INPUTS  # the vectors' leaves are the published inputs, hashed by leaf_hash


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9, 31, 32, 33, 1000, 2001])
def test_compiled_roots_match_the_readable_build(size):
    hashes = [os.urandom(32) for _ in range(size)]
    assert root_of_leaf_hashes(hashes) == _levels(hashes)[-1][0] == root_from_leaf_hashes(hashes)
    leaves = [record_leaf_hash(value) for value in hashes]
    assert root_of_record_hashes(hashes) == _levels(leaves)[-1][0] == record_tree_root(hashes)


def test_compiled_roots_leave_malformed_input_to_the_reference():
    good = leaf_hash(b"x")
    assert root_of_leaf_hashes([good, good[:31]]) is None
    assert root_of_leaf_hashes([good, bytearray(good)]) is None
    assert root_of_record_hashes(iter([good])) is None
    with pytest.raises(Exception, match="a record leaf is a 32-byte chain hash, found 31 bytes"):
        record_tree_root([good, good[:31]])


# --- the verifier's compiled fast path against its readable path -------------------------------

START_MICROS = 1_767_225_600_000_000
PROFILE = ComplianceProfile("bench", days=1)


class _ReadableOnly:
    """Stands in for EntryScan: accepts nothing, so every record goes through the readable path."""

    def __init__(self, *layout) -> None:
        self.previous_offset = -1

    def expect_offsets(self, first_offset: int, last_offset: int) -> None:
        self.previous_offset = -1

    def follow(self, chain, seq_range) -> None:
        pass

    def scan(self, data, position, end, records):
        return position, 0


def _sealed_partition(key, partition: int, entries: int, every: int = 50) -> list[tuple[int, int, bytes]]:
    codec = default_codec()
    events = [codec.encode(event) for event in synthetic_events(min(entries, 200), seed=partition)]
    chain_id = f"audit.raw/{partition}"
    sealer = ChainSealer(chain_id, partition, key, ChainHead.genesis(chain_id))
    values = []
    for n in range(entries):
        value = events[n % len(events)] if n % 37 != 5 else b"not an event"  # some rejections
        values.append(sealer.seal(value, n, START_MICROS + n).value)
        if n % every == every - 1:
            values.append(sealer.checkpoint(START_MICROS + n).value)
    if entries % every:
        values.append(sealer.checkpoint(START_MICROS + entries).value)
    return [(offset, START_MICROS // 1000, value) for offset, value in enumerate(values)]


def _write(root: Path, partition: int, records, per_object: int) -> None:
    for first in range(0, len(records), per_object):
        obj = build_object("audit.sealed", partition, records[first:first + per_object], profile=PROFILE)
        (root / obj.key).parent.mkdir(parents=True, exist_ok=True)
        (root / obj.key).write_bytes(obj.body)
        (root / obj.manifest_key).write_bytes(obj.manifest_bytes)


@pytest.fixture(scope="module")
def signing():
    key = generate_signing_key()
    return key, Keyring().rotate(key.public_key, START_MICROS - 1)


@pytest.fixture(scope="module")
def sealed(signing):
    return tuple(_sealed_partition(signing[0], 4, 400, every=60))


def _both_reports(root: Path, keyring: Keyring, monkeypatch) -> tuple[dict, dict]:
    native = ArchiveVerifier(keyring).verify(DirectorySource(root)).as_dict()
    with monkeypatch.context() as patch:
        patch.setattr(archive, "EntryScan", _ReadableOnly)
        readable = ArchiveVerifier(keyring).verify(DirectorySource(root)).as_dict()
    return native, readable


def test_a_clean_archive_is_intact_and_its_clean_entries_take_the_compiled_path(tmp_path, signing, monkeypatch):
    key, keyring = signing
    records, other = _sealed_partition(key, 2, 900), _sealed_partition(key, 3, 120)
    _write(tmp_path, 2, records, per_object=400)
    _write(tmp_path, 3, other, per_object=1000)
    readable_calls = []
    original = ArchiveVerifier._record
    monkeypatch.setattr(ArchiveVerifier, "_record", lambda self, *args: (readable_calls.append(args[0]),
                                                                         original(self, *args))[1])
    report = ArchiveVerifier(keyring).verify(DirectorySource(tmp_path))
    assert report.intact, report.as_dict()["violations"]
    assert report.records == len(records) + len(other)
    # only checkpoints, rejections and each object's first entry are left to Python
    assert len(readable_calls) < len(records) // 5
    monkeypatch.undo()
    native, readable = _both_reports(tmp_path, keyring, monkeypatch)
    assert native == readable


def test_objects_of_several_blocks_are_scanned_across_block_boundaries(tmp_path, signing, monkeypatch):
    key, keyring = signing
    _write(tmp_path, 1, _sealed_partition(key, 1, 2500, every=400), per_object=5000)
    body = next(tmp_path.rglob("*.avro")).read_bytes()
    assert len(list(sink_blocks(body))) > 1
    native, readable = _both_reports(tmp_path, keyring, monkeypatch)
    assert native["intact"] and native == readable


def _replace_value(records, index, value):
    records[index] = (records[index][0], records[index][1], value)


def _tamper(records: list, rng: random.Random, how: str) -> None:
    index = rng.randrange(len(records))
    value = records[index][2]
    if how == "flip":
        garbled = bytearray(value)
        garbled[rng.randrange(len(garbled))] ^= 1 << rng.randrange(8)
        _replace_value(records, index, bytes(garbled))
    elif how == "truncate":
        _replace_value(records, index, value[:rng.randrange(len(value))])
    elif how == "extend":
        _replace_value(records, index, value + b"\x00")
    elif how == "drop":
        del records[index]
    elif how == "duplicate":
        records.insert(index, records[index])
    elif how == "swap" and index + 1 < len(records):
        records[index], records[index + 1] = records[index + 1], records[index]
    elif how == "replay":
        records.insert(index, records[rng.randrange(index + 1)])
    elif how == "offset" and index > 0:
        # a record moved back onto (or before) its predecessor's offset, its value untouched
        records[index] = (records[index - 1][0] - rng.randrange(2), records[index][1], value)
    elif how == "foreign":
        records.insert(index, (0, 0, _sealed_partition(generate_signing_key(), 9, 3)[rng.randrange(3)][2]))
    if how in ("drop", "duplicate", "replay", "foreign") and rng.random() < 0.7:
        # renumber the offsets so the object itself is well formed; else the offsets report too
        records[:] = [(offset, ts, value) for offset, (_, ts, value) in enumerate(records)]


TAMPERS = ("flip", "truncate", "extend", "drop", "duplicate", "swap", "replay", "foreign", "offset")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), hows=st.lists(st.sampled_from(TAMPERS), min_size=1, max_size=3))
def test_tampered_archives_are_reported_exactly_as_the_readable_path_reports_them(seed, hows, signing, sealed,
                                                                                 tmp_path_factory):
    keyring = signing[1]
    rng = random.Random(seed)
    records = list(sealed)
    for how in hows:
        _tamper(records, rng, how)
    root = tmp_path_factory.mktemp("tampered")
    try:
        _write(root, 4, sorted(records, key=lambda record: record[0]) if rng.random() < 0.5 else records,
               per_object=150)
    except ValueError:
        return  # build_object refuses what a sink could never write
    patch = pytest.MonkeyPatch()
    try:
        native, readable = _both_reports(root, keyring, patch)
    finally:
        patch.undo()
    assert native == readable
