"""Start-up and steady state of one side of a stage benchmark, reported the same way by every bench.

A side is launched (a process started, a client built), produces its first output after a start-up
(connecting, joining a group, a warm-up, the first fetch), then runs. The figure a bench prints is
the steady one: outputs from the first output to the last, over that time; the start-up is printed
beside it, in seconds and as its share of the side's whole time (launch to last output), so a reader
sees how much the figure would move if the start-up were billed to it. Under 5% is what the benches'
defaults aim at (``STARTUP_SHARE_TARGET``); a share above it is flagged in the printed line.
"""

from __future__ import annotations

from dataclasses import dataclass

STARTUP_SHARE_TARGET = 0.05


@dataclass(frozen=True)
class Side:
    """One side's timing: ``launched`` <= ``first`` (first output) <= ``last`` (last output), on one clock."""

    count: int
    launched: float
    first: float
    last: float

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
        """The steady figure: outputs per second from the first output to the last."""
        return self.count / self.steady_s

    @property
    def rate_with_startup(self) -> float:
        """Outputs per second from the launch to the last output."""
        return self.count / self.whole_s

    @property
    def startup_share(self) -> float:
        """The start-up's share of the side's whole time."""
        return self.startup_s / self.whole_s

    def describe(self, unit: str = "events") -> str:
        """``N units/s steady (T s), start-up S s = P% of the whole``, flagged above the target."""
        flag = "" if self.startup_share < STARTUP_SHARE_TARGET else \
            f" (over {STARTUP_SHARE_TARGET:.0%}: lengthen the run)"
        return (f"{self.rate:,.0f} {unit}/s steady ({self.count:,} in {self.steady_s:.1f}s), start-up "
                f"{self.startup_s:.2f}s = {self.startup_share:.1%} of the whole{flag}")


def median(values: list[float]) -> float:
    """The median (the mean of the middle two for an even count)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
