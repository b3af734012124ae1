"""Cutting one partition's records into batches (pure, no I/O).

A batch closes when it reaches ``max_records`` records or ``max_bytes`` of values, or
``max_age_seconds`` after its first record arrived, whichever comes first. Those limits depend
on timing, so a batch cut differently after a restart would overlap an object already written.
Restarts therefore replay the bucket's word: objects found beyond the committed offset
(written, not yet committed, when the sink stopped) are *planned* ranges, reproduced exactly:
a batch starting at a planned first offset closes at its last offset whatever the limits, and a
batch never runs into the start of a planned range.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.archive.container import ArchivedInput


@dataclass(frozen=True)
class BatchLimits:
    """When a batch closes (defaults documented in the README)."""

    max_records: int = 20_000
    max_bytes: int = 16 * 1024 * 1024
    max_age_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_bytes < 1 or self.max_age_seconds <= 0:
            raise ValueError(f"batch limits must be positive: {self}")


@dataclass
class Batch:
    """A contiguous, offset-ordered run of one partition's records."""

    topic: str
    partition: int
    opened_at: float
    planned_last: int | None = None
    """The last offset of the existing object this batch reproduces, if it is a planned one."""
    records: list[ArchivedInput] = field(default_factory=list)
    size_bytes: int = 0
    closed_at: float = 0.0
    """When the batch was closed and queued for writing (monotonic seconds)."""

    @property
    def first_offset(self) -> int:
        """Offset of the first record."""
        return self.records[0][0]

    @property
    def last_offset(self) -> int:
        """Offset of the last record."""
        return self.records[-1][0]


class PartitionBatcher:
    """The open batch of one partition and the planned ranges still ahead of it."""

    def __init__(self, topic: str, partition: int, limits: BatchLimits,
                 planned: Iterable[tuple[int, int]] = ()) -> None:
        self.topic = topic
        self.partition = partition
        self.limits = limits
        self.planned: deque[tuple[int, int]] = deque(sorted(planned))
        self.open: Batch | None = None
        self.skipped = 0
        """Records not batched because an existing object holds them and it cannot be reproduced
        from its start (its first records are gone from Kafka)."""

    def add(self, offset: int, timestamp_ms: int, value: bytes, now: float) -> list[Batch]:
        """Take the next record of the partition; return the batches it closed (0, 1 or 2)."""
        closed = []
        batch = self.open
        if batch is not None:
            if batch.planned_last is None and self.planned and offset >= self.planned[0][0]:
                closed.append(self._close())  # an existing object starts here: end before it
            elif batch.planned_last is not None and offset > batch.planned_last:
                closed.append(self._close())  # the planned last record was not seen (cannot happen read_committed)
        if self.open is None:
            while self.planned and self.planned[0][1] < offset:
                self.planned.popleft()
            if self.planned and self.planned[0][0] < offset:
                self.skipped += 1
                return closed
            planned_last = self.planned.popleft()[1] if self.planned and self.planned[0][0] == offset else None
            self.open = Batch(self.topic, self.partition, now, planned_last)
        batch = self.open
        batch.records.append((offset, timestamp_ms, value))
        batch.size_bytes += len(value)
        if batch.planned_last is not None:
            if offset >= batch.planned_last:
                closed.append(self._close())
        elif len(batch.records) >= self.limits.max_records or batch.size_bytes >= self.limits.max_bytes:
            closed.append(self._close())
        return closed

    def expired(self, now: float) -> Batch | None:
        """The open batch if it is older than ``max_age_seconds`` (never a planned one: it must end where it ended)."""
        batch = self.open
        if batch is not None and batch.planned_last is None and now - batch.opened_at >= self.limits.max_age_seconds:
            return self._close()
        return None

    def close(self) -> Batch | None:
        """Close the open batch now (shutting down); a planned batch is left unwritten: the next run finishes it."""
        batch = self.open
        if batch is not None and batch.planned_last is not None:
            self.open = None
            return None
        return self._close() if batch is not None else None

    @property
    def pending_bytes(self) -> int:
        """Value bytes of the open batch."""
        return self.open.size_bytes if self.open is not None else 0

    def _close(self) -> Batch:
        batch, self.open = self.open, None
        assert batch is not None
        return batch
