"""Inclusion proofs of one sealed event against its signed checkpoint (RFC 9162 section 2.1.3).

``auditseal prove EVENT_ID`` finds the event in the archive and writes a proof; ``auditseal
verify-proof`` checks one offline, with only the public keyring. The proof is JSON (bytes as
lowercase hex)::

    {"version": 1, "event_id": "...",
     "entry": {"kind": "event", "chain_id", "seq", "prev_hash", "hash", "source_partition",
               "source_offset", "source_timestamp_micros", "event"},       every field of the sealed record
     "chain_hash": hex,                        the entry's chain hash (its Merkle leaf data)
     "leaf_index": seq - checkpoint.first_seq, "tree_size": checkpoint.last_seq - first_seq + 1,
     "audit_path": [hex, ...],                 PATH(leaf_index, batch), RFC 6962 section 2.1.1
     "chain_head_path": [hex, ...],            PATH(tree_size - 1, batch): the signed chain_head is the last leaf
     "checkpoint": {every field of the checkpoint record},
     "location": {"entry": "<object key> offset N", "checkpoint": "<object key> offset M"}}

What a valid proof establishes: the entry's hash recomputes from its fields (chain hash over
``entry_payload``), so the event bytes, their source coordinates and the chain position are the
ones hashed; that hash is leaf ``leaf_index`` of the Merkle tree whose root the checkpoint carries;
the checkpoint's signature verifies under a keyring key valid when it was issued; and its
``chain_head`` is the tree's last leaf, at ``last_seq``. Nothing else in the proof is trusted.

This module is pure: :class:`ProofFinder` consumes decoded records in chain order and
:func:`verify_proof` takes the parsed JSON; reading the archive is the command's job.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import AuditSealError
from pipeline.integrity.chain import chain_hash
from pipeline.integrity.chain_state import ChainState, Violation, ViolationKind
from pipeline.integrity.checkpoint import (
    Checkpoint,
    check_key_not_compromised,
    checkpoint_hash,
    verify_checkpoint_signature,
)
from pipeline.integrity.errors import IntegrityError, MalformedInputError
from pipeline.integrity.keyring import Keyring, KeyringEntry
from pipeline.integrity.merkle import inclusion_proof, record_leaf_hash, verify_inclusion
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import EVENT_KIND, REJECTION_KIND, checkpoint_from_record, entry_payload

PROOF_VERSION = 1

_ENTRY_FIELDS = {
    EVENT_KIND: {"chain_id": str, "seq": int, "prev_hash": bytes, "hash": bytes, "source_partition": int,
                 "source_offset": int, "source_timestamp_micros": int, "event": bytes},
    REJECTION_KIND: {"chain_id": str, "seq": int, "prev_hash": bytes, "hash": bytes, "source_partition": int,
                     "source_offset": int, "source_timestamp_micros": int, "raw_sha256": bytes, "raw_size": int,
                     "reason": str},
}
_CHECKPOINT_FIELDS = {"chain_id": str, "first_seq": int, "last_seq": int, "merkle_root": bytes, "chain_head": bytes,
                      "prev_checkpoint_hash": bytes, "key_id": str, "issued_at_micros": int, "signature": bytes,
                      "checkpoint_hash": bytes, "last_source_offset": int}
# a version 2 checkpoint also signs these; a proof of a version 1 checkpoint has neither
_CHECKPOINT_V2_FIELDS = {"origin": str, "first_source_offset": int}


class InvalidProofError(AuditSealError):
    """A proof that does not prove what it claims; the message names the check that failed."""


class ProofNotFoundError(AuditSealError):
    """No archived event has the id, or no checkpoint covers it yet."""


def _to_json(value: Any) -> Any:
    return value.hex() if isinstance(value, (bytes, bytearray)) else value


def _record_json(record: Mapping[str, Any], fields: Mapping[str, type]) -> dict[str, Any]:
    return {name: _to_json(record[name]) for name in fields}


def _record_from_json(raw: Any, fields: Mapping[str, type], what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidProofError(f"malformed proof: {what} must be a JSON object, found {type(raw).__name__}")
    record = {}
    for name, kind in fields.items():
        if name not in raw:
            raise InvalidProofError(f"malformed proof: {what}.{name} is missing")
        record[name] = _field(raw[name], kind, f"{what}.{name}")
    return record


def _field(value: Any, kind: type, what: str) -> Any:
    if kind is bytes:
        if not isinstance(value, str):
            raise InvalidProofError(f"malformed proof: {what} must be a hex string, found {value!r}")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise InvalidProofError(f"malformed proof: {what} is not hex: {value[:40]!r}") from None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidProofError(f"malformed proof: {what} must be {kind.__name__}, found {value!r}")
    return value


def event_id_of(event_bytes: bytes) -> uuid.UUID:
    """The AuditEvent.event_id of a sealed event's inner bytes (any known schema version)."""
    return default_codec().decode(event_bytes)["event_id"]


def build_proof(
    event_id: str, entry_kind: bytes, entry: Mapping[str, Any], batch_hashes: list[bytes],
    checkpoint_record: Mapping[str, Any], location: Mapping[str, str],
) -> dict[str, Any]:
    """The JSON-ready proof of ``entry`` in the batch its checkpoint signs.

    ``batch_hashes`` are the chain hashes of the batch's entries, seq ``checkpoint.first_seq`` onwards.
    Raises InvalidProofError if the batch does not match the checkpoint (the archive is damaged:
    ``auditseal verify`` says where).
    """
    checkpoint = checkpoint_from_record(checkpoint_record)
    index = entry["seq"] - checkpoint.first_seq
    if len(batch_hashes) != checkpoint.tree_size or not 0 <= index < len(batch_hashes):
        raise InvalidProofError(f"{checkpoint.describe()} does not cover the {len(batch_hashes)} entries read "
                                f"before it (entry seq {entry['seq']}): run auditseal verify on the archive")
    leaves = [record_leaf_hash(value) for value in batch_hashes]
    return {
        "version": PROOF_VERSION,
        "event_id": event_id,
        "entry": {"kind": entry_kind.decode(), **_record_json(entry, _ENTRY_FIELDS[entry_kind])},
        "chain_hash": entry["hash"].hex(),
        "leaf_index": index,
        "tree_size": len(leaves),
        "audit_path": [node.hex() for node in inclusion_proof(leaves, index)],
        "chain_head_path": [node.hex() for node in inclusion_proof(leaves, len(leaves) - 1)],
        "checkpoint": _record_json(checkpoint_record, _CHECKPOINT_FIELDS
                                   if checkpoint.origin is None else {**_CHECKPOINT_FIELDS, **_CHECKPOINT_V2_FIELDS}),
        "location": dict(location),
    }


@dataclass(frozen=True)
class VerifiedProof:
    """What a valid proof established."""

    event_id: str
    chain_id: str
    seq: int
    checkpoint: Checkpoint
    key: KeyringEntry


def verify_proof(proof: Any, keyring: Keyring) -> VerifiedProof:
    """Check a parsed proof (module docstring) offline; InvalidProofError naming the failed check."""
    if not isinstance(proof, dict):
        raise InvalidProofError(f"malformed proof: expected a JSON object, found {type(proof).__name__}")
    if proof.get("version") != PROOF_VERSION:
        raise InvalidProofError(f"malformed proof: version {proof.get('version')!r}, expected {PROOF_VERSION}")
    raw_entry = proof.get("entry")
    kind = (raw_entry.get("kind") if isinstance(raw_entry, dict) else None) or ""
    entry_kind = kind.encode() if isinstance(kind, str) else b""
    if entry_kind not in _ENTRY_FIELDS:
        raise InvalidProofError(f"malformed proof: entry.kind {kind!r}, expected event or rejection")
    entry = _record_from_json(raw_entry, _ENTRY_FIELDS[entry_kind], "entry")
    raw_checkpoint = proof.get("checkpoint")
    v2 = isinstance(raw_checkpoint, dict) and bool(raw_checkpoint.get("origin"))
    record = _record_from_json(raw_checkpoint, {**_CHECKPOINT_FIELDS, **_CHECKPOINT_V2_FIELDS} if v2
                               else _CHECKPOINT_FIELDS, "checkpoint")
    claimed_hash = _field(proof.get("chain_hash"), bytes, "chain_hash")
    index = _field(proof.get("leaf_index"), int, "leaf_index")
    tree_size = _field(proof.get("tree_size"), int, "tree_size")
    event_id = _field(proof.get("event_id"), str, "event_id")
    paths = {}
    for name in ("audit_path", "chain_head_path"):
        nodes = proof.get(name)
        if not isinstance(nodes, list):
            raise InvalidProofError(f"malformed proof: {name} must be a list of hex hashes")
        paths[name] = [_field(node, bytes, f"{name}[{n}]") for n, node in enumerate(nodes)]
    try:
        checkpoint = checkpoint_from_record(record)
        recomputed = chain_hash(entry["prev_hash"], entry["seq"], entry_payload(entry_kind, entry))
    except MalformedInputError as exc:
        raise InvalidProofError(f"malformed proof: {exc}") from None
    chain_id, seq = entry["chain_id"], entry["seq"]
    where = f"entry chain {chain_id} seq {seq}"

    if recomputed != entry["hash"]:
        raise InvalidProofError(f"{where}: hash {entry['hash'].hex()[:16]}… does not recompute from the entry's "
                                f"fields (recomputed {recomputed.hex()[:16]}…): the entry was altered")
    if claimed_hash != recomputed:
        raise InvalidProofError(f"{where}: chain_hash {claimed_hash.hex()[:16]}… is not the entry's hash")
    if entry_kind == EVENT_KIND:
        _check_event_id(event_id, entry["event"], where)
    if chain_id != checkpoint.chain_id:
        raise InvalidProofError(f"{where}: the checkpoint is of chain {checkpoint.chain_id}")
    if not checkpoint.first_seq <= seq <= checkpoint.last_seq:
        raise InvalidProofError(f"{where}: outside the checkpoint's seq {checkpoint.first_seq}..{checkpoint.last_seq}")
    if (index, tree_size) != (seq - checkpoint.first_seq, checkpoint.tree_size):
        raise InvalidProofError(f"{where}: leaf_index {index} and tree_size {tree_size} do not match the "
                                f"checkpoint's range (expected {seq - checkpoint.first_seq} of {checkpoint.tree_size})")
    if not verify_inclusion(record_leaf_hash(recomputed), index, tree_size, paths["audit_path"], checkpoint.merkle_root):
        raise InvalidProofError(f"{where}: the audit path does not lead from the entry to the checkpoint's Merkle "
                                f"root {checkpoint.merkle_root.hex()[:16]}…")
    if seq == checkpoint.last_seq and recomputed != checkpoint.chain_head:
        raise InvalidProofError(f"{where}: it is the checkpoint's last entry but not its chain_head")
    if not verify_inclusion(record_leaf_hash(checkpoint.chain_head), tree_size - 1, tree_size,
                            paths["chain_head_path"], checkpoint.merkle_root):
        raise InvalidProofError(f"{checkpoint.describe()}: chain_head is not the last leaf (seq {checkpoint.last_seq}) "
                                "of the tree the Merkle root signs")
    try:
        key = verify_checkpoint_signature(checkpoint, keyring)
        check_key_not_compromised(checkpoint, key)
    except IntegrityError as exc:
        raise InvalidProofError(f"checkpoint signature: {exc}") from None
    if record["checkpoint_hash"] != checkpoint_hash(checkpoint):
        raise InvalidProofError(f"{checkpoint.describe()}: checkpoint_hash does not recompute from the checkpoint")
    return VerifiedProof(event_id, chain_id, seq, checkpoint, key)


def _check_event_id(event_id: str, event_bytes: bytes, where: str) -> None:
    try:
        wanted = uuid.UUID(event_id)
        found = event_id_of(event_bytes)
    except (ValueError, AuditSealError) as exc:
        raise InvalidProofError(f"{where}: the event does not decode or the id is no UUID: {exc}") from None
    if found != wanted:
        raise InvalidProofError(f"{where}: the proof is for event {event_id}, the entry holds event {found}")


@dataclass
class ProofFinder:
    """Finds one event in a stream of decoded ``audit.sealed`` records and builds its proof.

    Feed records in chain order (:meth:`entry`, :meth:`checkpoint`); once the checkpoint covering
    the event has been fed, :attr:`proof` holds the JSON-ready proof. Each chain goes through the
    integrity core's state machine (:class:`~pipeline.integrity.chain_state.ChainState`), whose
    batch is the one the checkpoint signs; a batch it finds anything wrong with is not proven
    from (InvalidProofError naming the violation: ``auditseal verify`` reports them all).
    """

    event_id: str
    wanted: uuid.UUID = field(init=False)
    proof: dict[str, Any] | None = None
    found_at: str | None = None
    _chains: dict[str, ChainState] = field(default_factory=dict)
    _batch_violations: dict[str, list[Violation]] = field(default_factory=dict)
    _entry: tuple[bytes, dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        try:
            self.wanted = uuid.UUID(self.event_id)
        except ValueError:
            raise ProofNotFoundError(f"event id {self.event_id!r} is not a UUID") from None

    @property
    def done(self) -> bool:
        """Whether the proof is complete."""
        return self.proof is not None

    def _chain(self, chain_id: str) -> ChainState:
        chain = self._chains.get(chain_id)
        if chain is None:
            chain = self._chains[chain_id] = ChainState(chain_id)
        return chain

    def entry(self, kind: bytes, record: Mapping[str, Any], location: str) -> None:
        """One sealed event or rejection."""
        chain = self._chain(record["chain_id"])
        try:
            payload = entry_payload(kind, record)
        except (MalformedInputError, KeyError, TypeError) as exc:
            found = chain.malformed(record["seq"], location, exc)
        else:
            found = chain.entry(record["chain_id"], record["seq"], record["prev_hash"], record["hash"], payload,
                                location)
        if found:
            self._batch_violations.setdefault(chain.chain_id, []).extend(found)
        if self._entry is None and kind == EVENT_KIND and self._matches(record["event"]):
            self._entry = (kind, dict(record))
            self.found_at = location

    def _matches(self, event_bytes: bytes) -> bool:
        try:
            return event_id_of(event_bytes) == self.wanted
        except AuditSealError:
            return False  # an undecodable event is not the one asked for; verify reports it

    def checkpoint(self, record: Mapping[str, Any], location: str) -> None:
        """One checkpoint record: it closes its chain's batch."""
        chain = self._chain(record["chain_id"])
        hashes = chain.batch_hashes  # the checkpoint starts a new list
        found = self._batch_violations.pop(chain.chain_id, [])
        try:
            # the signature is not checked here: verify-proof checks it offline, against the keyring
            found.extend(chain.checkpoint(checkpoint_from_record(record), location, None))
        except MalformedInputError as exc:  # nothing can be proven from it; a later batch is damaged too
            found.append(Violation(ViolationKind.MALFORMED, chain.chain_id, record["first_seq"], location, str(exc)))
            self._batch_violations[chain.chain_id] = found
        if self._entry is None or self.proof is not None:
            return
        kind, entry = self._entry
        if entry["chain_id"] != chain.chain_id:
            return
        if found:
            raise InvalidProofError(f"event {self.event_id} (chain {chain.chain_id} seq {entry['seq']}) is in a "
                                    f"damaged batch: {found[0]}; run auditseal verify on the archive")
        self.proof = build_proof(self.event_id, kind, entry, hashes, record,
                                 {"entry": self.found_at or "", "checkpoint": location})

    def result(self) -> dict[str, Any]:
        """The proof, or ProofNotFoundError saying what is missing."""
        if self.proof is not None:
            return self.proof
        if self._entry is not None:
            raise ProofNotFoundError(f"event {self.event_id} is archived at {self.found_at}, but no archived "
                                     "checkpoint covers it yet")
        raise ProofNotFoundError(f"no archived event has event_id {self.event_id}")
