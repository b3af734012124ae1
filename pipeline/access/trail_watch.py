"""Is the broker still writing its authorizer log? The access auditor's watch on its own input.

Two checks, every ``interval`` seconds (:class:`TrailWatch`):

- *level*: the ``kafka.authorizer.logger`` level of every broker (:mod:`pipeline.access.broker_logger`). Below
  DEBUG the allowed decisions are no longer written; below INFO, the denials neither. A change is an event
  (``authorizer_log.level`` FAILURE), and so is its restoration (SUCCESS).
- *liveness*: the auditor makes a request the broker must log (a Metadata request for the raw topic: an
  allowed DESCRIBE, logged at DEBUG) and expects its own decision in the log within ``timeout`` seconds.
  If it does not come, whatever the reason (logger silenced, appender broken, file moved, broker stalled),
  that is an event (``authorizer_log.silent`` FAILURE), and its return is one too (``authorizer_log.resumed``).

Pure apart from the two callables it is given; the clock is a parameter so tests can drive it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.access.authorizer_log import Decision
from pipeline.access.broker_logger import AUTHORIZER_LOGGER, FULL_LEVELS

PROBE_REQUEST = "Metadata"
CLOCK_SLACK_S = 1.0  # the log's timestamps and our clock come from the same host; allow rounding


@dataclass(frozen=True)
class TrailFinding:
    """Something the watch found: the event's action, status (FAILURE or SUCCESS), reason and a unique key."""

    action: str
    status: str
    reason: str
    key: str


class TrailWatch:
    """Watches the authorizer logger's level and the log's liveness (see the module docstring)."""

    def __init__(self, *, own_principal: str, probe_topic: str, probe: Callable[[], None],
                 read_levels: Callable[[], Mapping[int, str]], interval: float = 10.0, timeout: float = 30.0) -> None:
        self.own_principal = own_principal
        self.probe_topic = probe_topic
        self.probe = probe
        self.read_levels = read_levels
        self.interval = interval
        self.timeout = timeout
        self.levels: dict[int, str] = {}
        self.level_error: str | None = None
        self.next_check = 0.0
        self.sent_at: float | None = None
        self.seen = False
        self.silent_since: float | None = None

    def observe(self, decision: Decision) -> None:
        """Called for every decision read from the log: notes the auditor's own probe."""
        if (self.sent_at is not None and decision.principal == self.own_principal
                and decision.request == PROBE_REQUEST and decision.resource == self.probe_topic
                and decision.occurred_at >= (self.sent_at - CLOCK_SLACK_S) * 1_000_000):
            self.seen = True

    def tick(self, now: float) -> list[TrailFinding]:
        """Run the checks that are due at ``now`` (seconds since the epoch); return what they found."""
        findings: list[TrailFinding] = []
        if self.sent_at is not None and self.seen:
            if self.silent_since is not None:
                findings.append(TrailFinding("authorizer_log.resumed", "SUCCESS",
                                             f"the authorizer log logged the auditor's probe again, after being silent "
                                             f"since {self.silent_since:.0f}", f"resumed/{now:.3f}"))
                self.silent_since = None
            self.sent_at = None
        elif self.sent_at is not None and now - self.sent_at > self.timeout and self.silent_since is None:
            self.silent_since = self.sent_at
            findings.append(TrailFinding(
                "authorizer_log.silent", "FAILURE",
                f"the broker did not log the auditor's probe (an allowed {PROBE_REQUEST} request for "
                f"{self.probe_topic}) within {self.timeout:.0f}s: the authorizer log is silenced or stalled, "
                "and decisions made meanwhile are not recorded", f"silent/{self.sent_at:.3f}"))
            self.sent_at = None
        if now < self.next_check:
            return findings
        self.next_check = now + self.interval
        findings += self._check_levels(now)
        if self.sent_at is None:
            self.sent_at, self.seen = now, False
            self.probe()
        return findings

    def _check_levels(self, now: float) -> list[TrailFinding]:
        try:
            levels = dict(self.read_levels())
        except Exception as exc:  # any failure to read the level is itself a finding, once per kind of failure
            reason = f"cannot read the {AUTHORIZER_LOGGER} level: {exc}"
            if reason == self.level_error:
                return []
            self.level_error = reason
            return [TrailFinding("authorizer_log.level", "FAILURE", reason[:1000], f"level-error/{now:.3f}")]
        self.level_error = None
        findings = []
        for broker, level in sorted(levels.items()):
            before = self.levels.get(broker)
            if level == before:
                continue
            if level.upper() not in FULL_LEVELS:
                lost = "allowed decisions" if level.upper() == "INFO" else "allowed decisions and denials"
                findings.append(TrailFinding("authorizer_log.level", "FAILURE",
                                             f"broker {broker}: {AUTHORIZER_LOGGER} is {level}"
                                             f"{f' (was {before})' if before else ''}: {lost} are no longer logged",
                                             f"level/{broker}/{level}/{now:.3f}"))
            elif before is not None:
                findings.append(TrailFinding("authorizer_log.level", "SUCCESS",
                                             f"broker {broker}: {AUTHORIZER_LOGGER} is {level} again (was {before})",
                                             f"level/{broker}/{level}/{now:.3f}"))
        self.levels = levels
        return findings
