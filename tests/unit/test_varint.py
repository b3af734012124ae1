"""The one varint codec per language: pipeline.wire.varint (Python) and pipeline/native/varint.pxd (Cython,
reached through the compiled decoder and encoder that use it), on fixed vectors and on the edges of
their one strictness rule (at most 10 bytes, a value that fits in 64 bits)."""

from __future__ import annotations

import fastavro
import pytest

from pipeline.native.avro_writer import compile_native_encoder
from pipeline.wire import varint
from pipeline.wire.codec import CorruptBodyError
from pipeline.wire.flat_decoder import compile_decoder

# (value, its Avro encoding): zig-zag, then little-endian base-128 (Avro 1.11 specification)
VECTORS = [
    (0, "00"), (-1, "01"), (1, "02"), (-2, "03"), (63, "7e"), (-64, "7f"), (64, "8001"), (-65, "8101"),
    (8191, "fe7f"), (8192, "808001"), (2**31 - 1, "feffffff0f"), (-(2**31), "ffffffff0f"),
    (1_735_689_600_000_000, "8080e3a0b7a69506"),
    (2**63 - 1, "feffffffffffffffff01"), (-(2**63), "ffffffffffffffffff01"),
]
# (bytes, value or the problem): padded forms are read, the rule's edges are not
READS = [
    ("8000", 0), ("8a808080808080808000", 5), ("ffffffffffffffffff01", -(2**63)),
    ("ffffffffffffffffff02", "varint value does not fit in 64 bits"),
    ("ffffffffffffffffff81", "varint longer than 10 bytes"),
    ("8a80808080808080808000", "varint longer than 10 bytes"),
    ("", "the record ends inside its varint"), ("80", "the record ends inside its varint"),
]

LONG = fastavro.parse_schema({"type": "record", "name": "L", "fields": [{"name": "v", "type": "long"}]})


@pytest.mark.parametrize(("value", "encoded"), VECTORS)
def test_python_encoding_and_decoding(value: int, encoded: str) -> None:
    data = bytes.fromhex(encoded)
    assert varint.encode_long(value) == data
    assert varint.read_long(data, 0, len(data)) == (value, len(data))
    if value >= 0:
        assert varint.encode_length(value) == data


@pytest.mark.parametrize(("value", "encoded"), VECTORS)
def test_compiled_encoding_and_decoding(value: int, encoded: str) -> None:
    data = bytes.fromhex(encoded)
    assert compile_native_encoder(LONG, b"", lambda _: pytest.fail("handed over"))({"v": value}) == data
    assert compile_decoder(LONG)(data, 0, len(data)) == ((value,), len(data))


@pytest.mark.parametrize(("encoded", "expected"), READS)
def test_both_readers_follow_one_rule(encoded: str, expected: int | str) -> None:
    data = bytes.fromhex(encoded)
    decode = compile_decoder(LONG)
    if isinstance(expected, int):
        assert varint.read_long(data, 0, len(data)) == (expected, len(data))
        assert decode(data, 0, len(data)) == ((expected,), len(data))
    else:
        with pytest.raises(varint.VarintError, match=expected):
            varint.read_long(data, 0, len(data))
        with pytest.raises(CorruptBodyError, match=f"field v: {expected}"):
            decode(data, 0, len(data))


def test_a_varint_must_end_before_the_end_given() -> None:
    with pytest.raises(varint.VarintError, match="ends inside"):
        varint.read_long(bytes.fromhex("8001"), 0, 1)
    assert varint.read_long(bytes.fromhex("ff02"), 1, 2) == (1, 2)


def test_the_length_table_and_the_eight_byte_form_are_the_general_encoding() -> None:
    assert all(varint.LENGTHS[n] == varint.encode_long(n) for n in range(varint.LENGTH_TABLE_SIZE))
    assert varint.encode_length(varint.LENGTH_TABLE_SIZE) == varint.encode_long(varint.LENGTH_TABLE_SIZE)
    for n in (2**48, 1_735_689_600_000_000, 2**55 - 1):
        assert varint.encode_eight_byte_long(n) == varint.encode_long(n)
        assert len(varint.encode_long(n)) == 8
