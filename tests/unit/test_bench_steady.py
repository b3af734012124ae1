"""The start-up accounting every stage bench prints (bench/steady.py): fixed vectors."""

from __future__ import annotations

import pytest

from bench.steady import Side, median


def test_a_side_splits_its_start_up_from_its_figure() -> None:
    side = Side(count=1_000_000, launched=100.0, first=102.0, last=142.0)
    assert side.startup_s == pytest.approx(2.0)
    assert side.steady_s == pytest.approx(40.0)
    assert side.rate == pytest.approx(25_000.0)
    assert side.rate_with_startup == pytest.approx(1_000_000 / 42)
    assert side.startup_share == pytest.approx(2 / 42)
    assert side.window_rate() is None and side.ramp_share is None
    assert "start-up left out 2.00s = 4.8%" in side.describe()


def test_the_steady_window_is_the_middle_of_the_outputs() -> None:
    # a slow first 3.5 s (10,000 outputs), then 10,000/s for 10 s: the window sees only the steady part
    marks = ((2.0, 5_000), (3.5, 10_000), *((3.5 + s, 10_000 + 10_000 * s) for s in range(1, 11)))
    side = Side(count=110_000, launched=0.0, first=0.5, last=13.5, marks=marks)
    assert side.window_rate() == pytest.approx(10_000.0)
    assert side.rate == pytest.approx(110_000 / 13.0)
    assert side.ramp_share == pytest.approx(1 - (110_000 / 13.0) / 10_000)
    assert "over 5%: lengthen the run" in side.describe()


def test_a_steady_run_is_not_flagged() -> None:
    marks = tuple((float(s), 10_000 * s) for s in range(1, 41))
    side = Side(count=400_000, launched=-0.5, first=0.0, last=40.0, marks=marks)
    assert side.window_rate() == pytest.approx(10_000.0)
    assert side.ramp_share == pytest.approx(0.0, abs=1e-9)
    assert "over 5%" not in side.describe()


def test_median_of_odd_and_even_counts() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
