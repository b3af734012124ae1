"""Version 2 checkpoints: origin and raw offset range signed; read beside version 1; the raw offsets checked."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.integrity.chain import GENESIS_HASH, ChainHead
from pipeline.integrity.chain_state import ChainState, ViolationKind
from pipeline.integrity.checkpoint import (
    CHECKPOINT_V2_DOMAIN_TAG,
    build_checkpoint,
    checkpoint_hash,
    checkpoint_signed_bytes,
    sign_checkpoint,
    verify_checkpoint_signature,
)
from pipeline.integrity.errors import BadSignatureError, MalformedInputError
from pipeline.integrity.keyring import Keyring, SigningKey
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.wire.catalog import default_catalog
from pipeline.wire.codec import EventCodec
from pipeline.wire.sealed import CHECKPOINT_KIND, checkpoint_from_record, checkpoint_record, sealed_codecs
from tests.unit.test_checkpoint import ISSUED_AT, VECTOR_PAYLOADS, record_hashes, rfc_key

CHAIN_ID = "audit.raw/0"
ORIGIN = "auditseal/MkU3OEVBNTcwNTJENDM2Qg/audit.raw/0"
HERE = "test"

# Computed once with this implementation (RFC 8032 TEST 1 key), then frozen: schemas/FORMAT.md
# section 3b shows the same bytes, and every archived v2 checkpoint depends on them.
VECTOR_V2_SIGNED_BYTES = (
    "61756469747365616c2f636865636b706f696e742f763200"
    "0000002c61756469747365616c2f4d6b55334f4556424e5463774e544a454e444d3251672f61756469742e7261772f30"
    "0000000b61756469742e7261772f30"
    "000000080000000000000000"
    "000000080000000000000002"
    "000000080000000000000028"
    "00000008000000000000002a"
    "00000020df7544cc27f606658c2be3d7244d5a29985b1013573fd90c8be98955167bf688"
    "00000020c73e40c6ed251b713c1d779395690693307b7b6533bd7151a7b5a7cbc039291e"
    "000000200000000000000000000000000000000000000000000000000000000000000000"
    "0000001032316665333164666131353461323631"
    "0000000800060a24181e4000"
)


def v2_checkpoint(first_seq: int = 0, hashes: list[bytes] | None = None, prev: bytes = GENESIS_HASH,
                  offsets: tuple[int, int] = (40, 42), origin: str = ORIGIN):
    unsigned = build_checkpoint(chain_id=CHAIN_ID, first_seq=first_seq,
                                record_hashes=hashes or record_hashes(VECTOR_PAYLOADS), prev_checkpoint_hash=prev,
                                issued_at_micros=ISSUED_AT, origin=origin, source_offsets=offsets)
    return sign_checkpoint(unsigned, rfc_key())


def test_the_v2_signed_bytes_name_the_origin_and_the_raw_offsets():
    checkpoint = v2_checkpoint()
    signed = checkpoint_signed_bytes(checkpoint)
    assert checkpoint.version == 2
    assert signed.startswith(CHECKPOINT_V2_DOMAIN_TAG)
    assert signed.hex() == VECTOR_V2_SIGNED_BYTES
    assert (40).to_bytes(8, "big") in signed and (42).to_bytes(8, "big") in signed
    keyring = Keyring().rotate(rfc_key().public_key, ISSUED_AT - 1)
    verify_checkpoint_signature(checkpoint, keyring)
    # every signed field is covered: another origin or range under the same signature does not verify
    for changed in (dataclasses.replace(checkpoint, origin="auditseal/other/audit.raw/0"),
                    dataclasses.replace(checkpoint, first_source_offset=39),
                    dataclasses.replace(checkpoint, last_source_offset=43)):
        with pytest.raises(BadSignatureError):
            verify_checkpoint_signature(changed, keyring)


def test_a_v2_checkpoint_is_not_a_v1_checkpoint_with_the_same_fields():
    v2 = v2_checkpoint()
    v1 = sign_checkpoint(dataclasses.replace(v2, origin=None, first_source_offset=None, last_source_offset=None,
                                             signature=b""), rfc_key())
    assert v1.version == 1 and checkpoint_signed_bytes(v1) != checkpoint_signed_bytes(v2)
    assert checkpoint_hash(v1) != checkpoint_hash(v2)


@pytest.mark.parametrize("changes, message", [
    ({"origin": "auditseal/x/audit.raw/1"}, "must end with /audit.raw/0"),
    ({"origin": "has space/audit.raw/0"}, "whitespace"),
    ({"first_source_offset": None}, "first_source_offset"),
    ({"first_source_offset": 50}, "last_source_offset must be >= first_source_offset"),
    ({"origin": None}, "must name its origin"),
])
def test_a_malformed_v2_checkpoint_names_its_field(changes, message):
    with pytest.raises(MalformedInputError, match=message):
        dataclasses.replace(v2_checkpoint(), **changes)


def test_both_versions_round_trip_through_the_sealed_topic_s_schema():
    codecs = sealed_codecs()
    v2 = v2_checkpoint()
    kind, record = codecs.decode(codecs.checkpoint.encode(checkpoint_record(v2)))
    assert kind == CHECKPOINT_KIND and checkpoint_from_record(record) == v2
    assert record["last_source_offset"] == 42 and record["first_source_offset"] == 40
    # a record written with the version 1 schema (every archive before v2) reads as a v1 checkpoint
    v1 = sign_checkpoint(dataclasses.replace(v2, origin=None, first_source_offset=None, last_source_offset=None,
                                             signature=b""), rfc_key())
    v1_codec = EventCodec(_only_v1_catalog(), family="checkpoint")
    old_bytes = v1_codec.encode({k: v for k, v in checkpoint_record(v1, 42).items()
                                 if k not in ("origin", "first_source_offset")})
    assert old_bytes[2:10] != codecs.checkpoint.header[2:10]
    kind, record = codecs.decode(old_bytes)
    assert kind == CHECKPOINT_KIND and record["origin"] == "" and record["first_source_offset"] == -1
    assert checkpoint_from_record(record) == v1
    _, fields = codecs.decode_fields(old_bytes)
    assert codecs.record_of_fields(kind, fields)["last_source_offset"] == 42


def _only_v1_catalog():
    from pipeline.wire.catalog import SchemaCatalog
    return SchemaCatalog([v for v in default_catalog().versions("checkpoint") if v.version == 1])


def test_a_v2_record_says_the_offsets_it_signs():
    with pytest.raises(ValueError, match="signs last_source_offset 42"):
        checkpoint_record(v2_checkpoint(), 41)


# ---- the state machine over raw offsets -------------------------------------------------------------

def _sealer(origin: str | None = ORIGIN) -> ChainSealer:
    return ChainSealer(CHAIN_ID, 0, SigningKey.from_seed(bytes(32)), ChainHead.genesis(CHAIN_ID), origin=origin)


def _feed(state: ChainState, sealer: ChainSealer, offsets: list[int], keyring: Keyring, drop: int | None = None):
    codecs = sealed_codecs()
    found = []
    for offset in offsets:
        record = sealer.seal(b"x", offset, ISSUED_AT)
        if offset == drop:
            continue
        kind, decoded = codecs.decode(record.value)
        found += state.entry(CHAIN_ID, decoded["seq"], decoded["prev_hash"], decoded["hash"],
                             _payload(kind, decoded), HERE, decoded["source_offset"])
    _, record = codecs.decode(sealer.checkpoint(ISSUED_AT).value)
    found += state.checkpoint(checkpoint_from_record(record), HERE, keyring)
    return found


def _payload(kind, record):
    from pipeline.wire.sealed import entry_payload
    return entry_payload(kind, record)


def _keyring() -> Keyring:
    return Keyring().rotate(SigningKey.from_seed(bytes(32)).public_key, ISSUED_AT - 1)


def test_contiguous_raw_offsets_across_v2_batches_are_intact():
    state, sealer = ChainState(CHAIN_ID), _sealer()
    assert _feed(state, sealer, [5, 6, 7], _keyring()) == []
    assert _feed(state, sealer, [8, 9], _keyring()) == []
    assert state.previous_checkpoint.first_source_offset == 8 and state.previous_checkpoint.last_source_offset == 9


def test_a_raw_offset_skipped_inside_a_batch_is_named():
    state, sealer = ChainState(CHAIN_ID), _sealer()
    found = _feed(state, sealer, [5, 6, 9, 10], _keyring())
    assert [v.kind for v in found] == [ViolationKind.UNACCOUNTED_OFFSETS]
    assert found[0].seq == 2 and "raw offsets 7..8 are accounted for by no entry" in found[0].detail


def test_a_raw_offset_skipped_between_batches_is_named_at_the_next_checkpoint():
    state, sealer = ChainState(CHAIN_ID), _sealer()
    assert _feed(state, sealer, [0, 1], _keyring()) == []
    found = _feed(state, sealer, [4, 5], _keyring())
    assert [v.kind for v in found] == [ViolationKind.UNACCOUNTED_OFFSETS]
    assert "raw offsets 2..3 are accounted for by no entry" in found[0].detail and found[0].seq == 2


def test_an_entry_removed_and_its_batch_resigned_is_still_a_hole():
    # the holder of the key re-signs a batch without one record: the signed range still shows the hole
    state, sealer = ChainState(CHAIN_ID), _sealer()
    found = _feed(state, sealer, [0, 1, 2, 3], _keyring(), drop=3)
    kinds = {v.kind for v in found}
    assert ViolationKind.UNACCOUNTED_OFFSETS in kinds


def test_a_v1_checkpoint_after_v2_is_a_downgrade():
    state, sealer = ChainState(CHAIN_ID), _sealer()
    assert _feed(state, sealer, [0, 1], _keyring()) == []
    sealer.origin = None
    found = _feed(state, sealer, [2, 3], _keyring())
    assert [v.kind for v in found] == [ViolationKind.CHECKPOINT_CHAIN] and "version 1" in found[0].detail


def test_another_origin_within_a_chain_is_named():
    state, sealer = ChainState(CHAIN_ID), _sealer()
    assert _feed(state, sealer, [0, 1], _keyring()) == []
    sealer.origin = "staging.example.com/audit.raw/0"
    found = _feed(state, sealer, [2, 3], _keyring())
    assert [v.kind for v in found] == [ViolationKind.ORIGIN_MISMATCH]


def test_a_v1_chain_moves_to_v2_without_a_finding():
    state, sealer = ChainState(CHAIN_ID), _sealer(origin=None)
    assert _feed(state, sealer, [0, 1, 2], _keyring()) == []
    sealer.origin = ORIGIN
    assert _feed(state, sealer, [3, 4], _keyring()) == []
    assert _feed(state, sealer, [5], _keyring()) == []
    # v1 batches sign no offsets: a hole in one is not held against it
    state, sealer = ChainState(CHAIN_ID), _sealer(origin=None)
    assert _feed(state, sealer, [0, 2], _keyring()) == []


def test_the_sealer_resumes_a_v1_chain_in_v2():
    sealer = _sealer(origin=None)
    for offset in range(3):
        sealer.seal(b"x", offset, ISSUED_AT)
    _, last = sealed_codecs().decode(sealer.checkpoint(ISSUED_AT).value)
    resumed = ChainSealer.resume(CHAIN_ID, 0, SigningKey.from_seed(bytes(32)), last, origin=ORIGIN)
    assert resumed.next_source_offset == 3
    resumed.seal(b"x", 3, ISSUED_AT)
    _, record = sealed_codecs().decode(resumed.checkpoint(ISSUED_AT).value)
    checkpoint = checkpoint_from_record(record)
    assert (checkpoint.version, checkpoint.origin, checkpoint.first_source_offset,
            checkpoint.last_source_offset) == (2, ORIGIN, 3, 3)


# ---- gap entries ------------------------------------------------------------------------------------

def test_a_gap_entry_hashes_its_range_cause_and_reason():
    from pipeline.wire.sealed import GAP_KIND, gap_payload
    payload = gap_payload(3, 10, 1_700_000_000_000_000, 12, "lost", "expired")
    assert payload.hex() == ("03" "00000003" "000000000000000a" "00060a24181e4000" "000000000000000c" "01"
                             + b"expired".hex())
    with pytest.raises(ValueError, match="cause must be one of lost, skipped"):
        gap_payload(3, 10, 0, 12, "gone", "")
    with pytest.raises(ValueError, match="source_offset <= source_last_offset"):
        gap_payload(3, 10, 0, 9, "lost", "")
    sealer = _sealer()
    sealer.seal(b"x", 9, ISSUED_AT)
    record = sealer.seal_gap(12, "lost", "expired", ISSUED_AT)
    kind, decoded = sealed_codecs().decode(record.value)
    assert kind == record.kind == GAP_KIND
    assert (decoded["seq"], decoded["source_offset"], decoded["source_last_offset"]) == (1, 10, 12)
    assert sealer.next_source_offset == 13
    _, fields = sealed_codecs().decode_fields(record.value)
    assert fields == tuple(decoded.values())
    with pytest.raises(ValueError, match="no gap to seal"):
        sealer.seal_gap(12, "lost", "", ISSUED_AT)


def test_a_gap_entry_closes_the_hole_in_the_signed_range():
    from pipeline.verifier.chains import ChainAuditor
    codecs = sealed_codecs()
    sealer = _sealer()
    values = [sealer.seal(b"x", 0, ISSUED_AT).value, sealer.seal_gap(4, "lost", "deleted", ISSUED_AT).value,
              sealer.seal(b"x", 5, ISSUED_AT).value, sealer.checkpoint(ISSUED_AT).value]
    auditor = ChainAuditor(_keyring())
    for n, value in enumerate(values):
        kind, record = codecs.decode(value)
        if kind == CHECKPOINT_KIND:
            auditor.checkpoint(record, f"#{n}")
        else:
            auditor.entry(kind, record, f"#{n}")
    found = auditor.finish()
    assert [(v.kind, v.seq, v.location) for v in found] == [(ViolationKind.LOST_RECORDS, 1, "#1")]
    assert "raw offsets 1..4 (4 offsets) were lost" in found[0].detail
    assert checkpoint_from_record(codecs.decode(values[-1])[1]).first_source_offset == 0
