"""Does a chain say what its source partition holds? Pure comparison of sealed entries with raw records.

A sealed entry names its source (``chain_id`` = ``<source topic>/<partition>``, ``source_offset``,
``source_timestamp_micros``) and carries either the raw record's bytes (an event) or their SHA-256 and size
(a rejection); see :mod:`pipeline.wire.sealed`. A sealer holding the chain's key can sign anything, so the
chain and its checkpoints alone cannot show that an entry says what the raw topic held at that offset. This
module compares the two, entry by entry, in chain order:

- ``substituted``: the entry's bytes (or hash and size) or timestamp differ from the raw record's;
- ``unsealed``: a raw record the chain skipped (a later offset is sealed, this one never);
- ``sealed_twice``: an entry for a source offset at or before one already sealed (a replay, a reorder);
- ``no_raw_record``: an entry for an offset where the raw partition holds no record (never written);
- ``foreign_chain``: an entry of another chain on this chain's sealed partition.

A raw offset below the partition's low watermark (deleted by retention) cannot be judged: it is counted as
``unverifiable``, never reported as a match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.wire.sealed import EVENT_KIND

MISMATCH_KINDS = ("substituted", "unsealed", "sealed_twice", "no_raw_record", "foreign_chain")


@dataclass(frozen=True)
class SealedEntry:
    """The parts of a sealed event or rejection the comparison reads (``event`` for an event, ``raw_sha256`` and
    ``raw_size`` for a rejection)."""

    sealed_offset: int
    chain_id: str
    kind: bytes
    source_offset: int
    source_timestamp_micros: int
    event: bytes | None = None
    raw_sha256: bytes | None = None
    raw_size: int | None = None


@dataclass(frozen=True)
class RawRecord:
    """One record of the source partition: its offset, value and Kafka timestamp (µs, as the sealer takes it)."""

    offset: int
    value: bytes | None
    timestamp_micros: int


@dataclass(frozen=True)
class Mismatch:
    """One place where a chain and its source disagree."""

    chain_id: str
    kind: str
    source_offset: int
    sealed_offset: int | None
    detail: str

    def describe(self) -> str:
        """One line: the chain, the source offset, the sealed offset, the kind and what differs."""
        where = f"sealed offset {self.sealed_offset}" if self.sealed_offset is not None else "no sealed entry"
        return f"{self.chain_id} source offset {self.source_offset} ({where}): {self.kind}: {self.detail}"


def entry_difference(entry: SealedEntry, raw: RawRecord) -> str | None:
    """Why ``entry`` does not seal ``raw`` (None when it does: same bytes, or same hash and size, same time)."""
    value = raw.value or b""
    if entry.kind == EVENT_KIND:
        if entry.event != value:
            return (f"the sealed event ({len(entry.event or b'')} bytes, sha256 "
                    f"{hashlib.sha256(entry.event or b'').hexdigest()[:16]}) is not the raw record "
                    f"({len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()[:16]})")
        if entry.source_timestamp_micros != raw.timestamp_micros:
            return (f"sealed with time {entry.source_timestamp_micros} µs, the raw record's is "
                    f"{raw.timestamp_micros} µs")
        return None
    digest = hashlib.sha256(value).digest()
    if entry.raw_sha256 != digest or entry.raw_size != len(value):
        return (f"the rejection names a record of {entry.raw_size} bytes, sha256 {(entry.raw_sha256 or b'').hex()[:16]};"
                f" the raw record has {len(value)} bytes, sha256 {digest.hex()[:16]}")
    # a record without a usable timestamp is sealed at time 0 (pipeline.sealer.chain_sealer)
    if entry.source_timestamp_micros not in (raw.timestamp_micros, 0):
        return f"sealed with time {entry.source_timestamp_micros} µs, the raw record's is {raw.timestamp_micros} µs"
    return None


@dataclass
class ChainReconciliation:
    """The running comparison of one chain with its source partition; :meth:`check` takes the chain's entries
    in sealed order, batch after batch."""

    chain_id: str
    next_source_offset: int | None = None  # after the last entry checked
    checked: int = 0
    unverifiable: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    def check(self, entries: Sequence[SealedEntry], raw: Mapping[int, RawRecord], raw_low: int,
              raw_high: int) -> list[Mismatch]:
        """Compare ``entries`` (this chain's sealed partition, in offset order) with ``raw`` (every raw record
        from the first offset they could name to their last, by offset; ``raw_low``/``raw_high`` the source
        partition's watermarks). Returns the mismatches found, also kept in :attr:`mismatches`."""
        found: list[Mismatch] = []
        for entry in entries:
            if entry.chain_id != self.chain_id:
                found.append(Mismatch(self.chain_id, "foreign_chain", entry.source_offset, entry.sealed_offset,
                                      f"an entry of chain {entry.chain_id} on this chain's sealed partition"))
                continue
            offset = entry.source_offset
            expected = self.next_source_offset
            if expected is not None and offset < expected:
                found.append(Mismatch(self.chain_id, "sealed_twice", offset, entry.sealed_offset,
                                      f"source offset {offset} sealed again after offset {expected - 1}"))
                continue
            if expected is not None:
                found += [Mismatch(self.chain_id, "unsealed", skipped, None,
                                   f"the raw record at offset {skipped} is in no entry: the chain goes from "
                                   f"{expected - 1} to {offset}")
                          for skipped in range(max(expected, raw_low), offset) if skipped in raw]
            self.next_source_offset = offset + 1
            record = raw.get(offset)
            if record is None:
                if offset < raw_low:
                    self.unverifiable += 1
                    continue
                found.append(Mismatch(self.chain_id, "no_raw_record", offset, entry.sealed_offset,
                                      f"the source partition holds no record at offset {offset} "
                                      f"(its offsets are {raw_low}..{raw_high - 1})"))
                continue
            self.checked += 1
            why = entry_difference(entry, record)
            if why is not None:
                found.append(Mismatch(self.chain_id, "substituted", offset, entry.sealed_offset, why))
        self.mismatches += found
        return found
