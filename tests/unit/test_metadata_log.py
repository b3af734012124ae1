"""Decoding KRaft metadata-log batches: fixed byte vectors built field by field from Kafka's record schemas."""

from __future__ import annotations

import struct

import pytest

from pipeline.access.metadata_log import MetadataLogError, decode_record, is_secret_config, read_batch


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _varint(n: int) -> bytes:
    return _uvarint((n << 1) ^ (n >> 63))


def _string(text: str | None) -> bytes:
    return _uvarint(0) if text is None else _uvarint(len(text.encode()) + 1) + text.encode()


def _bytes(raw: bytes) -> bytes:
    return _uvarint(len(raw) + 1) + raw


def _value(api_key: int, body: bytes) -> bytes:
    return _uvarint(1) + _uvarint(api_key) + _uvarint(0) + body + _uvarint(0)  # tagged fields: none


SCRAM = _value(11, _string("sealer") + b"\x02" + _bytes(b"salt") + _bytes(b"s" * 64) + _bytes(b"k" * 64)
               + struct.pack(">i", 8192))
ACL = _value(18, bytes(range(16)) + b"\x04" + _string("kafka-cluster") + b"\x03" + _string("User:admin")
             + _string("*") + b"\x0b" + b"\x03")
CONFIG = _value(4, b"\x02" + _string("audit.sealed") + _string("retention.ms") + _string("1000"))
DELETED_CONFIG = _value(4, b"\x02" + _string("audit.sealed") + _string("retention.ms") + _string(None))


def _batch(base_offset: int, values: list[bytes], *, attributes: int = 0, timestamp: int = 1_800_000_000_000) -> bytes:
    records = b""
    for delta, value in enumerate(values):
        body = b"\x00" + _varint(delta) + _varint(delta) + _varint(-1) + _varint(len(value)) + value + _uvarint(0)
        records += _varint(len(body)) + body
    after_length = (struct.pack(">ibI", 0, 2, 0) + struct.pack(">hiqqqhii", attributes, len(values) - 1, timestamp,
                                                               timestamp, -1, -1, -1, len(values)) + records)
    return struct.pack(">qi", base_offset, len(after_length)) + after_length


def test_each_decoded_record_kind():
    assert decode_record(SCRAM) == (11, {"user": "sealer", "mechanism": "SCRAM-SHA-512", "salt": b"salt".hex(),
                                         "iterations": 8192})
    assert decode_record(ACL) == (18, {"acl_id": bytes(range(16)).hex(), "resource_type": "cluster",
                                       "resource": "kafka-cluster", "pattern": "literal", "principal": "User:admin",
                                       "host": "*", "operation": "alter_configs", "permission": "allow"})
    assert decode_record(CONFIG)[1] == {"resource_type": "topic", "resource": "audit.sealed", "key": "retention.ms",
                                        "value": "1000"}
    assert decode_record(DELETED_CONFIG)[1]["value"] is None
    assert decode_record(_value(3, b"\x00" * 8)) is None  # PartitionRecord: not ours to decode


def test_a_batch_yields_its_changes_with_offsets_and_times():
    data = _batch(40, [SCRAM, _value(3, b""), ACL]) + _batch(43, [CONFIG])
    first = read_batch(data, 0)
    assert (first.base_offset, first.last_offset) == (40, 42)
    assert [(c.kind, c.offset, c.timestamp_ms) for c in first.changes] == [
        ("scram", 40, 1_800_000_000_000), ("acl", 42, 1_800_000_000_002)]
    second = read_batch(data, first.size)
    assert [c.kind for c in second.changes] == ["config"] and first.size + second.size == len(data)
    assert read_batch(data, len(data)) is None


def test_an_incomplete_batch_waits_and_a_control_batch_holds_nothing():
    data = _batch(0, [SCRAM])
    assert read_batch(data[:-1], 0) is None  # still being written
    assert read_batch(data + b"\0" * 100, len(data)) is None  # zero fill
    assert read_batch(_batch(5, [b"\x00\x00\x00\x00"], attributes=0x20), 0).changes == ()


def test_an_unknown_codec_or_magic_is_one_clear_error():
    with pytest.raises(MetadataLogError, match="compressed with codec 4"):
        read_batch(_batch(0, [SCRAM], attributes=4), 0)
    broken = bytearray(_batch(0, [SCRAM]))
    broken[16] = 1
    with pytest.raises(MetadataLogError, match="magic 1, expected 2"):
        read_batch(bytes(broken), 0)


def test_secret_config_values_are_recognised():
    assert is_secret_config("listener.name.client.scram-sha-512.sasl.jaas.config")
    assert is_secret_config("ssl.keystore.password") and not is_secret_config("retention.ms")
