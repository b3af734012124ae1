"""Cutting partitions into batches by records, bytes and time, and replaying planned ranges exactly."""

from __future__ import annotations

import pytest

from connectors.s3sink.batching import BatchLimits, PartitionBatcher


def _feed(batcher: PartitionBatcher, offsets, now: float = 0.0, size: int = 10) -> list[tuple[int, int]]:
    closed = []
    for offset in offsets:
        closed += batcher.add(offset, 1, b"x" * size, now)
    return [(b.first_offset, b.last_offset) for b in closed]


def test_closes_on_records_bytes_and_age():
    assert _feed(PartitionBatcher("t", 0, BatchLimits(max_records=3)), range(7)) == [(0, 2), (3, 5)]
    assert _feed(PartitionBatcher("t", 0, BatchLimits(max_bytes=25)), range(7)) == [(0, 2), (3, 5)]
    batcher = PartitionBatcher("t", 0, BatchLimits(max_age_seconds=5))
    _feed(batcher, [0, 1], now=100.0)
    assert batcher.expired(104.9) is None
    assert (batcher.expired(105.0).last_offset, batcher.open) == (1, None)


def test_offsets_may_skip_transaction_markers():
    assert _feed(PartitionBatcher("t", 0, BatchLimits(max_records=3)), [0, 1, 3, 4, 5, 7]) == [(0, 3), (4, 7)]


def test_planned_ranges_are_reproduced_whatever_the_limits():
    # objects 10-19 and 21-40 were written before a crash, with other limits than now
    batcher = PartitionBatcher("t", 0, BatchLimits(max_records=4, max_age_seconds=1), planned=[(10, 19), (21, 40)])
    closed = _feed(batcher, range(10, 15), now=0.0)
    assert closed == [] and batcher.expired(99.0) is None, "a planned batch never closes early"
    assert _feed(batcher, [*range(15, 20), *range(21, 41), 41, 42, 43, 44, 45]) == [(10, 19), (21, 40), (41, 44)]


def test_a_batch_never_runs_into_a_planned_range():
    batcher = PartitionBatcher("t", 0, BatchLimits(max_records=100), planned=[(6, 9)])
    assert _feed(batcher, range(0, 12)) == [(0, 5), (6, 9)]
    assert batcher.open.first_offset == 10


def test_records_inside_an_object_that_cannot_be_reproduced_are_skipped():
    # its first records are gone from Kafka (retention): the object holds them, nothing else may
    batcher = PartitionBatcher("t", 0, BatchLimits(max_records=100), planned=[(0, 9)])
    assert _feed(batcher, range(5, 14)) == []
    assert batcher.skipped == 5 and batcher.open.first_offset == 10


def test_close_on_shutdown_leaves_a_planned_batch_to_the_next_run():
    batcher = PartitionBatcher("t", 0, BatchLimits(), planned=[(0, 9)])
    _feed(batcher, range(0, 5))
    assert batcher.close() is None and batcher.open is None
    plain = PartitionBatcher("t", 0, BatchLimits())
    _feed(plain, range(0, 5))
    assert (plain.close().last_offset, plain.close()) == (4, None)


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        BatchLimits(max_records=0)
