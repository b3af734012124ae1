"""The per-partition hash chain: fixed vectors, the documented encoding, every violation kind."""

import dataclasses
import hashlib
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import AuditSealError
from pipeline.integrity.chain import (
    GENESIS_HASH,
    GENESIS_SEQ,
    MAX_SEQ,
    ChainHead,
    ChainLink,
    chain_hash,
    verify_link,
)
from pipeline.integrity.errors import (
    ChainDuplicateError,
    ChainError,
    ChainForkError,
    ChainGapError,
    ChainHashMismatchError,
    ChainMismatchError,
    ChainReorderError,
    ChainViolation,
    MalformedInputError,
)

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


def sealed_chain(payloads: list[bytes]) -> list[ChainLink]:
    """The integrity fields a sealer would attach to these payloads, in order."""
    head = ChainHead.genesis(CHAIN_ID)
    links = []
    for payload in payloads:
        following = head.next(payload)
        links.append(ChainLink(CHAIN_ID, following.seq, head.hash, following.hash))
        head = following
    return links


def verify_all(links: list[ChainLink], payloads: list[bytes]) -> ChainHead:
    head = ChainHead.genesis(CHAIN_ID)
    for link, payload in zip(links, payloads, strict=True):
        head = verify_link(head, link, payload)
    return head


PAYLOADS = [f"event {i}: user{i} read doc{i}".encode() for i in range(6)]


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


def test_an_intact_chain_verifies_to_its_last_head() -> None:
    links = sealed_chain(PAYLOADS)
    head = verify_all(links, PAYLOADS)
    assert head == ChainHead(CHAIN_ID, len(PAYLOADS) - 1, links[-1].hash)


def test_chain_errors_are_audit_seal_errors_with_stable_kinds() -> None:
    assert issubclass(ChainError, AuditSealError)
    kinds = {
        ChainGapError: "gap",
        ChainDuplicateError: "duplicate",
        ChainReorderError: "reorder",
        ChainHashMismatchError: "hash_mismatch",
        ChainForkError: "fork",
        ChainMismatchError: "wrong_chain",
    }
    assert {error.kind.value for error in kinds} == set(kinds.values())
    assert {error: error.kind.value for error in kinds} == kinds
    assert {kind.value for kind in ChainViolation} == set(kinds.values())


def test_a_dropped_record_is_a_gap_at_the_next_one() -> None:
    links = sealed_chain(PAYLOADS)
    head = verify_all(links[:2], PAYLOADS[:2])
    with pytest.raises(ChainGapError) as caught:
        verify_link(head, links[3], PAYLOADS[3])
    error = caught.value
    assert (error.chain_id, error.seq, error.expected_seq) == (CHAIN_ID, 3, 2)
    assert str(error) == (
        "chain 'audit.raw/0' seq 3: gap: expected seq 2, found seq 3: 1 record missing (seq 2..2)"
    )


def test_a_chain_that_does_not_start_at_seq_0_is_a_gap() -> None:
    links = sealed_chain(PAYLOADS)
    with pytest.raises(ChainGapError, match="expected seq 0, found seq 2: 2 records missing"):
        verify_link(ChainHead.genesis(CHAIN_ID), links[2], PAYLOADS[2])


def test_a_repeated_record_is_a_duplicate() -> None:
    links = sealed_chain(PAYLOADS)
    head = verify_all(links[:3], PAYLOADS[:3])
    with pytest.raises(ChainDuplicateError, match="expected seq 3, found seq 2 again") as caught:
        verify_link(head, links[2], PAYLOADS[2])
    assert (caught.value.seq, caught.value.expected_seq) == (2, 3)


def test_an_older_record_after_the_head_is_a_reorder() -> None:
    links = sealed_chain(PAYLOADS)
    head = verify_all(links[:5], PAYLOADS[:5])
    with pytest.raises(
        ChainReorderError,
        match="expected seq 5, found seq 1, which precedes the chain head at seq 4",
    ):
        verify_link(head, links[1], PAYLOADS[1])


def test_the_record_just_before_the_head_replayed_is_a_reorder() -> None:
    links = sealed_chain(PAYLOADS)
    head = verify_all(links[:5], PAYLOADS[:5])
    with pytest.raises(ChainReorderError, match="expected seq 5, found seq 3") as caught:
        verify_link(head, links[3], PAYLOADS[3])
    assert (caught.value.seq, caught.value.expected_seq) == (3, 5)


def test_an_edited_payload_is_a_hash_mismatch_at_its_seq() -> None:
    links = sealed_chain(PAYLOADS)
    head = verify_all(links[:3], PAYLOADS[:3])
    with pytest.raises(ChainHashMismatchError, match="the record was altered") as caught:
        verify_link(head, links[3], b"event 3: user3 DELETED doc3")
    assert (caught.value.seq, caught.value.expected_seq) == (3, 3)


def test_an_edited_duplicate_is_a_hash_mismatch_not_a_duplicate() -> None:
    links = sealed_chain(PAYLOADS)
    head = verify_all(links[:3], PAYLOADS[:3])
    with pytest.raises(ChainHashMismatchError):
        verify_link(head, links[2], b"edited")


def test_a_self_consistent_record_on_another_history_is_a_fork() -> None:
    links = sealed_chain(PAYLOADS)
    head = verify_all(links[:3], PAYLOADS[:3])
    other_prev = b"\x07" * 32
    forged = ChainLink(CHAIN_ID, 3, other_prev, chain_hash(other_prev, 3, PAYLOADS[3]))
    with pytest.raises(ChainForkError, match="the record extends a different history"):
        verify_link(head, forged, PAYLOADS[3])


def test_a_second_different_record_at_the_head_seq_is_a_fork() -> None:
    links = sealed_chain(PAYLOADS)
    head = verify_all(links[:3], PAYLOADS[:3])
    rival = ChainLink(CHAIN_ID, 2, links[2].prev_hash, chain_hash(links[2].prev_hash, 2, b"rival"))
    with pytest.raises(ChainForkError, match="found a second record"):
        verify_link(head, rival, b"rival")


def test_a_record_of_another_chain_is_rejected() -> None:
    links = sealed_chain(PAYLOADS)
    other = ChainLink("audit.raw/1", 0, links[0].prev_hash, links[0].hash)
    with pytest.raises(
        ChainMismatchError,
        match=r"expected a record of chain 'audit\.raw/0', found one of chain 'audit\.raw/1'",
    ):
        verify_link(ChainHead.genesis(CHAIN_ID), other, PAYLOADS[0])


def test_a_link_with_malformed_fields_is_rejected() -> None:
    with pytest.raises(MalformedInputError, match="prev_hash must be 32 bytes"):
        verify_link(ChainHead.genesis(CHAIN_ID), ChainLink(CHAIN_ID, 0, b"", b"\x00" * 32), b"")


def tampered_copies(
    links: list[ChainLink], payloads: list[bytes]
) -> Iterator[tuple[int, list[ChainLink], list[bytes]]]:
    """Every single-byte flip of every payload, prev_hash and hash, with the seq it hits."""
    for index, (link, payload) in enumerate(zip(links, payloads, strict=True)):
        for position in range(len(payload)):
            edited = bytearray(payload)
            edited[position] ^= 0x20
            yield index, links, [*payloads[:index], bytes(edited), *payloads[index + 1 :]]
        for field in ("prev_hash", "hash"):
            for position in range(32):
                value = bytearray(getattr(link, field))
                value[position] ^= 0x01
                changes: dict[str, Any] = {field: bytes(value)}
                edited_link = dataclasses.replace(link, **changes)
                edited_links = [*links[:index], edited_link, *links[index + 1 :]]
                yield index, edited_links, payloads


def test_flipping_any_byte_anywhere_breaks_the_chain_at_that_record() -> None:
    payloads = PAYLOADS[:4]
    links = sealed_chain(payloads)
    checked = 0
    for index, edited_links, edited_payloads in tampered_copies(links, payloads):
        with pytest.raises(ChainError) as caught:
            verify_all(edited_links, edited_payloads)
        assert caught.value.seq == index, str(caught.value)
        checked += 1
    assert checked == sum(len(p) + 64 for p in payloads)
