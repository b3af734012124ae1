"""The reconciler's pure parts: comparing sealed entries with raw records, and signed attestations."""

from __future__ import annotations

import hashlib

import pytest

from pipeline.integrity.keyring import SigningKey, generate_signing_key
from pipeline.reconciler.attestation import attestation_bytes, attestation_is_valid, sign_attestation
from pipeline.reconciler.matching import ChainReconciliation, RawRecord, SealedEntry
from pipeline.wire.sealed import EVENT_KIND, REJECTION_KIND

CHAIN = "audit.raw/0"


def _event(sealed_offset: int, source_offset: int, value: bytes, ts: int = 1000, chain: str = CHAIN) -> SealedEntry:
    return SealedEntry(sealed_offset, chain, EVENT_KIND, source_offset, ts, event=value)


def _raw(*values: bytes, ts: int = 1000) -> dict[int, RawRecord]:
    return {offset: RawRecord(offset, value, ts) for offset, value in enumerate(values)}


def test_a_faithful_chain_has_no_mismatch_across_batches():
    chain = ChainReconciliation(CHAIN)
    raw = _raw(b"a", b"b", b"c", b"d")
    assert chain.check([_event(0, 0, b"a"), _event(1, 1, b"b")], raw, 0, 4) == []
    rejection = SealedEntry(3, CHAIN, REJECTION_KIND, 2, 1000, raw_sha256=hashlib.sha256(b"c").digest(), raw_size=1)
    assert chain.check([rejection, _event(4, 3, b"d")], raw, 0, 4) == []
    assert (chain.checked, chain.next_source_offset) == (4, 4)


@pytest.mark.parametrize("entries, kind, offset", [
    ([_event(0, 0, b"a"), _event(1, 1, b"alice document.read")], "substituted", 1),
    ([_event(0, 0, b"a"), _event(1, 1, b"b", ts=999)], "substituted", 1),
    ([_event(0, 0, b"a"), _event(1, 2, b"c")], "unsealed", 1),
    ([_event(0, 0, b"a"), _event(1, 1, b"b"), _event(2, 1, b"b")], "sealed_twice", 1),
    ([_event(0, 0, b"a"), _event(1, 7, b"h")], "no_raw_record", 7),
    ([_event(0, 0, b"a", chain="audit.raw/1")], "foreign_chain", 0),
    ([SealedEntry(0, CHAIN, REJECTION_KIND, 0, 1000, raw_sha256=hashlib.sha256(b"x").digest(), raw_size=1)],
     "substituted", 0),
])
def test_each_disagreement_is_named_with_its_offset(entries, kind, offset):
    found = ChainReconciliation(CHAIN).check(entries, _raw(b"a", b"b", b"c"), 0, 3)
    named = [m for m in found if (m.kind, m.source_offset) == (kind, offset)]
    assert named, found
    assert CHAIN in named[0].describe() and kind in named[0].describe()


def test_offsets_deleted_by_retention_are_unverifiable_not_matched():
    chain = ChainReconciliation(CHAIN)
    raw = {5: RawRecord(5, b"f", 1000)}
    assert chain.check([_event(0, 4, b"e"), _event(1, 5, b"f")], raw, 5, 6) == []
    assert (chain.unverifiable, chain.checked) == (1, 1)


# RFC 8032 section 7.1, test 1: a fixed key gives a fixed signature over the fixed attestation bytes
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


def test_attestation_bytes_and_signature_are_fixed():
    attributes = {"chain_id": CHAIN, "entries": "3", "mismatches": "0"}
    assert attestation_bytes(attributes) == (b'auditseal/reconciler/attestation/v1\n'
                                             b'{"chain_id":"audit.raw/0","entries":"3","mismatches":"0"}')
    key = SigningKey.from_seed(SEED)
    signed = sign_attestation(attributes, key)
    assert signed["key_id"] == key.key_id
    assert signed == sign_attestation(attributes, key)  # Ed25519 is deterministic
    assert attestation_is_valid(signed, key.public_key)


def test_a_changed_or_foreign_attestation_is_refused():
    key = SigningKey.from_seed(SEED)
    signed = sign_attestation({"chain_id": CHAIN, "mismatches": "1"}, key)
    assert not attestation_is_valid({**signed, "mismatches": "0"}, key.public_key)
    assert not attestation_is_valid(signed, generate_signing_key().public_key)
    other = sign_attestation({"chain_id": CHAIN, "mismatches": "1"}, generate_signing_key())
    assert not attestation_is_valid({**other, "key_id": key.key_id}, key.public_key)
    assert not attestation_is_valid({**signed, "signature": "zz"}, key.public_key)
