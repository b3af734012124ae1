"""Which archived sealed offsets no reconciler attestation covers (pipeline.verifier.attestations, pure part)."""

from __future__ import annotations

import pytest

from pipeline.verifier.attestations import _covered, uncovered


def test_contiguous_rounds_merge_into_one_range():
    # round n+1 starts where round n ended: [0, 9] and [10, 30] cover 0..30 without a hole
    assert _covered([(10, 30), (0, 9)]) == [(0, 30)]
    assert _covered([(0, 9), (5, 12), (20, 21)]) == [(0, 12), (20, 21)]
    assert _covered([]) == []


@pytest.mark.parametrize(("first", "last", "covered", "holes"), [
    (0, 30, [(0, 30)], []),
    (0, 30, [], [(0, 30)]),
    (0, 30, [(0, 9), (20, 40)], [(10, 19)]),
    (5, 8, [(0, 4), (9, 12)], [(5, 8)]),
    (0, 30, [(5, 9)], [(0, 4), (10, 30)]),
    (10, 20, [(0, 5), (12, 13), (25, 30)], [(10, 11), (14, 20)]),
    (3, 3, [(3, 3)], []),
])
def test_uncovered_names_every_hole(first, last, covered, holes):
    assert uncovered(first, last, covered) == holes
