"""Signed checkpoints: frozen canonical encoding, signatures, tampering, batches, chaining."""

import dataclasses
import hashlib
import struct
from typing import Any

import pytest

from pipeline.integrity.chain import GENESIS_HASH, ChainHead
from pipeline.integrity.checkpoint import (
    Checkpoint,
    build_checkpoint,
    checkpoint_hash,
    checkpoint_signed_bytes,
    sign_checkpoint,
    verify_checkpoint_batch,
    verify_checkpoint_signature,
)
from pipeline.integrity.errors import (
    BadSignatureError,
    CheckpointError,
    CheckpointMismatchError,
    KeyNotValidError,
    MalformedInputError,
    UnknownKeyError,
)
from pipeline.integrity.keyring import Keyring, SigningKey, generate_signing_key
from pipeline.integrity.merkle import leaf_hash, merkle_root

CHAIN_ID = "audit.raw/0"
ISSUED_AT = 1_700_000_000_000_000
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
VECTOR_PAYLOADS = [b"", b"hello", bytes(range(256))]

# Computed once with this implementation (chain vectors of test_chain, RFC 8032 TEST 1 key,
# which signs deterministically), then frozen: any drift breaks every archived checkpoint.
VECTOR_MERKLE_ROOT = "df7544cc27f606658c2be3d7244d5a29985b1013573fd90c8be98955167bf688"
VECTOR_SIGNED_BYTES = (
    "61756469747365616c2f636865636b706f696e742f763100"
    "0000000b61756469742e7261772f30"
    "000000080000000000000000"
    "000000080000000000000002"
    "00000020df7544cc27f606658c2be3d7244d5a29985b1013573fd90c8be98955167bf688"
    "00000020c73e40c6ed251b713c1d779395690693307b7b6533bd7151a7b5a7cbc039291e"
    "000000200000000000000000000000000000000000000000000000000000000000000000"
    "0000001032316665333164666131353461323631"
    "0000000800060a24181e4000"
)
VECTOR_SIGNATURE = (
    "8974cebd1e9307a752f014403a72acfe5737739788e53fe3052873205e28ccf6"
    "738a649ddd1b194d36c27e59318b53c723b514764eefb483cce756cf637d0c07"
)
VECTOR_CHECKPOINT_HASH = "da664ad4ff48cb1ed9dfb8f49cccee140662ee3b3bd0c34926bf64fee01b32ea"


def record_hashes(payloads: list[bytes], chain_id: str = CHAIN_ID) -> list[bytes]:
    head = ChainHead.genesis(chain_id)
    hashes = []
    for payload in payloads:
        head = head.next(payload)
        hashes.append(head.hash)
    return hashes


def rfc_key() -> SigningKey:
    return SigningKey.from_seed(RFC8032_SECRET)


def vector_checkpoint() -> Checkpoint:
    unsigned = build_checkpoint(
        chain_id=CHAIN_ID,
        first_seq=0,
        record_hashes=record_hashes(VECTOR_PAYLOADS),
        prev_checkpoint_hash=GENESIS_HASH,
        issued_at_micros=ISSUED_AT,
    )
    return sign_checkpoint(unsigned, rfc_key())


def keyring_for(key: SigningKey, start: int = 0) -> Keyring:
    return Keyring().rotate(key.public_key, start)


def documented_signed_bytes(checkpoint: Checkpoint) -> bytes:
    """The signed bytes rebuilt from the checkpoint module docstring alone."""
    tag = b"auditseal/checkpoint/v1\x00"
    assert len(tag) == 24

    def field(value: bytes) -> bytes:
        return struct.pack(">I", len(value)) + value

    return tag + b"".join(
        field(value)
        for value in (
            checkpoint.chain_id.encode("utf-8"),
            struct.pack(">Q", checkpoint.first_seq),
            struct.pack(">Q", checkpoint.last_seq),
            checkpoint.merkle_root,
            checkpoint.chain_head,
            checkpoint.prev_checkpoint_hash,
            checkpoint.key_id.encode("ascii"),
            struct.pack(">Q", checkpoint.issued_at_micros),
        )
    )


def test_checkpoint_fixed_vector() -> None:
    checkpoint = vector_checkpoint()
    assert checkpoint.merkle_root.hex() == VECTOR_MERKLE_ROOT
    assert checkpoint_signed_bytes(checkpoint).hex() == VECTOR_SIGNED_BYTES
    assert checkpoint.signature.hex() == VECTOR_SIGNATURE
    assert checkpoint_hash(checkpoint).hex() == VECTOR_CHECKPOINT_HASH


def test_fixed_vector_follows_the_documented_encoding() -> None:
    checkpoint = vector_checkpoint()
    hashes = record_hashes(VECTOR_PAYLOADS)
    assert checkpoint.merkle_root == merkle_root(hashes)
    assert checkpoint.chain_head == hashes[-1]
    assert (checkpoint.first_seq, checkpoint.last_seq, checkpoint.tree_size) == (0, 2, 3)
    assert documented_signed_bytes(checkpoint).hex() == VECTOR_SIGNED_BYTES
    signature = rfc_key().private_key.sign(bytes.fromhex(VECTOR_SIGNED_BYTES))
    assert signature.hex() == VECTOR_SIGNATURE
    assert (
        hashlib.sha256(bytes.fromhex(VECTOR_SIGNED_BYTES) + signature).hexdigest()
        == VECTOR_CHECKPOINT_HASH
    )


def test_merkle_leaves_are_leaf_hashes_of_record_chain_hashes() -> None:
    hashes = record_hashes(VECTOR_PAYLOADS)
    checkpoint = vector_checkpoint()
    # With three leaves: MTH = node(node(l0, l1), l2).
    l0, l1, l2 = (leaf_hash(value) for value in hashes)
    inner = hashlib.sha256(b"\x01" + l0 + l1).digest()
    assert checkpoint.merkle_root == hashlib.sha256(b"\x01" + inner + l2).digest()


def test_a_signed_checkpoint_verifies_under_its_key() -> None:
    checkpoint = vector_checkpoint()
    entry = verify_checkpoint_signature(checkpoint, keyring_for(rfc_key()))
    assert entry.key_id == checkpoint.key_id == rfc_key().key_id


def test_signing_sets_the_key_id_and_replaces_an_earlier_signature() -> None:
    other = generate_signing_key()
    resigned = sign_checkpoint(vector_checkpoint(), other)
    assert resigned.key_id == other.key_id
    verify_checkpoint_signature(resigned, keyring_for(other))


ALTERED_FIELDS = [
    ("chain_id", "audit.raw/1"),
    ("first_seq", 1),
    ("last_seq", 3),
    ("merkle_root", b"\x11" * 32),
    ("chain_head", b"\x22" * 32),
    ("prev_checkpoint_hash", b"\x33" * 32),
    ("issued_at_micros", ISSUED_AT + 1),
]


@pytest.mark.parametrize(("name", "value"), ALTERED_FIELDS)
def test_every_field_is_covered_by_the_signature(name: str, value: Any) -> None:
    tampered = dataclasses.replace(vector_checkpoint(), **{name: value})
    with pytest.raises(BadSignatureError, match="does not verify under key 21fe31dfa154a261"):
        verify_checkpoint_signature(tampered, keyring_for(rfc_key()))


def test_a_changed_key_id_names_an_unknown_key() -> None:
    tampered = dataclasses.replace(vector_checkpoint(), key_id="0123456789abcdef")
    with pytest.raises(
        UnknownKeyError,
        match="signed by key 0123456789abcdef, which the keyring does not hold "
        r"\(keys: 21fe31dfa154a261\)",
    ):
        verify_checkpoint_signature(tampered, keyring_for(rfc_key()))


def test_flipping_any_byte_of_the_signature_fails() -> None:
    checkpoint = vector_checkpoint()
    keyring = keyring_for(rfc_key())
    for position in range(len(checkpoint.signature)):
        signature = bytearray(checkpoint.signature)
        signature[position] ^= 0x01
        with pytest.raises(BadSignatureError):
            verify_checkpoint_signature(
                dataclasses.replace(checkpoint, signature=bytes(signature)), keyring
            )


def test_flipping_any_byte_of_any_hash_field_fails() -> None:
    checkpoint = vector_checkpoint()
    keyring = keyring_for(rfc_key())
    for name in ("merkle_root", "chain_head", "prev_checkpoint_hash"):
        for position in range(32):
            value = bytearray(getattr(checkpoint, name))
            value[position] ^= 0x80
            changes: dict[str, Any] = {name: bytes(value)}
            with pytest.raises(BadSignatureError):
                verify_checkpoint_signature(dataclasses.replace(checkpoint, **changes), keyring)


def test_an_unsigned_checkpoint_does_not_verify_and_has_no_hash() -> None:
    unsigned = dataclasses.replace(vector_checkpoint(), signature=b"")
    with pytest.raises(BadSignatureError, match="expected a signature, found none"):
        verify_checkpoint_signature(unsigned, keyring_for(rfc_key()))
    with pytest.raises(MalformedInputError, match="is unsigned: it has no checkpoint hash"):
        checkpoint_hash(unsigned)


def test_a_checkpoint_issued_outside_its_keys_window_is_rejected() -> None:
    checkpoint = vector_checkpoint()
    early = keyring_for(rfc_key(), start=ISSUED_AT + 1)
    with pytest.raises(
        KeyNotValidError,
        match=rf"validity window \[{ISSUED_AT + 1}, open\), found {ISSUED_AT}",
    ):
        verify_checkpoint_signature(checkpoint, early)


def test_rotation_keeps_old_checkpoints_verifiable_and_retires_the_old_key() -> None:
    old, new = rfc_key(), generate_signing_key()
    keyring = keyring_for(old, start=0).rotate(new.public_key, ISSUED_AT + 10)
    before_rotation = vector_checkpoint()
    assert verify_checkpoint_signature(before_rotation, keyring).key_id == old.key_id

    after = dataclasses.replace(before_rotation, issued_at_micros=ISSUED_AT + 10)
    with pytest.raises(KeyNotValidError, match=rf"\[0, {ISSUED_AT + 10}\), found {ISSUED_AT + 10}"):
        verify_checkpoint_signature(sign_checkpoint(after, old), keyring)
    assert verify_checkpoint_signature(sign_checkpoint(after, new), keyring).key_id == new.key_id


def test_checkpoint_errors_share_one_base() -> None:
    for error in (UnknownKeyError, KeyNotValidError, BadSignatureError, CheckpointMismatchError):
        assert issubclass(error, CheckpointError)


def test_a_batch_check_accepts_exactly_the_records_signed() -> None:
    hashes = record_hashes(VECTOR_PAYLOADS)
    checkpoint = vector_checkpoint()
    verify_checkpoint_batch(checkpoint, CHAIN_ID, 0, hashes)
    with pytest.raises(
        CheckpointMismatchError, match=r"expected records seq 0\.\.2, found seq 0\.\.1"
    ):
        verify_checkpoint_batch(checkpoint, CHAIN_ID, 0, hashes[:2])
    with pytest.raises(
        CheckpointMismatchError, match=r"expected records seq 0\.\.2, found seq 1\.\.3"
    ):
        verify_checkpoint_batch(checkpoint, CHAIN_ID, 1, hashes)
    with pytest.raises(CheckpointMismatchError, match="found no records"):
        verify_checkpoint_batch(checkpoint, CHAIN_ID, 0, [])
    with pytest.raises(CheckpointMismatchError, match=r"found chain 'audit\.raw/9'"):
        verify_checkpoint_batch(checkpoint, "audit.raw/9", 0, hashes)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"expected chain head c73e40c6ed251b71\.\.\., found 4444444444444444\.\.\. at seq 2",
    ):
        verify_checkpoint_batch(checkpoint, CHAIN_ID, 0, [*hashes[:2], b"\x44" * 32])
    with pytest.raises(CheckpointMismatchError, match="expected Merkle root"):
        verify_checkpoint_batch(checkpoint, CHAIN_ID, 0, [b"\x55" * 32, *hashes[1:]])


def test_build_refuses_an_empty_batch() -> None:
    with pytest.raises(MalformedInputError, match="found an empty batch"):
        build_checkpoint(
            chain_id=CHAIN_ID,
            first_seq=0,
            record_hashes=[],
            prev_checkpoint_hash=GENESIS_HASH,
            issued_at_micros=ISSUED_AT,
        )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("chain_id", "", "chain_id must be a non-empty string"),
        ("chain_id", "x" * 1025, "at most 1024 UTF-8 bytes, found 1025"),
        ("first_seq", -1, "first_seq must be in"),
        ("last_seq", 2**64, "last_seq must be in"),
        ("merkle_root", b"\x00" * 31, "merkle_root must be 32 bytes, found 31 bytes"),
        ("chain_head", None, "chain_head must be 32 bytes, found NoneType"),
        ("prev_checkpoint_hash", b"", "prev_checkpoint_hash must be 32 bytes, found 0 bytes"),
        ("key_id", "21FE31DFA154A261", "key_id must be 16 lowercase hex characters"),
        ("key_id", "", "a signed checkpoint must name its key_id"),
        ("issued_at_micros", -5, "issued_at_micros must be in"),
        (
            "signature",
            b"\x00" * 63,
            "signature must be 64 bytes, or empty if unsigned, found 63 bytes",
        ),
    ],
)
def test_a_malformed_checkpoint_names_the_field(name: str, value: Any, message: str) -> None:
    with pytest.raises(MalformedInputError, match=message):
        dataclasses.replace(vector_checkpoint(), **{name: value})


def test_last_seq_may_not_precede_first_seq() -> None:
    with pytest.raises(MalformedInputError, match="last_seq must be >= first_seq 5, found 4"):
        dataclasses.replace(vector_checkpoint(), first_seq=5, last_seq=4)
