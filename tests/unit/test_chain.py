"""The per-partition hash chain: fixed vectors, the documented encoding, the head.

How a chain's records are classified (every violation kind) is the state machine's:
tests/unit/test_chain_state.py."""

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.integrity.chain import (
    GENESIS_HASH,
    GENESIS_SEQ,
    MAX_SEQ,
    ChainHead,
    chain_hash,
)
from pipeline.integrity.errors import MalformedInputError

CHAIN_ID = "audit.raw/0"
# Computed once with this implementation, then frozen: a change to the encoding breaks every
# chain already sealed, and must show up here first.
VECTOR_PAYLOADS = [b"", b"hello", bytes(range(256))]
VECTOR_HASHES = [
    "f4a2370004763b49ccb697e954a7d5ab768042e8bc4c39f65afd0cdf083ca376",
    "fd1c4dbf3f285ce7e1f486ccb8adbb97db999112f535c2e7f2221e568921e922",
    "c73e40c6ed251b713c1d779395690693307b7b6533bd7151a7b5a7cbc039291e",
]
MAX_SEQ_VECTOR = "2daf6536137a60da417a3262ee0d755c6771105a6d7ac2cd82895b63842f2a08"


def documented_chain_hash(prev_hash: bytes, seq: int, payload: bytes) -> bytes:
    """The chain hash rebuilt from the module docstring alone, as another implementation would."""
    tag = b"auditseal/chain/v1\x00"
    assert len(tag) == 19
    encoded = tag + prev_hash + struct.pack(">Q", seq) + struct.pack(">Q", len(payload)) + payload
    return hashlib.sha256(encoded).digest()


def test_genesis_hash_is_32_zero_bytes() -> None:
    assert GENESIS_HASH == b"\x00" * 32


def test_chain_hash_fixed_vectors() -> None:
    head = ChainHead.genesis(CHAIN_ID)
    for seq, (payload, expected) in enumerate(zip(VECTOR_PAYLOADS, VECTOR_HASHES, strict=True)):
        head = head.next(payload)
        assert (head.seq, head.hash.hex()) == (seq, expected)
    assert chain_hash(bytes(range(32)), MAX_SEQ, b"x").hex() == MAX_SEQ_VECTOR


def test_fixed_vectors_follow_the_documented_encoding() -> None:
    prev = GENESIS_HASH
    for seq, (payload, expected) in enumerate(zip(VECTOR_PAYLOADS, VECTOR_HASHES, strict=True)):
        prev = documented_chain_hash(prev, seq, payload)
        assert prev.hex() == expected
    assert documented_chain_hash(bytes(range(32)), MAX_SEQ, b"x").hex() == MAX_SEQ_VECTOR


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32), st.integers(0, MAX_SEQ), st.binary(max_size=600))
def test_chain_hash_is_the_documented_encoding(prev: bytes, seq: int, payload: bytes) -> None:
    assert chain_hash(prev, seq, payload) == documented_chain_hash(prev, seq, payload)


def test_first_record_is_seq_0_extending_genesis() -> None:
    genesis = ChainHead.genesis(CHAIN_ID)
    assert (genesis.seq, genesis.hash, genesis.is_genesis) == (GENESIS_SEQ, GENESIS_HASH, True)
    first = genesis.next(b"e")
    assert (first.chain_id, first.seq, first.is_genesis) == (CHAIN_ID, 0, False)
    assert first.hash == chain_hash(GENESIS_HASH, 0, b"e")
    assert first.next(b"f") == ChainHead(CHAIN_ID, 1, chain_hash(first.hash, 1, b"f"))


@pytest.mark.parametrize(
    ("prev", "seq", "payload", "message"),
    [
        (b"\x00" * 31, 0, b"", "prev_hash must be 32 bytes, found 31 bytes"),
        (b"\x00" * 33, 0, b"", "prev_hash must be 32 bytes, found 33 bytes"),
        ("00" * 32, 0, b"", "prev_hash must be 32 bytes, found str"),
        (GENESIS_HASH, -1, b"", r"seq must be in \[0, 2\*\*64 - 1\], found -1"),
        (
            GENESIS_HASH,
            2**64,
            b"",
            r"seq must be in \[0, 2\*\*64 - 1\], found 18446744073709551616",
        ),
        (GENESIS_HASH, True, b"", "seq must be an integer, found bool"),
        (GENESIS_HASH, 0, "text", "payload must be bytes, found str"),
    ],
)
def test_chain_hash_rejects_what_it_cannot_encode(
    prev: bytes, seq: int, payload: bytes, message: str
) -> None:
    with pytest.raises(MalformedInputError, match=message):
        chain_hash(prev, seq, payload)


def test_a_chain_cannot_grow_past_the_largest_seq() -> None:
    last = ChainHead(CHAIN_ID, MAX_SEQ, b"\x01" * 32)
    with pytest.raises(MalformedInputError, match="seq must be in"):
        last.next(b"one too many")


def test_chain_head_validates_its_fields() -> None:
    with pytest.raises(MalformedInputError, match="chain_id must be a non-empty string"):
        ChainHead("", 0, b"\x01" * 32)
    with pytest.raises(MalformedInputError, match="hash must be 32 bytes"):
        ChainHead(CHAIN_ID, 0, b"\x01")
    with pytest.raises(
        MalformedInputError, match="an empty chain's head hash must be GENESIS_HASH"
    ):
        ChainHead(CHAIN_ID, GENESIS_SEQ, b"\x01" * 32)
    with pytest.raises(MalformedInputError, match="seq must be in"):
        ChainHead(CHAIN_ID, -2, b"\x01" * 32)
