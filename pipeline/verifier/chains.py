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
from pipeline.integrity.errors import MalformedInputError
from pipeline.integrity.keyring import Keyring
from pipeline.integrity.merkle import HASH_SIZE
from pipeline.wire.sealed import GAP_KIND, GAP_LOST, checkpoint_from_record, entry_payload

__all__ = ["SKIPPED_OFFSETS", "ChainAuditor", "Violation", "ViolationKind"]

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
        return self.violations


def _source_range(record: Mapping[str, Any]) -> tuple[int, int]:
    # the raw offsets an entry accounts for (a gap entry: its range), -1 where a record names none
    offset = record.get("source_offset")
    last = record.get("source_last_offset")
    return (offset if isinstance(offset, int) else -1, last if isinstance(last, int) else -1)
