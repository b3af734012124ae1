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

Raw offsets (version 2 checkpoints, which sign the raw offset range their batch accounts for): each
entry names the raw offsets it accounts for (an event or rejection one, a gap entry a range), and the
state follows the next raw offset expected. A v2 checkpoint is held to ``unaccounted_offsets`` when
its batch skips or repeats a raw offset, when its signed range is not the one its entries cover, or
when it does not start right after the previous v2 checkpoint's range (at first_seq or at the entry);
``origin_mismatch`` when its origin is not the one the chain's earlier v2 checkpoints named. A
version 1 checkpoint after a version 2 one is ``checkpoint_chain_broken`` (a downgrade would escape
these checks). Version 1 batches sign no offsets and are not held to them.
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
from pipeline.integrity.history_tree import HistoryTree, extended_by_batch, extended_by_leaves
from pipeline.integrity.keyring import Keyring
from pipeline.integrity.merkle import record_leaves


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
    UNACCOUNTED_OFFSETS = "unaccounted_offsets"  # raw offsets a v2 batch neither seals nor names as a gap
    ORIGIN_MISMATCH = "origin_mismatch"          # a v2 checkpoint of another log than the chain's
    LOST_RECORDS = "lost_records"                # a gap entry: raw records expired or deleted before sealing
    HEAD_MISMATCH = "head_mismatch"              # a tree head whose size or root is not the chain's as read
    STALE_HEAD = "stale_head"                    # the chain's newest head is older than --as-of minus the tolerance
    LOGGING_GAP = "logging_gap"                  # two consecutive heads further apart than the tolerance


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
    directly, for entries :meth:`link` would accept without a finding, exactly as :meth:`link` does;
    and, for the raw offsets, ``next_source_offset``, ``batch_first_source`` and ``batch_expected_source``.
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
    # raw offsets: the one after the last entry's (-1: not known), the first the batch's entries name,
    # what was expected when the batch began, and the batch's first discontinuity (seq, expected, found, where)
    next_source_offset: int = -1
    batch_first_source: int = -1
    batch_expected_source: int = -1
    batch_source_break: tuple[int, int, int, str] | None = None
    previous_source_last: int = -1  # last_source_offset of the previous checkpoint if it is v2, else -1
    origin: str | None = None  # of the chain's v2 checkpoints, once one was read
    # the Merkle root of batch_hashes[:count] built with a tree head's history tree: (that list, count, root)
    root_of_batch: tuple[list[bytes], int, bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def after_checkpoint(cls, checkpoint: Checkpoint) -> ChainState:
        """The state right after a trusted checkpoint (the sealer resumes from its committed one).

        Raises MalformedInputError if the checkpoint is unsigned: nothing may chain onto it.
        """
        source_last = -1 if checkpoint.last_source_offset is None else checkpoint.last_source_offset
        return cls(checkpoint.chain_id, checkpoint.last_seq, checkpoint.chain_head,
                   batch_first_seq=checkpoint.last_seq + 1, previous_checkpoint=checkpoint,
                   previous_checkpoint_hash=checkpoint_hash(checkpoint), expected_first_seq=checkpoint.last_seq + 1,
                   next_source_offset=source_last + 1 if source_last >= 0 else -1,
                   previous_source_last=source_last, origin=checkpoint.origin)

    @property
    def head(self) -> ChainHead:
        """The chain's last entry (the genesis head before the first)."""
        return ChainHead(self.chain_id, self.head_seq, self.head_hash)

    @property
    def pending(self) -> int:
        """Entries since the last checkpoint."""
        return len(self.batch_hashes)

    def history_with_batch(self, history: HistoryTree, start: int = 0) -> HistoryTree:
        """``history`` extended by the pending batch's entries from its ``start``-th (a tree head's history tree).

        From the batch's first entry, the batch's tree is built once for both: the history tree's subtrees
        are its nodes, and its root is kept for the batch's checkpoint, which then hashes nothing again
        (:func:`~pipeline.integrity.history_tree.extended_by_batch`)."""
        hashes = self.batch_hashes
        if start or not hashes:
            return extended_by_leaves(history, record_leaves(hashes[start:]))
        extended, root = extended_by_batch(history, record_leaves(hashes))
        self.root_of_batch = (hashes, len(hashes), root)
        return extended

    def _built_batch_root(self) -> bytes | None:
        # the root history_with_batch built over the whole pending batch, else None (nothing is hashed here);
        # batch_hashes is only appended to or replaced: the same list and count means the same hashes
        kept = self.root_of_batch
        if kept is not None and kept[0] is self.batch_hashes and kept[1] == len(self.batch_hashes):
            return kept[2]
        return None

    def entry(self, chain_id: str, seq: int, prev_hash: bytes, claimed: bytes, payload: bytes,
              location: str, source_offset: int = -1, source_last: int = -1) -> Sequence[Violation]:
        """One entry (its integrity fields and its hashed payload, see :mod:`pipeline.wire.sealed`):
        the hash is recomputed with :func:`~pipeline.integrity.chain.chain_hash`, then :meth:`link`."""
        try:
            recomputed = chain_hash(prev_hash, seq, payload)
        except MalformedInputError as exc:
            return self.malformed(seq, location, exc)
        return self.link(chain_id, seq, prev_hash, claimed, recomputed, location, source_offset, source_last)

    def malformed(self, seq: Any, location: str, problem: Exception | str) -> Sequence[Violation]:
        """An entry whose fields cannot be hashed: reported, the state unchanged."""
        return (Violation(ViolationKind.MALFORMED, self.chain_id, seq, location,
                          f"cannot recompute the hash: {problem}"),)

    def link(self, chain_id: str, seq: int, prev_hash: bytes, claimed: bytes, recomputed: bytes,
             location: str, source_offset: int = -1, source_last: int = -1) -> Sequence[Violation]:
        """One entry whose hash the caller recomputed (``recomputed``; ``claimed`` is the one it carries).

        The caller guarantees the types and ranges :func:`~pipeline.integrity.chain.chain_hash`
        checks (:meth:`entry` does it for you). Classified as in the module docstring.
        ``source_offset`` (..``source_last``, for a gap entry's range) are the raw offsets the entry
        accounts for; -1: not given (the raw offsets are then not followed).
        """
        if chain_id != self.chain_id:
            return (Violation(ViolationKind.WRONG_CHAIN, self.chain_id, seq, location,
                              f"expected a record of chain {self.chain_id!r}, found one of chain {chain_id!r}"),)
        head_seq, head_hash = self.head_seq, self.head_hash
        expected = head_seq + 1
        if recomputed == claimed and seq == expected and prev_hash == head_hash:
            # the clean case first: one comparison chain, no allocation
            self._follow_source(seq, source_offset, source_last, location)
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
            self.batch_source_break = None
        elif prev_hash != head_hash:
            found.append(Violation(ViolationKind.FORK, self.chain_id, seq, location,
                                   f"expected prev_hash {short_hex(head_hash)} (the head at seq {head_seq}), "
                                   f"found {short_hex(prev_hash)}: the record extends a different history"))
        self._follow_source(seq, source_offset, source_last, location)
        self.batch_hashes.append(recomputed)
        self.head_seq, self.head_hash = seq, recomputed
        self.entries += 1
        return found

    def _follow_source(self, seq: int, source_offset: int, source_last: int, location: str) -> None:
        # an entry joins the batch (seq first, as EntryScan does it): where its raw offsets start and end
        expected = self.next_source_offset
        if not self.batch_hashes:
            self.batch_first_seq = seq
            self.batch_first_source, self.batch_expected_source = source_offset, expected
        elif expected >= 0 and expected != source_offset and self.batch_source_break is None:
            self.batch_source_break = (seq, expected, source_offset, location)
        if source_offset < 0:
            self.next_source_offset = -1
        else:
            self.next_source_offset = (source_last if source_last >= 0 else source_offset) + 1

    def checkpoint(self, checkpoint: Checkpoint, location: str,
                   keyring: Keyring | None, stored_hash: bytes | None = None) -> Sequence[Violation]:
        """One checkpoint: its signature (skipped with no ``keyring``: a prover, whose proof is
        verified offline), its continuity with the previous checkpoint, and the batch it signs.

        Whatever is found, the checkpoint then closes the batch and becomes the previous one. An
        unsigned checkpoint (reported as ``bad_signature`` with a keyring) has no hash of its own: the
        next one is held to the ``stored_hash`` its record carries; without one, MalformedInputError.
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
        if checkpoint.origin is not None:
            found.extend(self._source_offsets(checkpoint, location))
        elif self.origin is not None:
            found.append(Violation(ViolationKind.CHECKPOINT_CHAIN, self.chain_id, checkpoint.first_seq, location,
                                   f"{checkpoint.describe()}: a version 1 checkpoint after version 2 ones "
                                   f"(of {self.origin}): it signs neither the log's origin nor its raw offsets"))
        if self.batch_hashes:
            try:  # the Merkle root in one compiled call, or the one a tree head built over the same entries
                verify_checkpoint_batch(checkpoint, self.chain_id, self.batch_first_seq, self.batch_hashes,
                                        self._built_batch_root())
            except CheckpointMismatchError as exc:
                found.append(Violation(ViolationKind.CHECKPOINT_MISMATCH, self.chain_id, checkpoint.first_seq,
                                       location, str(exc)))
        else:
            found.append(Violation(ViolationKind.CHECKPOINT_MISMATCH, self.chain_id, checkpoint.first_seq, location,
                                   f"{checkpoint.describe()}: expected the entries it signs, found none before it"))
        self.batch_hashes = []
        self.root_of_batch = None
        self.batch_source_break = None
        self.batch_first_seq = self.expected_first_seq = checkpoint.last_seq + 1
        self.previous_source_last = -1 if checkpoint.last_source_offset is None else checkpoint.last_source_offset
        self.previous_checkpoint = checkpoint
        self.previous_checkpoint_hash = (checkpoint_hash(checkpoint) if checkpoint.is_signed or stored_hash is None
                                         else stored_hash)
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
        self.batch_source_break = None
        self.previous_source_last = -1
        self.batch_first_seq = self.expected_first_seq = last_seq + 1
        self.previous_checkpoint_hash = stored_hash
        self.checkpoints += 1
        return found

    def _source_offsets(self, checkpoint: Checkpoint, location: str) -> list[Violation]:
        # a v2 checkpoint: its origin, and the raw offsets its batch accounts for, without a hole
        found: list[Violation] = []
        first, last = checkpoint.first_source_offset, checkpoint.last_source_offset
        if first is None or last is None:  # a v2 checkpoint always has both (Checkpoint checks it)
            raise MalformedInputError(f"{checkpoint.describe()}: a version 2 checkpoint without its raw offsets")
        if self.origin is not None and checkpoint.origin != self.origin:
            found.append(Violation(ViolationKind.ORIGIN_MISMATCH, self.chain_id, checkpoint.first_seq, location,
                                   f"{checkpoint.describe()}: expected origin {self.origin!r} (the chain's earlier "
                                   f"checkpoints), found {checkpoint.origin!r}"))
        self.origin = checkpoint.origin

        def unaccounted(seq: int, detail: str) -> None:
            found.append(Violation(ViolationKind.UNACCOUNTED_OFFSETS, self.chain_id, seq, location,
                                   f"{checkpoint.describe()} (raw offsets {first}..{last}): {detail}"))

        expected = self.previous_source_last + 1 if self.previous_source_last >= 0 else self.batch_expected_source
        if expected >= 0 and first != expected:
            missing = (f"raw offsets {expected}..{first - 1} are accounted for by no entry" if first > expected
                       else f"raw offsets {first}..{expected - 1} are accounted for twice")
            unaccounted(checkpoint.first_seq, f"expected first_source_offset {expected} (after the previous "
                                              f"checkpoint's), found {first}: {missing}")
        if self.batch_hashes and self.batch_first_source >= 0:  # the entries' raw offsets were followed
            if self.batch_first_source != first:
                unaccounted(self.batch_first_seq, f"its first entry accounts for raw offset {self.batch_first_source}")
            broken = self.batch_source_break
            if broken is not None:
                seq, wanted, got, where = broken
                detail = (f"raw offsets {wanted}..{got - 1} are accounted for by no entry" if got > wanted >= 0
                          else f"expected the entry for raw offset {wanted}, found one for {got}")
                found.append(Violation(ViolationKind.UNACCOUNTED_OFFSETS, self.chain_id, seq, where,
                                       f"{checkpoint.describe()}: {detail}"))
            if self.next_source_offset - 1 != last:
                unaccounted(self.head_seq, f"its last entry accounts for raw offsets up to "
                                           f"{self.next_source_offset - 1}")
        return found

    def _continuity(self, checkpoint: Checkpoint) -> str | None:
        # what differs between the checkpoint and the one it should follow, or None
        previous = self.previous_checkpoint
        expected_first = self.expected_first_seq
        if checkpoint.first_seq != expected_first:
            after = (f"after {previous.describe()}" if previous is not None else "it is the chain's first"
                     if expected_first == 0 else f"after an unreadable checkpoint ending at seq {expected_first - 1}")
            return (f"{checkpoint.describe()}: expected first_seq {expected_first}, "
                    f"found {checkpoint.first_seq} ({after})")
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
