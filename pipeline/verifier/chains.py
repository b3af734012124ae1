"""Streaming verification of chains and checkpoints, with no I/O.

Feed the records of ``audit.sealed`` (from the topic or from archived objects) in chain order to a
:class:`ChainAuditor`; it keeps per chain only the head, the hashes since the last checkpoint and
the last checkpoint, so memory stays flat whatever the size of the log. Each problem becomes a
:class:`Violation` naming its kind, chain, sequence number and location, and verification resumes
from the record's own claims so that one edit is reported once, not as a cascade.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.integrity.chain import GENESIS_HASH, chain_hash, chain_hash_unchecked
from pipeline.integrity.checkpoint import (
    Checkpoint,
    checkpoint_hash,
    verify_checkpoint_batch,
    verify_checkpoint_signature,
)
from pipeline.integrity.errors import (
    BadSignatureError,
    CheckpointMismatchError,
    KeyNotValidError,
    MalformedInputError,
    UnknownKeyError,
)
from pipeline.integrity.keyring import Keyring
from pipeline.integrity.merkle import HASH_SIZE
from pipeline.wire.sealed import checkpoint_from_record, entry_payload

# kinds of violation, as reported
ALTERED = "altered_record"          # a record's hash does not recompute from its content
GAP = "gap"                         # entries missing between two sequence numbers
DUPLICATE = "duplicate"             # the same entry twice
REORDER = "reorder"                 # an entry earlier than the chain head (out of order)
FORK = "fork"                       # prev_hash does not link to the previous entry
BAD_SIGNATURE = "bad_signature"
UNKNOWN_KEY = "unknown_key"
KEY_NOT_VALID = "key_not_valid"
CHECKPOINT_MISMATCH = "checkpoint_mismatch"    # root, head or range disagree with the entries
CHECKPOINT_CHAIN = "checkpoint_chain_broken"   # prev_checkpoint_hash or seq continuity broken
UNCHECKPOINTED = "unsigned_tail"               # entries no checkpoint covers
MALFORMED = "malformed_record"


@dataclass(frozen=True)
class Violation:
    """One problem found: what, in which chain, at which sequence number, where."""

    kind: str
    chain_id: str | None
    seq: int | None
    location: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class _Chain:
    chain_id: str
    head_seq: int = -1
    head_hash: bytes = GENESIS_HASH
    batch_first_seq: int = 0
    batch_hashes: list[bytes] = field(default_factory=list)
    previous_checkpoint: Checkpoint | None = None
    previous_checkpoint_hash: bytes = GENESIS_HASH
    entries: int = 0
    checkpoints: int = 0


@dataclass
class ChainAuditor:
    """Verifies entries and checkpoints of any number of chains, fed in chain order."""

    keyring: Keyring
    violations: list[Violation] = field(default_factory=list)
    chains: dict[str, _Chain] = field(default_factory=dict)
    entries_checked: int = 0
    checkpoints_checked: int = 0
    checkpoints_valid: int = 0

    def _chain(self, chain_id: str) -> _Chain:
        chain = self.chains.get(chain_id)
        if chain is None:
            chain = self.chains[chain_id] = _Chain(chain_id)
        return chain

    def _report(self, kind: str, chain_id: str | None, seq: int | None, location: str, detail: str) -> None:
        self.violations.append(Violation(kind, chain_id, seq, location, detail))

    def entry(self, kind: bytes, record: Mapping[str, Any], location: str) -> None:
        """Check one sealed event or rejection (``kind`` is its record kind)."""
        seq, prev_hash, claimed = record["seq"], record["prev_hash"], record["hash"]
        try:
            recomputed = chain_hash(prev_hash, seq, entry_payload(kind, record))
        except (MalformedInputError, KeyError, TypeError) as exc:
            self._malformed(record["chain_id"], seq, location, exc)
            return
        self._link(record["chain_id"], seq, prev_hash, claimed, recomputed, location)

    def entry_fields(self, chain_id: str, seq: int, prev_hash: bytes, claimed: bytes, payload: bytes,
                     location: str) -> None:
        """:meth:`entry` for the fields of a strictly decoded entry and its payload
        (:meth:`pipeline.wire.sealed.SealedCodecs.decode_fields`, :func:`~pipeline.wire.sealed.entry_payload_of_fields`).

        The decoder guarantees the types (str, int, bytes); the range of ``seq`` (Avro longs are
        below 2**63) and the size of ``prev_hash`` are checked here, once, before the unchecked hash.
        """
        if seq < 0 or len(prev_hash) != HASH_SIZE:
            try:
                chain_hash(prev_hash, seq, payload)  # raises, naming the field
            except MalformedInputError as exc:
                self._malformed(chain_id, seq, location, exc)
                return
        self._link(chain_id, seq, prev_hash, claimed, chain_hash_unchecked(prev_hash, seq, payload), location)

    def _malformed(self, chain_id: str, seq: Any, location: str, exc: Exception) -> None:
        self.entries_checked += 1
        chain = self._chain(chain_id)
        self._report(MALFORMED, chain.chain_id, seq, location, f"cannot recompute the hash: {exc}")

    def _link(self, chain_id: str, seq: int, prev_hash: bytes, claimed: bytes, recomputed: bytes,
              location: str) -> None:
        # what entry() checks once the entry's own hash is recomputed
        self.entries_checked += 1
        chain = self.chains.get(chain_id)
        if chain is None:
            chain = self.chains[chain_id] = _Chain(chain_id)
        if recomputed != claimed:
            self._report(ALTERED, chain.chain_id, seq, location,
                         f"hash {claimed.hex()[:16]}… does not match its content (recomputed {recomputed.hex()[:16]}…)")
            claimed = recomputed  # later links are judged against what this record really is
        expected = chain.head_seq + 1
        if seq == chain.head_seq and claimed == chain.head_hash:
            self._report(DUPLICATE, chain.chain_id, seq, location, f"entry seq {seq} appears again")
            return
        if seq == chain.head_seq:
            # two different entries claim one position: a forged insert or a second history (as verify_link says)
            self._report(FORK, chain.chain_id, seq, location,
                         f"a second entry at seq {seq} ({claimed.hex()[:16]}…, the first was "
                         f"{chain.head_hash.hex()[:16]}…)")
            return
        if seq < expected:
            self._report(REORDER, chain.chain_id, seq, location,
                         f"entry seq {seq} after seq {chain.head_seq}: out of order or replayed")
            return
        if seq > expected:
            self._report(GAP, chain.chain_id, expected, location,
                         f"entries seq {expected}..{seq - 1} are missing ({seq - expected} entries)")
            self._close_batch_at_gap(chain, seq)
        elif prev_hash != chain.head_hash:
            self._report(FORK, chain.chain_id, seq, location,
                         f"prev_hash {prev_hash.hex()[:16]}… does not link to seq {chain.head_seq} "
                         f"({chain.head_hash.hex()[:16]}…)")
        if not chain.batch_hashes:
            chain.batch_first_seq = seq
        chain.batch_hashes.append(claimed)
        chain.head_seq, chain.head_hash = seq, claimed
        chain.entries += 1

    def _close_batch_at_gap(self, chain: _Chain, seq: int) -> None:
        # after a gap the pending batch cannot match its checkpoint; restart it at the new entry
        chain.batch_hashes = []
        chain.batch_first_seq = seq

    def checkpoint(self, record: Mapping[str, Any], location: str) -> None:
        """Check one checkpoint against the entries since the previous one and the keyring."""
        self.checkpoints_checked += 1
        try:
            checkpoint = checkpoint_from_record(record)
        except MalformedInputError as exc:  # a field out of its domain: that field's violation, here
            chain = self._chain(record["chain_id"])
            self._report(MALFORMED, chain.chain_id, record["last_seq"], location, f"checkpoint: {exc}")
            # the batch it claims stays unverified (reported here, once); the next checkpoint links to it
            chain.batch_hashes, chain.previous_checkpoint_hash = [], record["checkpoint_hash"]
            chain.checkpoints += 1
            return
        chain = self._chain(checkpoint.chain_id)
        ok = True
        try:
            verify_checkpoint_signature(checkpoint, self.keyring)
        except UnknownKeyError as exc:
            ok = False
            self._report(UNKNOWN_KEY, chain.chain_id, checkpoint.last_seq, location, str(exc))
        except KeyNotValidError as exc:
            ok = False
            self._report(KEY_NOT_VALID, chain.chain_id, checkpoint.last_seq, location, str(exc))
        except BadSignatureError as exc:
            ok = False
            self._report(BAD_SIGNATURE, chain.chain_id, checkpoint.last_seq, location, str(exc))
        if checkpoint.prev_checkpoint_hash != chain.previous_checkpoint_hash:
            ok = False
            self._report(CHECKPOINT_CHAIN, chain.chain_id, checkpoint.first_seq, location,
                         "prev_checkpoint_hash does not match the chain's previous checkpoint")
        if chain.batch_hashes:
            try:  # the Merkle root in one compiled call (merkle.record_tree_root)
                verify_checkpoint_batch(checkpoint, chain.chain_id, chain.batch_first_seq, chain.batch_hashes)
            except CheckpointMismatchError as exc:
                ok = False
                self._report(CHECKPOINT_MISMATCH, chain.chain_id, checkpoint.first_seq, location, str(exc))
        else:
            ok = False
            self._report(CHECKPOINT_MISMATCH, chain.chain_id, checkpoint.first_seq, location,
                         f"checkpoint over seq {checkpoint.first_seq}..{checkpoint.last_seq} but no entries precede it")
        if ok:
            self.checkpoints_valid += 1
        chain.batch_hashes = []
        chain.previous_checkpoint = checkpoint
        # an unsigned checkpoint (reported above) has no hash of its own: the next one links to the stored one
        chain.previous_checkpoint_hash = checkpoint_hash(checkpoint) if checkpoint.is_signed else record["checkpoint_hash"]
        chain.checkpoints += 1

    def finish(self, location: str = "end of log") -> list[Violation]:
        """Report entries that no checkpoint covers, and return every violation found."""
        for chain in self.chains.values():
            if chain.batch_hashes:
                self._report(UNCHECKPOINTED, chain.chain_id, chain.batch_first_seq, location,
                             f"{len(chain.batch_hashes)} entries after the last checkpoint are covered by no signature")
                chain.batch_hashes = []
        return self.violations
