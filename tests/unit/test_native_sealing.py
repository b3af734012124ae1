"""The compiled sealed entry (pipeline.native.sealing.seal_event): a fixed vector, the values it refuses,
and the sealer's guards around it. Against its references on generated input:
tests/differential/test_native_sealing.py."""

from __future__ import annotations

import hashlib

import pytest

from pipeline.errors import ConfigError
from pipeline.integrity.chain import GENESIS_HASH, chain_hash
from pipeline.native.sealing import seal_event
from pipeline.sealer import chain_sealer
from pipeline.wire.sealed import sealed_codecs

CODECS = sealed_codecs()
HEADER = bytes(CODECS.event.header)


def test_a_fixed_vector() -> None:
    # The hash input spelled out byte by byte (pipeline.integrity.chain's module doc), and the
    # SealedEvent body as Avro zig-zag varints: 11 -> 0x16, seq 5 -> 0x0a, 32 -> 0x40, ...
    event = b"\xc3\x01" + bytes(8) + b"body"
    payload = b"\x01" + (3).to_bytes(4, "big") + (7).to_bytes(8, "big") + (1_000_000).to_bytes(8, "big") + event
    hashed = (b"auditseal/chain/v1\x00" + GENESIS_HASH + (5).to_bytes(8, "big") + len(payload).to_bytes(8, "big")
              + payload)
    value, digest = seal_event(HEADER, b"audit.raw/3", GENESIS_HASH, 5, 3, 7, 1_000_000, event)
    assert digest == hashlib.sha256(hashed).digest()
    assert digest.hex() == "05cd2e1c2b7c92a980da0560f4d6bd8d6286647bf6b5640f3f27ad2c2f478c69"
    assert value == (HEADER + b"\x16audit.raw/3" + b"\x0a" + b"\x40" + GENESIS_HASH + b"\x40" + digest
                     + b"\x06" + b"\x0e" + b"\x80\x89\x7a" + b"\x1c" + event)


@pytest.mark.parametrize("args, message", [
    ((b"\x00" * 31, 0, 0, 0, 0), "prev_hash must be 32 bytes"),
    ((GENESIS_HASH, -1, 0, 0, 0), "must not be negative"),
    ((GENESIS_HASH, 0, 0, -1, 0), "must not be negative"),
    ((GENESIS_HASH, 0, 0, 0, -1000), "must not be negative"),
    ((GENESIS_HASH, 0, 2**31, 0, 0), "source_partition must be in"),
    ((GENESIS_HASH, 0, -1, 0, 0), "source_partition must be in"),
])
def test_values_the_references_refuse_are_refused(args: tuple, message: str) -> None:
    prev_hash, seq, partition, offset, micros = args
    with pytest.raises(ValueError, match=message):
        seal_event(HEADER, b"c", prev_hash, seq, partition, offset, micros, b"e")


def test_a_sealed_event_schema_of_another_layout_is_refused() -> None:
    # seal_event writes a fixed field order; a schema that moved on must stop the sealer, loudly.
    class Moved:
        class event:
            header = HEADER
            class schema:
                name = "dev.auditseal.SealedEvent"
                parsed = {"fields": [{"name": "seq", "type": "long"}, {"name": "chain_id", "type": "string"}]}

    with pytest.raises(ConfigError, match="update it with the schema"):
        chain_sealer._event_header.__wrapped__(Moved)


def test_a_raw_record_without_timestamp_is_sealed_as_a_rejection_not_a_crash() -> None:
    # Kafka's "no timestamp" is -1 ms; the chain payload's time is unsigned.
    from pipeline.integrity.chain import ChainHead
    from pipeline.integrity.keyring import generate_signing_key
    from pipeline.producer.synthetic import synthetic_events
    from pipeline.sealer.chain_sealer import ChainSealer
    from pipeline.wire.codec import default_codec
    from pipeline.wire.sealed import EVENT_KIND, REJECTION_KIND, entry_payload

    value = default_codec().encode(next(iter(synthetic_events(1, seed=1))))
    sealer = ChainSealer("audit.raw/0", 0, generate_signing_key(), ChainHead.genesis("audit.raw/0"))
    refused = sealer.seal(value, 7, -1000)
    assert refused.kind == REJECTION_KIND and refused.source_timestamp_micros == 0
    record = CODECS.rejection.decode(refused.value)
    assert "no usable timestamp (-1000 µs)" in record["reason"] and record["source_timestamp_micros"] == 0
    assert record["raw_sha256"] == hashlib.sha256(value).digest() and record["source_offset"] == 7
    assert record["hash"] == chain_hash(GENESIS_HASH, 0, entry_payload(REJECTION_KIND, record))
    assert sealer.seal(value, 8, 1_000).kind == EVENT_KIND  # the chain goes on
