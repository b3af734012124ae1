"""The one chain-and-checkpoint state machine: what a chain's records say, classified.

Every reader of ``audit.sealed`` that judges a chain goes through :class:`ChainState`: the
verifier (:mod:`pipeline.verifier.chains`, over a topic or an archive), the prover
(:mod:`pipeline.verifier.proofs`, which takes the batch a checkpoint signs from it) and the
sealer's recovery (:mod:`pipeline.sealer.output`, :meth:`pipeline.sealer.chain_sealer.ChainSealer.resume`,
which starts from :meth:`ChainState.after_checkpoint` and refuses a tail the state machine
finds anything wrong with). The state of one chain is its head (seq, hash), the chain hashes of
the entries since the last checkpoint, and that checkpoint; memory stays flat whatever the log's
size. The machine is pure: hashing is :mod:`pipeline.integrity.chain`'s, signatures
:mod:`pipeline.integrity.checkpoint`'s, locations are opaque strings the caller passes.

Each problem becomes a :class:`Violation` of one :class:`ViolationKind` (the one vocabulary:
verification reports, proofs and the sealer all use these names), naming the chain, the sequence
number and the location. After a violation the state resumes from the record's own claims (its
recomputed hash, its seq), so one edit is reported once, not as a cascade.

Entries, against the head at seq ``h`` (``expected`` = h + 1):

- ``altered_record``: the entry's hash does not recompute from its fields and payload; the entry
  is then judged as what it really is (its recomputed hash), which may add a second finding.
- ``duplicate``: seq h again with the head's hash.  ``fork``: seq h with another hash, or seq
  ``expected`` with a prev_hash that is not the head's hash (then the entry becomes the head).
- ``reorder``: a seq below h (out of order, or a replay).
- ``gap``: a seq beyond ``expected``, reported at ``expected``, the first missing seq; the entry
  becomes the head and starts a new batch (the pending one cannot match its checkpoint).
- ``wrong_chain``: the record names another chain than the state's.
- ``malformed_record``: the fields cannot be hashed at all (a prev_hash not 32 bytes, a seq out of range).

Checkpoints: ``unknown_key`` / ``key_not_valid`` / ``bad_signature`` (reported at last_seq),
``checkpoint_chain_broken`` (first_seq does not follow the previous checkpoint's last_seq, or
prev_checkpoint_hash is not its hash; at first_seq), ``checkpoint_mismatch`` (chain head, range or
Merkle root disagree with the entries since the previous checkpoint; at first_seq). At the end,
``unsigned_tail``: entries no checkpoint covers (at the first of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from pipeline.integrity.chain import GENESIS_HASH, GENESIS_SEQ, ChainHead, chain_hash
from pipeline.integrity.checkpoint import (
    Checkpoint,
    check_key_not_compromised,
    checkpoint_hash,
    verify_checkpoint_batch,
    verify_checkpoint_signature,
)
from pipeline.integrity.errors import (
    BadSignatureError,
    CheckpointMismatchError,
    CompromisedKeyError,
    KeyNotValidError,
    MalformedInputError,
    UnknownKeyError,
    short_hex,
)
from pipeline.integrity.keyring import Keyring


class ViolationKind(StrEnum):
    """The kinds of violation, as reported; the values are stable strings (JSON reports, README)."""

    ALTERED = "altered_record"
    GAP = "gap"
    DUPLICATE = "duplicate"
    REORDER = "reorder"
    FORK = "fork"
    WRONG_CHAIN = "wrong_chain"
    MALFORMED = "malformed_record"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    KEY_NOT_VALID = "key_not_valid"
    COMPROMISED_KEY = "compromised_key"  # signed by a revoked key at or after its compromise time
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    CHECKPOINT_CHAIN = "checkpoint_chain_broken"
    UNCHECKPOINTED = "unsigned_tail"


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

    def __str__(self) -> str:
        return f"chain {self.chain_id!r} seq {self.seq}: {self.kind}: {self.detail} ({self.location})"


# what a clean step returns: no allocation on the verifier's path
_CLEAN: tuple[Violation, ...] = ()

_SIGNATURE_KINDS = (
    (UnknownKeyError, ViolationKind.UNKNOWN_KEY),
    (KeyNotValidError, ViolationKind.KEY_NOT_VALID),
    (BadSignatureError, ViolationKind.BAD_SIGNATURE),
    (CompromisedKeyError, ViolationKind.COMPROMISED_KEY),
)


@dataclass(slots=True)
class ChainState:
    """The state of one chain between its records (module docstring), and its transitions.

    The compiled verifier fast path (:class:`pipeline.native.flat_reader.EntryScan`) reads and
    advances ``head_seq``, ``head_hash``, ``batch_first_seq``, ``batch_hashes`` and ``entries``
    directly, for entries :meth:`link` would accept without a finding, exactly as :meth:`link` does.
    """

    chain_id: str
    head_seq: int = GENESIS_SEQ
    head_hash: bytes = GENESIS_HASH
    batch_first_seq: int = 0
    batch_hashes: list[bytes] = field(default_factory=list)
    previous_checkpoint: Checkpoint | None = None
    previous_checkpoint_hash: bytes = GENESIS_HASH
    expected_first_seq: int = 0  # of the next checkpoint: the seq after the previous one's last
    entries: int = 0
    checkpoints: int = 0

    @classmethod
    def after_checkpoint(cls, checkpoint: Checkpoint) -> ChainState:
        """The state right after a trusted checkpoint (the sealer resumes from its committed one).

        Raises MalformedInputError if the checkpoint is unsigned: nothing may chain onto it.
        """
        return cls(checkpoint.chain_id, checkpoint.last_seq, checkpoint.chain_head,
                   batch_first_seq=checkpoint.last_seq + 1, previous_checkpoint=checkpoint,
                   previous_checkpoint_hash=checkpoint_hash(checkpoint), expected_first_seq=checkpoint.last_seq + 1)

    @property
    def head(self) -> ChainHead:
        """The chain's last entry (the genesis head before the first)."""
        return ChainHead(self.chain_id, self.head_seq, self.head_hash)

    @property
    def pending(self) -> int:
        """Entries since the last checkpoint."""
        return len(self.batch_hashes)

    def entry(self, chain_id: str, seq: int, prev_hash: bytes, claimed: bytes, payload: bytes,
              location: str) -> Sequence[Violation]:
        """One entry (its integrity fields and its hashed payload, see :mod:`pipeline.wire.sealed`):
        the hash is recomputed with :func:`~pipeline.integrity.chain.chain_hash`, then :meth:`link`."""
        try:
            recomputed = chain_hash(prev_hash, seq, payload)
        except MalformedInputError as exc:
            return self.malformed(seq, location, exc)
        return self.link(chain_id, seq, prev_hash, claimed, recomputed, location)

    def malformed(self, seq: Any, location: str, problem: Exception | str) -> Sequence[Violation]:
        """An entry whose fields cannot be hashed: reported, the state unchanged."""
        return (Violation(ViolationKind.MALFORMED, self.chain_id, seq, location,
                          f"cannot recompute the hash: {problem}"),)

    def link(self, chain_id: str, seq: int, prev_hash: bytes, claimed: bytes, recomputed: bytes,
             location: str) -> Sequence[Violation]:
        """One entry whose hash the caller recomputed (``recomputed``; ``claimed`` is the one it carries).

        The caller guarantees the types and ranges :func:`~pipeline.integrity.chain.chain_hash`
        checks (:meth:`entry` does it for you). Classified as in the module docstring.
        """
        if chain_id != self.chain_id:
            return (Violation(ViolationKind.WRONG_CHAIN, self.chain_id, seq, location,
                              f"expected a record of chain {self.chain_id!r}, found one of chain {chain_id!r}"),)
        head_seq, head_hash = self.head_seq, self.head_hash
        expected = head_seq + 1
        if recomputed == claimed and seq == expected and prev_hash == head_hash:
            # the clean case first: one comparison chain, no allocation
            if not self.batch_hashes:
                self.batch_first_seq = seq
            self.batch_hashes.append(recomputed)
            self.head_seq, self.head_hash = seq, recomputed
            self.entries += 1
            return _CLEAN
        found: list[Violation] = []
        if recomputed != claimed:
            found.append(Violation(
                ViolationKind.ALTERED, self.chain_id, seq, location,
                f"expected hash {short_hex(recomputed)} (recomputed from prev_hash, seq and payload), "
                f"found {short_hex(claimed)}: the record was altered"))
        # later links are judged against what this record really is
        if seq == head_seq:
            if recomputed == head_hash:
                found.append(Violation(ViolationKind.DUPLICATE, self.chain_id, seq, location,
                                       f"expected seq {expected}, found seq {seq} again "
                                       f"with the head's hash {short_hex(recomputed)}"))
            else:  # two different entries claim one position: a forged insert or a second history
                found.append(Violation(ViolationKind.FORK, self.chain_id, seq, location,
                                       f"expected the record at seq {head_seq} to have hash {short_hex(head_hash)}, "
                                       f"found a second record with hash {short_hex(recomputed)}"))
            return found
        if seq < expected:
            found.append(Violation(ViolationKind.REORDER, self.chain_id, seq, location,
                                   f"expected seq {expected}, found seq {seq}, "
                                   f"which precedes the chain head at seq {head_seq}"))
            return found
        if seq > expected:
            missing = seq - expected
            found.append(Violation(ViolationKind.GAP, self.chain_id, expected, location,
                                   f"expected seq {expected}, found seq {seq}: "
                                   f"{missing} record{'s' if missing > 1 else ''} missing "
                                   f"(seq {expected}..{seq - 1})"))
            # the pending batch cannot match its checkpoint any more: restart it at this entry
            self.batch_hashes = []
        elif prev_hash != head_hash:
            found.append(Violation(ViolationKind.FORK, self.chain_id, seq, location,
                                   f"expected prev_hash {short_hex(head_hash)} (the head at seq {head_seq}), "
                                   f"found {short_hex(prev_hash)}: the record extends a different history"))
        if not self.batch_hashes:
            self.batch_first_seq = seq
        self.batch_hashes.append(recomputed)
        self.head_seq, self.head_hash = seq, recomputed
        self.entries += 1
        return found

    def checkpoint(self, checkpoint: Checkpoint, location: str,
                   keyring: Keyring | None) -> Sequence[Violation]:
        """One checkpoint: its signature (skipped with no ``keyring``: a prover, whose proof is
        verified offline), its continuity with the previous checkpoint, and the batch it signs.

        Whatever is found, the checkpoint then closes the batch and becomes the previous one.
        Raises MalformedInputError for an unsigned checkpoint, which has no hash to chain onto.
        """
        if checkpoint.chain_id != self.chain_id:
            return (Violation(ViolationKind.WRONG_CHAIN, self.chain_id, checkpoint.first_seq, location,
                              f"expected a checkpoint of chain {self.chain_id!r}, "
                              f"found {checkpoint.describe()}"),)
        found: list[Violation] = []
        if keyring is not None:
            try:
                # a valid signature by a key revoked as compromised proves nothing (keys revoke)
                check_key_not_compromised(checkpoint, verify_checkpoint_signature(checkpoint, keyring))
            except (UnknownKeyError, KeyNotValidError, BadSignatureError, CompromisedKeyError) as exc:
                kind = next(kind for error, kind in _SIGNATURE_KINDS if isinstance(exc, error))
                found.append(Violation(kind, self.chain_id, checkpoint.last_seq, location, str(exc)))
        continuity = self._continuity(checkpoint)
        if continuity is not None:
            found.append(Violation(ViolationKind.CHECKPOINT_CHAIN, self.chain_id, checkpoint.first_seq, location,
                                   continuity))
        if self.batch_hashes:
            try:  # the Merkle root in one compiled call (merkle.record_tree_root)
                verify_checkpoint_batch(checkpoint, self.chain_id, self.batch_first_seq, self.batch_hashes)
            except CheckpointMismatchError as exc:
                found.append(Violation(ViolationKind.CHECKPOINT_MISMATCH, self.chain_id, checkpoint.first_seq,
                                       location, str(exc)))
        else:
            found.append(Violation(ViolationKind.CHECKPOINT_MISMATCH, self.chain_id, checkpoint.first_seq, location,
                                   f"{checkpoint.describe()}: expected the entries it signs, found none before it"))
        self.batch_hashes = []
        self.batch_first_seq = self.expected_first_seq = checkpoint.last_seq + 1
        self.previous_checkpoint = checkpoint
        self.previous_checkpoint_hash = checkpoint_hash(checkpoint)
        self.checkpoints += 1
        return found

    def unreadable_checkpoint(self, last_seq: int, stored_hash: bytes, location: str,
                              problem: str) -> Sequence[Violation]:
        """A checkpoint record with a field out of its domain (an empty or short signature, a key id that is
        not 16 hex digits): that field's violation, here, once. The batch it claims stays unverified; the
        next checkpoint is held to follow it (its ``last_seq`` and the ``checkpoint_hash`` it stored), so one
        bad field is one finding and the rest of the chain is still checked."""
        found = (Violation(ViolationKind.MALFORMED, self.chain_id, last_seq, location, f"checkpoint: {problem}"),)
        self.batch_hashes = []
        self.batch_first_seq = self.expected_first_seq = last_seq + 1
        self.previous_checkpoint_hash = stored_hash
        self.checkpoints += 1
        return found

    def _continuity(self, checkpoint: Checkpoint) -> str | None:
        # what differs between the checkpoint and the one it should follow, or None
        previous = self.previous_checkpoint
        expected_first = self.expected_first_seq
        if checkpoint.first_seq != expected_first:
            after = (f"after {previous.describe()}" if previous is not None else "it is the chain's first"
                     if expected_first == 0 else f"after an unreadable checkpoint ending at seq {expected_first - 1}")
            return f"{checkpoint.describe()}: expected first_seq {expected_first}, found {checkpoint.first_seq} ({after})"
        if checkpoint.prev_checkpoint_hash != self.previous_checkpoint_hash:
            return (f"{checkpoint.describe()}: expected prev_checkpoint_hash "
                    f"{short_hex(self.previous_checkpoint_hash)} (the chain's previous checkpoint), "
                    f"found {short_hex(checkpoint.prev_checkpoint_hash)}")
        return None

    def finish(self, location: str) -> Sequence[Violation]:
        """The end of the records read: entries after the last checkpoint are covered by no signature."""
        if not self.batch_hashes:
            return _CLEAN
        count = len(self.batch_hashes)
        self.batch_hashes = []
        return (Violation(ViolationKind.UNCHECKPOINTED, self.chain_id, self.batch_first_seq, location,
                          f"{count} entries after the last checkpoint are covered by no signature"),)
