"""Start-up and steady state of one side of a stage benchmark, reported the same way by every bench.

A side is launched (a process started, a client built), produces its first output after a start-up
(interpreter and imports, connecting, joining a group, a warm-up, the first fetch), then runs. Two
things can make a short run's figure lie, and both are printed:

- the start-up itself: left out of the figure (which counts from the first output to the last) and
  printed beside it, in seconds and as its share of the side's whole time (launch to last output);
- the ramp after the first output (chains opening, batches and pipelines filling) and the tail (the last
  flush), which are inside the figure: from progress marks (time, outputs so far, taken while the side
  runs), the rate over the middle of the run (from 10% to 90% of the outputs) is the steady window, and
  ``1 - figure / window rate`` is what the ramp and tail cost the figure. Under 5% (``STARTUP_SHARE_TARGET``)
  is what the benches' defaults aim at; a cost above it is flagged in the printed line.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

STARTUP_SHARE_TARGET = 0.05


@dataclass(frozen=True)
class Side:
    """One side's timing on one clock: ``launched`` <= ``first`` (first output) <= ``last`` (last output); ``marks``:
    (time, outputs so far) pairs in time order, taken while it ran (none: no steady window)."""

    count: int
    launched: float
    first: float
    last: float
    marks: tuple[tuple[float, int], ...] = ()

    @property
    def startup_s(self) -> float:
        """Launch to the first output."""
        return self.first - self.launched

    @property
    def steady_s(self) -> float:
        """First output to the last."""
        return max(self.last - self.first, 1e-9)

    @property
    def whole_s(self) -> float:
        """Launch to the last output."""
        return max(self.last - self.launched, 1e-9)

    @property
    def rate(self) -> float:
        """The figure: outputs per second from the first output to the last."""
        return self.count / self.steady_s

    @property
    def rate_with_startup(self) -> float:
        """Outputs per second from the launch to the last output."""
        return self.count / self.whole_s

    @property
    def startup_share(self) -> float:
        """The start-up's share of the side's whole time."""
        return self.startup_s / self.whole_s

    def window_rate(self, low: float = 0.1, high: float = 0.9) -> float | None:
        """Outputs per second between the first marks at or past ``low`` and ``high`` of the count; None
        without enough marks."""
        times = [t for t, _ in self.marks]
        counts = [n for _, n in self.marks]
        start = bisect_left(counts, low * self.count)
        end = bisect_left(counts, high * self.count)
        if end >= len(counts) or end <= start or times[end] <= times[start]:
            return None
        return (counts[end] - counts[start]) / (times[end] - times[start])

    @property
    def ramp_share(self) -> float | None:
        """What the ramp and the tail cost the figure: ``1 - rate / window_rate`` (negative when the middle ran
        slower, e.g. under a burst of load elsewhere); None without a window."""
        window = self.window_rate()
        return None if window is None else 1 - self.rate / window

    def describe(self, unit: str = "events") -> str:
        """The figure, its steady window and the ramp's cost, and the start-up left out; flagged above 5%."""
        text = f"{self.rate:,.0f} {unit}/s ({self.count:,} in {self.steady_s:.1f}s)"
        window, ramp = self.window_rate(), self.ramp_share
        if window is not None and ramp is not None:
            flag = " (over 5%: lengthen the run)" if ramp >= STARTUP_SHARE_TARGET else ""
            text += f", middle 10-90% {window:,.0f}/s: ramp and tail {ramp:+.1%} of the figure{flag}"
        return text + (f"; start-up left out {self.startup_s:.2f}s = {self.startup_share:.1%} of the side's time")


def median(values: list[float]) -> float:
    """The median (the mean of the middle two for an even count)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
