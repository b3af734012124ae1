"""Inclusion proofs of one sealed event: built from a chain sealed by the real ChainSealer, checked
offline with only the keyring; every tampered part of a proof is refused, naming what failed."""

from __future__ import annotations

import copy
import json

import pytest

from pipeline.wire.codec import default_codec
from pipeline.producer.synthetic import synthetic_events
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import Keyring, SigningKey
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.wire.sealed import CHECKPOINT_KIND, sealed_codecs
from pipeline.verifier.proofs import InvalidProofError, ProofFinder, ProofNotFoundError, verify_proof

ISSUED = 1_800_000_000_000_000
KEY = SigningKey.from_seed(bytes(range(32)))
OTHER_KEY = SigningKey.from_seed(bytes(range(1, 33)))
KEYRING = Keyring().rotate(KEY.public_key, ISSUED - 1_000_000)


def _sealed_chain(batches=(5, 7, 1), garbled_at=3):
    """Decoded (kind, record) of one chain: batches of events with a checkpoint after each, and one
    rejection; plus the event ids in seal order."""
    codec, codecs = default_codec(), sealed_codecs()
    sealer = ChainSealer("audit.raw/2", 2, KEY, ChainHead.genesis("audit.raw/2"))
    events = iter(synthetic_events(sum(batches), seed=11))
    records, ids, offset = [], [], 0
    for size in batches:
        for _ in range(size):
            event = next(events)
            if offset == garbled_at:
                records.append(codecs.decode(sealer.seal(b"garbage", offset, ISSUED).value))
                offset += 1
            records.append(codecs.decode(sealer.seal(codec.encode(event), offset, ISSUED + offset).value))
            ids.append(str(event["event_id"]))
            offset += 1
        records.append(codecs.decode(sealer.checkpoint(ISSUED + offset).value))
    return records, ids


RECORDS, IDS = _sealed_chain()


def _prove(event_id, records=RECORDS):
    finder = ProofFinder(event_id)
    for n, (kind, record) in enumerate(records):
        if kind == CHECKPOINT_KIND:
            finder.checkpoint(record, f"obj offset {n}")
        else:
            finder.entry(kind, record, f"obj offset {n}")
    return finder.result()


@pytest.mark.parametrize("position", [0, 3, 4, 5, 11, 12])
def test_a_proof_of_every_position_verifies_offline(position):
    # first, middle, last of a batch, after the rejection, and a batch of one
    proof = json.loads(json.dumps(_prove(IDS[position])))
    verified = verify_proof(proof, KEYRING)
    assert verified.event_id == IDS[position] and verified.chain_id == "audit.raw/2"
    assert proof["entry"]["seq"] == verified.seq
    assert proof["leaf_index"] == verified.seq - verified.checkpoint.first_seq
    assert proof["tree_size"] == verified.checkpoint.tree_size
    assert verified.key.key_id == KEY.key_id


def test_the_proof_holds_every_field_of_entry_and_checkpoint():
    proof = _prove(IDS[6])
    assert set(proof["entry"]) == {"kind", "chain_id", "seq", "prev_hash", "hash", "source_partition",
                                   "source_offset", "source_timestamp_micros", "event"}
    assert set(proof["checkpoint"]) == {"chain_id", "first_seq", "last_seq", "merkle_root", "chain_head",
                                        "prev_checkpoint_hash", "key_id", "issued_at_micros", "signature",
                                        "checkpoint_hash", "last_source_offset"}
    assert proof["chain_hash"] == proof["entry"]["hash"]
    assert default_codec().decode(bytes.fromhex(proof["entry"]["event"]))["event_id"].hex == IDS[6].replace("-", "")
    assert proof["location"] == {"entry": "obj offset 8", "checkpoint": "obj offset 14"}


def test_an_unknown_or_uncheckpointed_event_is_not_found():
    with pytest.raises(ProofNotFoundError, match="no archived event"):
        _prove("00000000-0000-4000-8000-000000000000")
    with pytest.raises(ProofNotFoundError, match="no archived checkpoint covers it"):
        _prove(IDS[12], RECORDS[:-1])
    with pytest.raises(ProofNotFoundError, match="not a UUID"):
        ProofFinder("not-a-uuid")


def _flip(hex_text: str, at: int = -1) -> str:
    data = bytearray(bytes.fromhex(hex_text))
    data[at] ^= 1
    return data.hex()


def _edit_event_field(proof):
    codec = default_codec()
    event = codec.decode(bytes.fromhex(proof["entry"]["event"]))
    event["action"] = "document.delete"
    proof["entry"]["event"] = codec.encode(event).hex()


def _rehash_edited_entry(proof):
    # a clever tamperer also recomputes the entry's own hash: the Merkle path then fails
    from pipeline.integrity.chain import chain_hash
    from pipeline.wire.sealed import entry_payload

    _edit_event_field(proof)
    entry = {k: bytes.fromhex(v) if k in ("prev_hash", "hash", "event") else v for k, v in proof["entry"].items()}
    proof["entry"]["hash"] = proof["chain_hash"] = chain_hash(entry["prev_hash"], entry["seq"],
                                                              entry_payload(b"event", entry)).hex()


def _resign_with(key):
    from pipeline.integrity.checkpoint import checkpoint_hash, sign_checkpoint
    from pipeline.wire.sealed import checkpoint_from_record

    def tamper(proof):
        record = {k: bytes.fromhex(v) if k in ("merkle_root", "chain_head", "prev_checkpoint_hash", "signature",
                                                "checkpoint_hash") else v for k, v in proof["checkpoint"].items()}
        signed = sign_checkpoint(checkpoint_from_record(record), key)
        proof["checkpoint"]["key_id"], proof["checkpoint"]["signature"] = signed.key_id, signed.signature.hex()
        proof["checkpoint"]["checkpoint_hash"] = checkpoint_hash(signed).hex()
    return tamper


TAMPERINGS = {
    "event field edited": (_edit_event_field, "does not recompute"),
    "event edited and entry hash recomputed": (_rehash_edited_entry, "audit path does not lead"),
    "source offset edited": (lambda p: p["entry"].update(source_offset=p["entry"]["source_offset"] + 1),
                             "does not recompute"),
    "seq moved": (lambda p: p["entry"].update(seq=p["entry"]["seq"] + 1), "does not recompute"),
    "chain_hash replaced": (lambda p: p.update(chain_hash=_flip(p["chain_hash"])), "not the entry's hash"),
    "audit path node flipped": (lambda p: p["audit_path"].__setitem__(0, _flip(p["audit_path"][0])),
                                "audit path does not lead"),
    "audit path shortened": (lambda p: p["audit_path"].pop(), "audit path does not lead"),
    "leaf index moved": (lambda p: p.update(leaf_index=p["leaf_index"] + 1), "leaf_index"),
    "tree size changed": (lambda p: p.update(tree_size=p["tree_size"] + 1), "tree_size"),
    "merkle root replaced": (lambda p: p["checkpoint"].update(merkle_root=_flip(p["checkpoint"]["merkle_root"])),
                             "audit path does not lead"),
    "signature replaced": (lambda p: p["checkpoint"].update(signature=_flip(p["checkpoint"]["signature"])),
                           "does not verify"),
    "chain head replaced": (lambda p: p["checkpoint"].update(chain_head=_flip(p["checkpoint"]["chain_head"])),
                            "chain_head is not the last leaf"),
    "last_seq widened": (lambda p: p["checkpoint"].update(last_seq=p["checkpoint"]["last_seq"] + 1), "tree_size"),
    "signed by an unknown key": (_resign_with(OTHER_KEY), "which the keyring does not hold"),
    "checkpoint_hash replaced": (lambda p: p["checkpoint"].update(
        checkpoint_hash=_flip(p["checkpoint"]["checkpoint_hash"])), "checkpoint_hash does not recompute"),
    "another event's id claimed": (lambda p: p.update(event_id=IDS[0]), "the proof is for event"),
    "checkpoint of another chain": (lambda p: p["checkpoint"].update(chain_id="audit.raw/3"), "checkpoint is of chain"),
    "malformed hex": (lambda p: p["entry"].update(prev_hash="zz"), "malformed proof: entry.prev_hash is not hex"),
    "missing field": (lambda p: p["checkpoint"].pop("signature"), "malformed proof: checkpoint.signature is missing"),
    "unknown kind": (lambda p: p["entry"].update(kind="checkpoint"), "malformed proof: entry.kind"),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_a_tampered_proof_is_refused_saying_why(name):
    tamper, reason = TAMPERINGS[name]
    proof = copy.deepcopy(_prove(IDS[6]))
    tamper(proof)
    with pytest.raises(InvalidProofError, match=reason):
        verify_proof(json.loads(json.dumps(proof)), KEYRING)


def test_a_key_outside_its_validity_window_is_refused():
    late = Keyring().rotate(KEY.public_key, ISSUED + 10**12)
    with pytest.raises(InvalidProofError, match="validity window"):
        verify_proof(_prove(IDS[6]), late)


def test_no_proof_is_built_from_a_batch_the_state_machine_finds_damaged():
    # the entry before the wanted one is dropped: its batch no longer matches its checkpoint
    position = next(n for n, (kind, record) in enumerate(RECORDS)
                    if kind != CHECKPOINT_KIND and record.get("event") is not None
                    and default_codec().decode(record["event"])["event_id"].hex == IDS[6].replace("-", ""))
    damaged = [*RECORDS[:position - 1], *RECORDS[position:]]
    with pytest.raises(InvalidProofError, match=r"damaged batch: chain 'audit.raw/2' seq 6: gap: expected seq 6, "
                                                r"found seq 7.*run auditseal verify"):
        _prove(IDS[6], damaged)
