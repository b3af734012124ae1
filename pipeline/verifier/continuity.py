"""When each chain was seen logging, from its signed tree heads: the intervals behind ``logging_gap`` and
``stale_head`` (pure, no I/O).

The sealer signs a tree head in every chain at least every heartbeat interval, idle or not, so the heads
of a chain are a signed clock of its logging. The :class:`~pipeline.verifier.chains.ChainAuditor` judges
them (two heads further apart than the tolerance: ``logging_gap``; the newest older than the as-of time
minus the tolerance: ``stale_head``) and notes here the interval each finding covers, with the first and
newest head of every chain, so that a report over a period (``auditseal report``) lists the gaps that fall
in it with their times, from the very checks ``verify`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_INTERVALS = 1000
"""Intervals kept (all are counted): a badly damaged archive still verifies in flat memory."""


@dataclass(frozen=True)
class SilentInterval:
    """A time a chain was not seen logging: ``kind`` is the violation it was reported as."""

    kind: str
    chain_id: str
    start_micros: int   # the head before the silence
    end_micros: int     # the head after it, or the as-of time for a stale head
    location: str       # the head that ends it (logging_gap), or the newest head (stale_head)

    def overlaps(self, start_micros: int, end_micros: int) -> bool:
        """True if the interval meets ``[start, end)``."""
        return self.start_micros < end_micros and self.end_micros > start_micros

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (times in microseconds)."""
        return {"kind": self.kind, "chain_id": self.chain_id, "start_micros": self.start_micros,
                "end_micros": self.end_micros, "seconds": round((self.end_micros - self.start_micros) / 1e6, 3),
                "location": self.location}


@dataclass
class LoggingRecord:
    """Per chain the time of its first and newest tree head, and the silent intervals found."""

    first_head: dict[str, int] = field(default_factory=dict)
    newest_head: dict[str, int] = field(default_factory=dict)
    intervals: list[SilentInterval] = field(default_factory=list)
    interval_count: int = 0

    def head(self, chain_id: str, issued_micros: int) -> None:
        """A verified head of ``chain_id`` issued at ``issued_micros``."""
        first = self.first_head.get(chain_id)
        if first is None or issued_micros < first:
            self.first_head[chain_id] = issued_micros
        if issued_micros > self.newest_head.get(chain_id, issued_micros - 1):
            self.newest_head[chain_id] = issued_micros

    def silent(self, interval: SilentInterval) -> None:
        """An interval reported as a violation."""
        self.interval_count += 1
        if len(self.intervals) < MAX_INTERVALS:
            self.intervals.append(interval)

    def absorb(self, other: LoggingRecord, scope: str) -> None:
        """Add one archive's record (``scope`` prefixes its chain ids, as the verifier's report does)."""
        for chain_id, micros in other.first_head.items():
            self.head(scope + chain_id, micros)
        for chain_id, micros in other.newest_head.items():
            self.head(scope + chain_id, micros)
        for interval in other.intervals:
            self.silent(SilentInterval(interval.kind, scope + interval.chain_id, interval.start_micros,
                                       interval.end_micros, interval.location))
        self.interval_count += other.interval_count - len(other.intervals)
