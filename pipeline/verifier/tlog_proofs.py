"""Proofs of one chain entry as C2SP tlog-proof files over the chain's whole-history tree.

A proof of the entry at seq i of chain C is a tlog-proof (``pipeline.integrity.tlog_proof``) with

- ``extra``: the entry's value exactly as sealed on ``audit.sealed`` (Avro single-object SealedEvent or
  Rejection); not trusted: it only lets the verifier rebuild the leaf;
- ``index``: i (leaf i of the history tree is the entry at seq i);
- the RFC 6962 inclusion path of leaf i in the tree of the head's size;
- the head: a tlog-checkpoint of origin ``<log name>/C`` signed by the log key, with witness cosignatures.

Verification, offline, with a C2SP tlog-policy: rebuild the chain hash from the entry's fields (it must equal
the entry's own ``hash``), leaf = SHA-256(0x00 || chain hash), check the log's signature and the witness
quorum under the policy, that the origin names the entry's chain, and the inclusion path to the root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.integrity.chain import chain_hash
from pipeline.integrity.errors import IntegrityError
from pipeline.integrity.keyring import Keyring
from pipeline.integrity.log_identity import log_verifier
from pipeline.integrity.merkle import inclusion_proof, record_leaf_hash, verify_inclusion
from pipeline.integrity.note import parse_note, verified_signatures
from pipeline.integrity.policy import WitnessPolicy
from pipeline.integrity.tlog_proof import TlogProof, parse_tlog_proof
from pipeline.integrity.tree_head import parse_tree_head
from pipeline.verifier.proofs import InvalidProofError, event_id_of
from pipeline.wire.codec import DecodeError
from pipeline.wire.sealed import ENTRY_KINDS, EVENT_KIND, entry_payload, sealed_codecs

_TIME_LINE = "auditseal-time "


@dataclass(frozen=True)
class VerifiedTlogProof:
    """What a valid tlog-proof established."""

    chain_id: str
    seq: int
    kind: str
    event_id: str | None
    origin: str
    tree_size: int
    cosigners: tuple[str, ...]


def build_tlog_proof(entry_value: bytes, history_hashes: Sequence[bytes], signed_head: bytes) -> TlogProof:
    """The tlog-proof of the sealed entry `entry_value`, given the chain hashes of seq 0..n-1 and a head of size n.

    Raises InvalidProofError if the entry is not among those hashes or the head's size is not n.
    """
    kind, record = sealed_codecs().decode(entry_value)
    head = parse_tree_head(parse_note(signed_head).text)
    seq = record["seq"]
    if head.size != len(history_hashes) or not 0 <= seq < head.size or history_hashes[seq] != record["hash"]:
        raise InvalidProofError(
            f"entry seq {seq} of chain {record['chain_id']} is not leaf {seq} of the {len(history_hashes)} "
            f"hashes given for {head.describe()}"
        )
    leaves = [record_leaf_hash(value) for value in history_hashes]
    return TlogProof(seq, tuple(inclusion_proof(leaves, seq)), signed_head, extra=entry_value)


def verify_tlog_proof(data: bytes, policy: WitnessPolicy) -> VerifiedTlogProof:
    """Check a tlog-proof of a chain entry against a witness policy; InvalidProofError saying what failed."""
    try:
        proof = parse_tlog_proof(data)
    except IntegrityError as exc:
        raise InvalidProofError(f"not a tlog-proof: {exc}") from None
    if proof.extra is None:
        raise InvalidProofError("the tlog-proof has no 'extra' line: the sealed entry is needed to rebuild the leaf")
    try:
        kind, record = sealed_codecs().decode(proof.extra)
    except (DecodeError, ValueError) as exc:
        raise InvalidProofError(f"the tlog-proof's extra data is not a sealed entry: {exc}") from None
    if kind not in ENTRY_KINDS:
        raise InvalidProofError(f"the tlog-proof's extra data is a {kind.decode()} record, not a chain entry")
    chain_id, seq = record["chain_id"], record["seq"]
    recomputed = chain_hash(record["prev_hash"], seq, entry_payload(kind, record))
    if recomputed != record["hash"]:
        raise InvalidProofError(
            f"chain {chain_id!r} seq {seq}: the entry's fields hash to {recomputed.hex()[:16]}…, not its "
            f"recorded hash {record['hash'].hex()[:16]}…: the entry was altered"
        )
    if proof.index != seq:
        raise InvalidProofError(f"the tlog-proof's index {proof.index} is not the entry's seq {seq}")
    try:
        note = parse_note(proof.checkpoint)
        head, cosigners = policy.check(note)
    except IntegrityError as exc:
        raise InvalidProofError(f"the proof's tree head does not satisfy the policy: {exc}") from None
    if not head.origin.endswith("/" + chain_id):
        raise InvalidProofError(
            f"the proof's tree head is of origin {head.origin!r}, not a log of chain {chain_id!r}"
        )
    if not verify_inclusion(record_leaf_hash(recomputed), seq, head.size, list(proof.hashes), head.root_hash):
        raise InvalidProofError(
            f"chain {chain_id!r} seq {seq}: the inclusion path does not lead to the root of {head.describe()}"
        )
    event_id = str(event_id_of(record["event"])) if kind == EVENT_KIND else None
    return VerifiedTlogProof(chain_id, seq, kind.decode(), event_id, head.origin, head.size, tuple(cosigners))


def check_head_key(data: bytes, keyring: Keyring) -> str:
    """With the public keyring too: the key id that signed the proof's tree head, which must be valid at the head's
    ``auditseal-time`` and not compromised then; InvalidProofError saying why not."""
    try:
        proof = parse_tlog_proof(data)
        note = parse_note(proof.checkpoint)
        head = parse_tree_head(note.text)
    except IntegrityError as exc:
        raise InvalidProofError(f"not a tlog-proof: {exc}") from None
    times = [line[len(_TIME_LINE):] for line in head.extensions if line.startswith(_TIME_LINE)]
    if len(times) != 1 or not times[0].isdigit():
        raise InvalidProofError(f"{head.describe()} has no single '{_TIME_LINE}<micros>' line: its time is unknown")
    issued = int(times[0])
    for entry in keyring:
        if not verified_signatures(note, [log_verifier(entry.public_key, head.origin)]):
            continue
        if not entry.valid_at(issued):
            raise InvalidProofError(f"{head.describe()} was signed by key {entry.key_id} at {issued}, outside its "
                                    f"validity window {entry.describe_window()}")
        if entry.compromised_at(issued):
            raise InvalidProofError(f"{head.describe()} was signed by key {entry.key_id} after its compromise")
        return entry.key_id
    raise InvalidProofError(f"{head.describe()} is signed by no key of the keyring")
