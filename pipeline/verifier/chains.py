"""Streaming verification of chains and checkpoints, with no I/O.

Feed the records of ``audit.sealed`` (from the topic or from archived objects) in chain order to a
:class:`ChainAuditor`; it routes each to its chain's :class:`~pipeline.integrity.chain_state.ChainState`,
the integrity core's state machine, which classifies it, and collects the
:class:`~pipeline.integrity.chain_state.Violation` s found and the counts a report gives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.integrity.chain import chain_hash_unchecked
from pipeline.integrity.chain_state import ChainState, Violation, ViolationKind
from pipeline.integrity.errors import IntegrityError, MalformedInputError
from pipeline.integrity.history_tree import HistoryTree
from pipeline.integrity.keyring import Keyring
from pipeline.integrity.log_identity import log_verifier
from pipeline.integrity.merkle import HASH_SIZE
from pipeline.integrity.tree_head import open_tree_head
from pipeline.verifier.continuity import LoggingRecord, SilentInterval
from pipeline.wire.sealed import GAP_KIND, GAP_LOST, checkpoint_from_record, entry_payload

DEFAULT_HEAD_TOLERANCE_S = 300.0
"""How old a chain's newest tree head may be (and how far apart two heads), beyond the heartbeat interval's
60 s default: the sink's batching and lag, and clock skew."""
_TIME_LINE = "auditseal-time "

__all__ = ["NO_HEADS", "SKIPPED_OFFSETS", "ChainAuditor", "Violation", "ViolationKind"]

NO_HEADS = "no_tree_heads"
"""A notice: a chain with version 2 checkpoints and no tree head in what was read (a sealer run with
--heartbeat-interval 0): nothing shows offline that its tail is complete."""

SKIPPED_OFFSETS = "skipped_offsets"
"""A notice, not a violation: a gap entry of raw offsets the broker had no record for (transaction markers,
aborted records); the chain accounts for them and nothing was lost."""


@dataclass
class ChainAuditor:
    """Verifies entries and checkpoints of any number of chains, fed in chain order."""

    keyring: Keyring
    violations: list[Violation] = field(default_factory=list)
    notices: list[Violation] = field(default_factory=list)
    chains: dict[str, ChainState] = field(default_factory=dict)
    entries_checked: int = 0
    checkpoints_checked: int = 0
    checkpoints_valid: int = 0
    heads_checked: int = 0
    as_of_micros: int | None = None  # what "now" is for stale_head; None: no stale_head check
    head_tolerance_micros: int = int(DEFAULT_HEAD_TOLERANCE_S * 1_000_000)
    # per chain: (time of its newest head, where, its history tree as far as the heads verified it, or None)
    heads: dict[str, tuple[int, str, HistoryTree | None]] = field(default_factory=dict)
    logging: LoggingRecord = field(default_factory=LoggingRecord)  # when each chain was seen logging

    def _chain(self, chain_id: str) -> ChainState:
        chain = self.chains.get(chain_id)
        if chain is None:
            chain = self.chains[chain_id] = ChainState(chain_id)
        return chain

    def _record(self, found: Sequence[Violation]) -> None:
        if found:
            self.violations.extend(found)

    def entry(self, kind: bytes, record: Mapping[str, Any], location: str) -> None:
        """Check one sealed event or rejection (``kind`` is its record kind)."""
        self.entries_checked += 1
        chain = self._chain(record["chain_id"])
        try:
            payload = entry_payload(kind, record)
        except (MalformedInputError, KeyError, TypeError) as exc:
            self._record(chain.malformed(record["seq"], location, exc))
            return
        self._record(chain.entry(record["chain_id"], record["seq"], record["prev_hash"], record["hash"], payload,
                                 location, *_source_range(record)))
        if kind == GAP_KIND:
            self.gap(record["chain_id"], record["seq"], record["source_offset"], record["source_last_offset"],
                     record["cause"], record["reason"], location)

    def entry_fields(self, chain_id: str, seq: int, prev_hash: bytes, claimed: bytes, payload: bytes,
                     location: str, source_offset: int = -1, source_last: int = -1) -> None:
        """:meth:`entry` for the fields of a strictly decoded entry and its payload
        (:meth:`pipeline.wire.sealed.SealedCodecs.decode_fields`, :func:`~pipeline.wire.sealed.entry_payload_of_fields`).

        The decoder guarantees the types (str, int, bytes); the range of ``seq`` (Avro longs are
        below 2**63) and the size of ``prev_hash`` are checked here, once, before the unchecked hash.
        """
        self.entries_checked += 1
        chain = self._chain(chain_id)
        if seq < 0 or len(prev_hash) != HASH_SIZE:
            self._record(chain.entry(chain_id, seq, prev_hash, claimed, payload, location,  # names the field
                                     source_offset, source_last))
            return
        self._record(chain.link(chain_id, seq, prev_hash, claimed, chain_hash_unchecked(prev_hash, seq, payload),
                                location, source_offset, source_last))

    def gap(self, chain_id: str, seq: int, first_offset: int, last_offset: int, cause: str, reason: str,
            location: str) -> None:
        """What a gap entry (linked like any entry) says: raw records lost before sealing are a
        ``lost_records`` violation naming the range; offsets the broker skipped are a notice."""
        count = last_offset - first_offset + 1
        what = f"raw offsets {first_offset}..{last_offset} ({count} offset{'s' if count != 1 else ''})"
        if cause == GAP_LOST:
            self.violations.append(Violation(ViolationKind.LOST_RECORDS, chain_id, seq, location,
                                             f"{what} were lost before they were sealed: {reason}"))
        else:
            self.notices.append(Violation(SKIPPED_OFFSETS, chain_id, seq, location,
                                          f"{what} skipped by the broker ({cause}): {reason}"))

    def head(self, record: Mapping[str, Any], location: str) -> None:
        """Check one tree head record: its note's log signature (key, validity, compromise), that it names the
        chain's origin, that its size is the entries read so far and its root their history tree's, and how
        long after the chain's previous head it came (``logging_gap``)."""
        self.heads_checked += 1
        chain_id = record["chain_id"]
        chain = self._chain(chain_id)
        size = record["tree_size"]

        def report(kind: str, detail: str) -> None:
            self.violations.append(Violation(kind, chain_id, size - 1, location, f"tree head of size {size}: {detail}"))

        entry = self.keyring.get(record["key_id"])
        issued = record["issued_at_micros"]
        if entry is None:
            return report(ViolationKind.UNKNOWN_KEY, f"signed by key {record['key_id']}, which the keyring does not hold")
        if not entry.valid_at(issued):
            return report(ViolationKind.KEY_NOT_VALID, f"issued at {issued}, outside key {entry.key_id}'s validity "
                                                       f"window {entry.describe_window()}")
        if entry.compromised_at(issued):
            # reported, and still checked like any head: with verify --policy a quorum cosignature older than the
            # compromise covering it shows it existed before then, and the witness audit withdraws this report
            report(ViolationKind.COMPROMISED_KEY, f"signed by key {entry.key_id} after its compromise")
        try:
            origin = record["note"].split(b"\n", 1)[0].decode("utf-8")
            head, _ = open_tree_head(record["note"], log_verifier(entry.public_key, origin))
        except (IntegrityError, UnicodeDecodeError) as exc:
            return report(ViolationKind.BAD_SIGNATURE, f"the note does not verify under key {entry.key_id}: {exc}")
        if not origin.endswith("/" + chain_id) or (chain.origin is not None and origin != chain.origin):
            return report(ViolationKind.ORIGIN_MISMATCH, f"origin {origin!r} is not the chain's "
                                                         f"({chain.origin or 'ending in /' + chain_id})")
        if (head.size, head.root_hash, head.extensions) != (size, record["root_hash"], (f"{_TIME_LINE}{issued}",)):
            return report(ViolationKind.HEAD_MISMATCH, "the record's fields are not those of its signed note")
        previous = self.heads.get(chain_id)
        history = _history_before_head(chain, previous[2] if previous else None, previous is None)
        if size != chain.head_seq + 1:
            report(ViolationKind.HEAD_MISMATCH, f"expected the {chain.head_seq + 1} entries read so far, "
                                                "found another size: the head and the chain disagree")
            history = None
        elif history is not None and history.root != head.root_hash:
            report(ViolationKind.HEAD_MISMATCH, f"its root is not that of the {size} entries read: the history "
                                                "it signs is not this chain's")
            history = None
        self.logging.head(chain_id, issued)
        if previous is not None and issued - previous[0] > self.head_tolerance_micros:
            self.logging.silent(SilentInterval(ViolationKind.LOGGING_GAP, chain_id, previous[0], issued, location))
            self.violations.append(Violation(
                ViolationKind.LOGGING_GAP, chain_id, size - 1, location,
                f"no tree head for {(issued - previous[0]) / 1e6:.0f} s (after the head at {previous[1]}), longer "
                f"than the tolerance of {self.head_tolerance_micros / 1e6:.0f} s: logging stopped or heads were removed"))
        if previous is None or issued >= previous[0]:
            self.heads[chain_id] = (issued, location, history)

    def checkpoint(self, record: Mapping[str, Any], location: str) -> None:
        """Check one checkpoint against the entries since the previous one and the keyring."""
        self.checkpoints_checked += 1
        try:
            checkpoint = checkpoint_from_record(record)
        except MalformedInputError as exc:  # a field out of its domain: that field's violation, here
            self.violations.extend(self._chain(record["chain_id"]).unreadable_checkpoint(
                record["last_seq"], record["checkpoint_hash"], location, str(exc)))
            return
        found = self._chain(checkpoint.chain_id).checkpoint(checkpoint, location, self.keyring,
                                                            stored_hash=record["checkpoint_hash"])
        if found:
            self.violations.extend(found)
        else:
            self.checkpoints_valid += 1

    def finish(self, location: str = "end of log") -> list[Violation]:
        """Report entries that no checkpoint covers, and return every violation found."""
        for chain in self.chains.values():
            self._record(chain.finish(location))
        for chain_id, chain in self.chains.items():
            newest = self.heads.get(chain_id)
            if newest is None:
                if chain.origin is not None:
                    self.notices.append(Violation(NO_HEADS, chain_id, chain.head_seq, location,
                                                  "version 2 checkpoints and no tree head: the archive cannot show "
                                                  "offline that its tail is complete"))
                continue
            if self.as_of_micros is not None and newest[0] < self.as_of_micros - self.head_tolerance_micros:
                self.logging.silent(SilentInterval(ViolationKind.STALE_HEAD, chain_id, newest[0], self.as_of_micros,
                                                   newest[1]))
                self.violations.append(Violation(
                    ViolationKind.STALE_HEAD, chain_id, chain.head_seq, newest[1],
                    f"the newest tree head is {(self.as_of_micros - newest[0]) / 1e6:.0f} s older than the as-of "
                    f"time, beyond the tolerance of {self.head_tolerance_micros / 1e6:.0f} s: the archive's tail "
                    "was truncated, or logging stopped"))
        return self.violations


def _source_range(record: Mapping[str, Any]) -> tuple[int, int]:
    # the raw offsets an entry accounts for (a gap entry: its range), -1 where a record names none
    offset = record.get("source_offset")
    last = record.get("source_last_offset")
    return (offset if isinstance(offset, int) else -1, last if isinstance(last, int) else -1)


def _history_before_head(chain: ChainState, history: HistoryTree | None, first: bool) -> HistoryTree | None:
    # the chain's history tree at its head, folding in the entries since the previous head (heads come
    # before their batch's checkpoint, so those are the pending batch's); None once it cannot be known
    if first:
        # known from genesis only: a chain read from seq 0 with no checkpoint before this head's batch
        history = HistoryTree() if chain.checkpoints == 0 and (not chain.batch_hashes or chain.batch_first_seq == 0) \
            else None
    if history is None:
        return None
    start = history.size - chain.batch_first_seq
    if not chain.batch_hashes:
        return history if history.size == chain.head_seq + 1 else None
    if not 0 <= start <= len(chain.batch_hashes):
        return None
    # the batch's tree built once: its checkpoint (next) takes its Merkle root from the same build
    return chain.history_with_batch(history, start)
