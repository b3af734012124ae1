"""The start-up accounting every stage bench prints (bench/steady.py): fixed vectors."""

from __future__ import annotations

import pytest

from bench.steady import Side, median


def test_a_side_splits_its_start_up_from_its_steady_figure() -> None:
    side = Side(count=1_000_000, launched=100.0, first=102.0, last=142.0)
    assert side.startup_s == pytest.approx(2.0)
    assert side.steady_s == pytest.approx(40.0)
    assert side.rate == pytest.approx(25_000.0)
    assert side.rate_with_startup == pytest.approx(1_000_000 / 42)
    assert side.startup_share == pytest.approx(2 / 42)
    assert "over 5%" not in side.describe()


def test_a_start_up_over_five_per_cent_is_flagged() -> None:
    side = Side(count=100_000, launched=0.0, first=3.0, last=13.0)
    assert side.startup_share == pytest.approx(3 / 13)
    assert "over 5%: lengthen the run" in side.describe()


def test_median_of_odd_and_even_counts() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
