"""Re-verify one OCSF record's integrity evidence with the public keyring alone (pure: no I/O).

What :func:`verify_record` establishes for a chain entry (an event or a rejection):

1. ``unmapped.auditseal.hash`` is the chain hash of ``entry`` at ``seq`` after ``prev_hash``
   (``SHA-256("auditseal/chain/v1\\0" || prev_hash || u64be(seq) || u64be(len(entry)) || entry)``),
   and the attestation's fingerprint and ``prev_event`` fingerprint say the same;
2. the OCSF fields a SIEM reads come from those bytes: the record is mapped again from the entry
   and its class, time, uids, actor, action, resource and outcome must be the ones shown;
3. that hash is leaf ``leaf_index`` of the Merkle tree whose root the checkpoint carries
   (RFC 9162 section 2.1.3.2 with the audit path);
4. the checkpoint's Ed25519 signature verifies under a keyring key valid when it was issued, and its
   ``checkpoint_hash`` (the signature's digest in the attestation) recomputes.

For a checkpoint record, step 4 alone. Anything else (an unmapped record, an entry without a covering
checkpoint) has nothing to verify and fails with the reason. Every failure is one EvidenceError.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import AuditSealError
from pipeline.integrity.chain import chain_hash
from pipeline.integrity.checkpoint import Checkpoint, checkpoint_hash, verify_checkpoint_signature
from pipeline.integrity.errors import IntegrityError
from pipeline.integrity.keyring import Keyring
from pipeline.integrity.merkle import record_leaf_hash, verify_inclusion
from pipeline.siem import ocsf
from pipeline.siem.batches import plain_event_reader
from pipeline.wire.codec import DecodeError

_EVENT_TAG, _REJECTION_TAG = 0x01, 0x02
_SOURCE_END = 21  # tag (1) + u32 partition + u64 offset + u64 timestamp
# what a mapped event must still show as the evidence says: the fields a SIEM rule reads
_COMPARED = ("class_uid", "activity_id", "type_uid", "time", "status_id", "status_code", "status_detail", "actor",
             "user", "api", "resources", "src_endpoint", "finding_info", "session")
_COMPARED_METADATA = ("uid", "original_event_uid")


class EvidenceError(AuditSealError):
    """An OCSF record's integrity evidence is missing, malformed or does not verify; the message says which."""


@dataclass(frozen=True)
class VerifiedRecord:
    """What a verified record proved: its chain position (None for a checkpoint) and the signing key."""

    chain_id: str
    seq: int | None
    key_id: str
    checkpoint_first_seq: int
    checkpoint_last_seq: int


def verify_record(document: Mapping[str, Any], keyring: Keyring) -> VerifiedRecord:
    """Check every integrity field of one OCSF record (module docstring); EvidenceError if any fails."""
    try:
        evidence = document["unmapped"]["auditseal"]
        kind = evidence["kind"]
    except (KeyError, TypeError):
        raise EvidenceError("no unmapped.auditseal evidence: not an AuditSeal OCSF record") from None
    try:
        if kind == "checkpoint":
            checkpoint = _verify_checkpoint(evidence["checkpoint"], document, keyring)
            return VerifiedRecord(checkpoint.chain_id, None, checkpoint.key_id, checkpoint.first_seq,
                                  checkpoint.last_seq)
        if kind in ("event", "rejection"):
            return _verify_entry(kind, evidence, document, keyring)
        raise EvidenceError(f"an {kind} record carries no chain evidence: {evidence.get('reason', 'no reason')}")
    except IntegrityError as exc:
        raise EvidenceError(str(exc)) from None
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise EvidenceError(f"malformed evidence ({type(exc).__name__}: {exc})") from None


def _verify_entry(kind: str, evidence: Mapping[str, Any], document: Mapping[str, Any],
                  keyring: Keyring) -> VerifiedRecord:
    chain_id, seq = evidence["chain_id"], evidence["seq"]
    where = f"{chain_id} seq {seq}"
    entry = base64.b64decode(evidence["entry"], validate=True)
    prev_hash, claimed = bytes.fromhex(evidence["prev_hash"]), bytes.fromhex(evidence["hash"])
    computed = chain_hash(prev_hash, seq, entry)
    if computed != claimed:
        raise EvidenceError(f"{where}: the entry hashes to {computed.hex()}, the record claims {claimed.hex()}")
    attestation = _attestation(document)
    if attestation.get("fingerprint", {}).get("value") != claimed.hex() or attestation.get("chain_uid") != chain_id:
        raise EvidenceError(f"{where}: the attestation's fingerprint or chain_uid is not the entry's")
    if seq > 0 and attestation.get("prev_event", {}).get("fingerprint", {}).get("value") != prev_hash.hex():
        raise EvidenceError(f"{where}: the attestation's prev_event fingerprint is not the entry's prev_hash")
    _same_as_mapped(kind, evidence, entry, prev_hash, claimed, document, where)
    if "checkpoint" not in evidence:
        raise EvidenceError(f"{where}: no covering checkpoint attached "
                            f"({evidence.get('evidence_error', 'not sealed by a checkpoint yet')})")
    checkpoint = _verify_checkpoint(evidence["checkpoint"], document, keyring)
    inclusion = evidence["inclusion"]
    index, size = inclusion["leaf_index"], inclusion["tree_size"]
    if checkpoint.chain_id != chain_id or index != seq - checkpoint.first_seq or size != checkpoint.tree_size:
        raise EvidenceError(f"{where}: the checkpoint {checkpoint.describe()} does not cover this position "
                            f"(leaf {index} of {size})")
    path = [bytes.fromhex(node) for node in inclusion["audit_path"]]
    if not verify_inclusion(record_leaf_hash(claimed), index, size, path, checkpoint.merkle_root):
        raise EvidenceError(f"{where}: the audit path does not lead to the checkpoint's Merkle root "
                            f"{checkpoint.merkle_root.hex()}")
    return VerifiedRecord(chain_id, seq, checkpoint.key_id, checkpoint.first_seq, checkpoint.last_seq)


def _same_as_mapped(kind: str, evidence: Mapping[str, Any], entry: bytes, prev_hash: bytes, hash_: bytes,
                    document: Mapping[str, Any], where: str) -> None:
    # The fields a SIEM shows must come from the hashed bytes: map the entry again and compare.
    partition = int.from_bytes(entry[1:5], "big")
    offset = int.from_bytes(entry[5:13], "big")
    timestamp = int.from_bytes(entry[13:21], "big")
    position = ocsf.Position(**{k: v for k, v in evidence["sealed"].items()})
    record = {"chain_id": evidence["chain_id"], "seq": evidence["seq"], "prev_hash": prev_hash, "hash": hash_,
              "source_partition": partition, "source_offset": offset, "source_timestamp_micros": timestamp}
    if kind == "event":
        if entry[0] != _EVENT_TAG:
            raise EvidenceError(f"{where}: the entry is not an event entry (tag {entry[0]:#04x})")
        try:
            event = plain_event_reader().decode(entry[_SOURCE_END:])
        except DecodeError as exc:
            raise EvidenceError(f"{where}: the entry's event bytes do not decode: {exc}") from None
        expected = ocsf.event_record({**record, "event": entry[_SOURCE_END:]}, event, entry, position, None)
    else:
        if entry[0] != _REJECTION_TAG:
            raise EvidenceError(f"{where}: the entry is not a rejection entry (tag {entry[0]:#04x})")
        raw_sha256, raw_size = entry[21:53], int.from_bytes(entry[53:61], "big")
        expected = ocsf.rejection_record({**record, "raw_sha256": raw_sha256, "raw_size": raw_size,
                                          "reason": entry[61:].decode("utf-8")}, entry, position, None)
    for name in _COMPARED:
        if expected.get(name) != document.get(name) and not (
                name == "src_endpoint" and _earlier_endpoint(document.get(name), expected.get(name))):
            raise EvidenceError(f"{where}: {name} is {document.get(name)!r} but the sealed bytes say "
                                f"{expected.get(name)!r}")
    for name in _COMPARED_METADATA:
        if expected["metadata"].get(name) != document.get("metadata", {}).get(name):
            raise EvidenceError(f"{where}: metadata.{name} is not the one the sealed bytes give")


def _earlier_endpoint(shown: Any, expected: Any) -> bool:
    # Records exported before the mapping kept OCSF's ip for IP addresses only showed any source_ip (a
    # pseudonym, say) as both ip and name: the same value, still the one the sealed bytes give.
    return (isinstance(shown, Mapping) and isinstance(expected, Mapping) and set(expected) == {"name"}
            and dict(shown) == {"ip": expected["name"], "name": expected["name"]})


def _verify_checkpoint(fields: Mapping[str, Any], document: Mapping[str, Any], keyring: Keyring) -> Checkpoint:
    checkpoint = Checkpoint(
        chain_id=fields["chain_id"], first_seq=fields["first_seq"], last_seq=fields["last_seq"],
        merkle_root=bytes.fromhex(fields["merkle_root"]), chain_head=bytes.fromhex(fields["chain_head"]),
        prev_checkpoint_hash=bytes.fromhex(fields["prev_checkpoint_hash"]), key_id=fields["key_id"],
        issued_at_micros=fields["issued_at_micros"], signature=bytes.fromhex(fields["signature"]),
        # a version 2 checkpoint also signs its origin and raw offset range
        origin=fields.get("origin") or None,
        first_source_offset=fields.get("first_source_offset") if fields.get("origin") else None,
        last_source_offset=fields.get("last_source_offset") if fields.get("origin") else None,
    )
    verify_checkpoint_signature(checkpoint, keyring)
    digest = checkpoint_hash(checkpoint)
    if digest.hex() != fields["checkpoint_hash"]:
        raise EvidenceError(f"{checkpoint.describe()}: checkpoint_hash recomputes to {digest.hex()}, "
                            f"the record claims {fields['checkpoint_hash']}")
    signatures = _attestation(document).get("signatures") or []
    if not signatures or signatures[0].get("digest", {}).get("value") != digest.hex():
        raise EvidenceError(f"{checkpoint.describe()}: the attestation's signature digest is not the checkpoint hash")
    return checkpoint


def _attestation(document: Mapping[str, Any]) -> Mapping[str, Any]:
    attestations = document.get("attestation_list") or []
    if not attestations:
        raise EvidenceError("no attestation_list: the record_integrity profile is missing")
    return attestations[0]
