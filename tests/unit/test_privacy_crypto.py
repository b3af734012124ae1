"""The pure cryptography of personal-data protection (pipeline/privacy/crypto.py), on fixed vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from pipeline.privacy.crypto import (
    CorruptCiphertextError,
    FieldCipher,
    PseudonymKey,
    SubjectKey,
    WrongKekError,
    associated_data,
    group_associated_data,
    is_pseudonym,
    new_subject_key,
    pack_strings,
    unpack_strings,
    unwrap_key,
    wrap_key,
)
from pipeline.privacy.records import Erasure, KeyStoreRecordError, WrappedKey

PSEUDONYM_KEY = PseudonymKey(1, bytes(range(32)))
KEY = SubjectKey("00112233445566ff", bytes(range(64)))
ALICE = PSEUDONYM_KEY.subject_pseudonym("alice")


def test_rfc5297_a1_deterministic_vector_through_the_library_we_use() -> None:
    # RFC 5297 appendix A.1 (AES-SIV with a 256-bit key, one associated-data string)
    key = bytes.fromhex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    ad = bytes.fromhex("101112131415161718191a1b1c1d1e1f2021222324252627")
    plaintext = bytes.fromhex("112233445566778899aabbccddee")
    expected = bytes.fromhex("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c")
    assert AESSIV(key).encrypt(plaintext, [ad]) == expected


def test_pseudonym_is_truncated_hmac_sha256_over_the_domain_field_and_value() -> None:
    expected = hmac.new(bytes(range(32)), b"auditseal/pseudonym/v1\x00subject\x00alice", hashlib.sha256).digest()
    assert ALICE == "p1." + base64.urlsafe_b64encode(expected[:16]).rstrip(b"=").decode() == "p1.EiAiRurX7NEL9Nf1NgKmNw"
    assert PSEUDONYM_KEY.pseudonym("actor.source_ip", "203.0.113.7") == "p1.RLg3s4bHJZ_ssrUxVfaFUg"
    assert is_pseudonym(ALICE) and not is_pseudonym("alice") and not is_pseudonym("p0." + "A" * 22)


def test_pseudonyms_separate_fields_versions_and_keys() -> None:
    assert PSEUDONYM_KEY.pseudonym("actor.id", "x") != PSEUDONYM_KEY.pseudonym("actor.session_id", "x")
    other_version = PseudonymKey(2, bytes(range(32)))
    assert other_version.subject_pseudonym("alice").startswith("p2.")
    assert PseudonymKey(1, bytes(32)).subject_pseudonym("alice") != ALICE


def test_field_ciphertext_fixed_vector_and_round_trip() -> None:
    cipher = FieldCipher(ALICE, KEY)
    ciphertext = cipher.encrypt("actor.id", "alice")
    assert ciphertext == "Ltpdd-IQBkNuyGitmr9i-9ksTOvw"  # pinned: archives hold this format for years
    siv = AESSIV(KEY.material).encrypt(b"alice", associated_data(ALICE, "actor.id", KEY.key_id))
    assert ciphertext == base64.urlsafe_b64encode(siv).rstrip(b"=").decode()
    assert cipher.decrypt("actor.id", ciphertext) == "alice"
    assert cipher.encrypt("actor.id", "alice") == ciphertext  # deterministic (what makes caching possible)
    assert cipher.decrypt("attributes.note", cipher.encrypt("attributes.note", "ünïcode ✓")) == "ünïcode ✓"


@pytest.mark.parametrize("damage", ["truncated", "altered", "other field", "other subject", "other key", "not base64",
                                    "empty"])
def test_a_damaged_or_moved_ciphertext_is_one_clear_error(damage: str) -> None:
    cipher = FieldCipher(ALICE, KEY)
    ciphertext = cipher.encrypt("actor.source_ip", "203.0.113.7")
    field, reader = "actor.source_ip", cipher
    if damage == "truncated":
        ciphertext = ciphertext[:-3]
    elif damage == "altered":
        ciphertext = ("A" if ciphertext[0] != "A" else "B") + ciphertext[1:]
    elif damage == "other field":
        field = "actor.user_agent"
    elif damage == "other subject":
        reader = FieldCipher(PSEUDONYM_KEY.subject_pseudonym("bob"), KEY)
    elif damage == "other key":
        reader = FieldCipher(ALICE, new_subject_key())
    elif damage == "not base64":
        ciphertext = "!!!" + ciphertext
    else:
        ciphertext = ""
    with pytest.raises(CorruptCiphertextError, match=f"{field} of subject {reader.subject} .* does not decrypt"):
        reader.decrypt(field, ciphertext)


def test_key_wrap_round_trip_and_wrong_kek() -> None:
    kek = bytes(range(32))
    wrapped = wrap_key(kek, KEY.material)
    assert len(wrapped) == 72 and KEY.material not in wrapped
    assert unwrap_key(kek, wrapped, "key k", "kek-1") == KEY.material
    with pytest.raises(WrongKekError, match="key k does not unwrap with KEK 'kek-2'"):
        unwrap_key(bytes(32), wrapped, "key k", "kek-2")
    with pytest.raises(WrongKekError):
        unwrap_key(kek, wrapped[:-8], "key k", "kek-1")


def test_subject_keys_are_fresh_and_well_formed() -> None:
    first, second = new_subject_key(), new_subject_key()
    assert first.key_id != second.key_id and first.material != second.material
    with pytest.raises(ValueError):
        SubjectKey("short", bytes(64))
    with pytest.raises(ValueError):
        PseudonymKey(0, bytes(32))


def test_key_store_records_round_trip_and_refuse_garbage() -> None:
    record = WrappedKey("kek-1", b"\x01" * 72, "2026-12-01T00:00:00.000000Z")
    assert WrappedKey.from_value(record.to_value(), "here") == record
    erasure = Erasure(ALICE, "2026-12-01T00:00:00Z", "User:privacy", ("00112233445566ff",), "e-1")
    assert Erasure.from_value(ALICE, erasure.to_value(), "here") == erasure
    assert b"alice" not in erasure.to_value()
    for garbage in (b"\xff", b"[]", b'{"v": 2}', b'{"v": 1, "kek_id": "k"}'):
        with pytest.raises(KeyStoreRecordError, match="here"):
            WrappedKey.from_value(garbage, "here")


def test_subject_group_fixed_vector_round_trip_and_packing() -> None:
    cipher = FieldCipher(ALICE, KEY)
    names, values = ("actor.id", "actor.source_ip"), ("alice", "203.0.113.7")
    sealed = cipher.seal_group(names, values)
    # pinned: archives hold this format for years (schemas/FORMAT.md, section 11)
    assert sealed.hex() == "5b28a17dae12dc58a5aa81f09a7b6bc8f2b277af8ad0a7fa85f99eba276aacc94972"
    packed = b"\x0aalice\x16203.0.113.7"  # each value an Avro string: zig-zag length, UTF-8
    assert pack_strings(values) == packed and unpack_strings(packed, 2) == list(values)
    expected_ad = [b"auditseal/protected-subject/v1", ALICE.encode(), KEY.key_id.encode(),
                   b"\x10actor.id\x1eactor.source_ip"]
    assert group_associated_data(ALICE, KEY.key_id, names) == expected_ad
    assert sealed == AESSIV(KEY.material).encrypt(packed, expected_ad)
    assert cipher.open_group(names, sealed) == list(values)
    assert cipher.open_group((), cipher.seal_group((), ())) == []
    long_value = "é" * 100  # a two-byte varint length, multi-byte UTF-8
    assert cipher.open_group(("attributes.note",), cipher.seal_group(("attributes.note",), (long_value,))) == [long_value]


@pytest.mark.parametrize("damage", ["truncated", "altered", "other subject", "fields reordered", "field renamed",
                                    "field dropped", "other key id"])
def test_a_damaged_or_moved_subject_group_is_one_clear_error(damage: str) -> None:
    names = ("actor.id", "actor.source_ip")
    sealed = FieldCipher(ALICE, KEY).seal_group(names, ("alice", "203.0.113.7"))
    cipher, opened_names = FieldCipher(ALICE, KEY), names
    if damage == "truncated":
        sealed = sealed[:-3]
    elif damage == "altered":
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    elif damage == "other subject":
        cipher = FieldCipher(PSEUDONYM_KEY.subject_pseudonym("bob"), KEY)
    elif damage == "fields reordered":
        opened_names = names[::-1]
    elif damage == "field renamed":
        opened_names = ("actor.id", "actor.session_id")
    elif damage == "field dropped":
        opened_names = ("actor.id",)
    else:
        cipher = FieldCipher(ALICE, SubjectKey("ffeeddccbbaa9988", KEY.material))
    with pytest.raises(CorruptCiphertextError, match="truncated, altered or not this subject's"):
        cipher.open_group(opened_names, sealed)


@pytest.mark.parametrize("packed, count", [(b"\x0aali", 1), (b"\x0aalice!", 1), (b"\x01", 1), (b"\x80", 1),
                                           (b"\x0aalice", 2), (b"\x02\xff", 1)])
def test_unpacking_refuses_anything_but_exactly_count_strings(packed: bytes, count: int) -> None:
    with pytest.raises(ValueError):
        unpack_strings(packed, count)
