"""The access auditor's watch on the authorizer log: level changes and a silent log become findings."""

from __future__ import annotations

from pipeline.access.authorizer_log import Decision
from pipeline.access.trail_watch import TrailWatch

OWN = "User:access-auditor"


def _probe_decision(at: float, principal: str = OWN, resource: str = "audit.raw") -> Decision:
    return Decision(int(at * 1_000_000), principal, True, "describe", "127.0.0.1", "topic", "LITERAL", resource,
                    "Metadata", "MatchingAcl")


def _watch(levels: dict[int, str]) -> tuple[TrailWatch, list[float]]:
    probes: list[float] = []
    watch = TrailWatch(own_principal=OWN, probe_topic="audit.raw", probe=lambda: probes.append(1.0),
                       read_levels=lambda: levels, interval=10, timeout=30)
    return watch, probes


def test_a_live_log_at_debug_gives_no_finding():
    watch, probes = _watch({1: "DEBUG"})
    for second in range(0, 100, 5):
        assert watch.tick(1000.0 + second) == []
        watch.observe(_probe_decision(1000.0 + second + 0.2))
    assert len(probes) >= 3


def test_a_silenced_logger_is_found_by_level_and_by_the_missing_probe_then_restoration():
    levels = {1: "DEBUG"}
    watch, _probes = _watch(levels)
    assert watch.tick(1000.0) == []
    watch.observe(_probe_decision(1000.1))
    levels[1] = "WARN"
    found = watch.tick(1011.0)
    assert [(f.action, f.status) for f in found] == [("authorizer_log.level", "FAILURE")]
    assert "allowed decisions and denials are no longer logged" in found[0].reason
    # nobody logs the probe now; others' decisions do not count
    watch.observe(_probe_decision(1012.0, principal="User:admin"))
    watch.observe(_probe_decision(1012.0, resource="orders"))
    assert watch.tick(1030.0) == []
    silent = watch.tick(1042.0)
    assert [(f.action, f.status) for f in silent] == [("authorizer_log.silent", "FAILURE")]
    assert watch.tick(1043.0) == []  # once per outage
    levels[1] = "DEBUG"
    back = watch.tick(1053.0)
    assert [(f.action, f.status) for f in back] == [("authorizer_log.level", "SUCCESS")]
    watch.observe(_probe_decision(1053.5))
    assert [(f.action, f.status) for f in watch.tick(1054.0)] == [("authorizer_log.resumed", "SUCCESS")]


def test_a_probe_older_than_the_request_does_not_count():
    watch, _probes = _watch({1: "DEBUG"})
    watch.tick(1000.0)
    watch.observe(_probe_decision(990.0))
    assert [f.action for f in watch.tick(1031.0)] == ["authorizer_log.silent"]


def test_an_unreadable_level_is_a_finding_once():
    def broken():
        raise RuntimeError("CLUSTER_AUTHORIZATION_FAILED")

    watch = TrailWatch(own_principal=OWN, probe_topic="audit.raw", probe=lambda: None, read_levels=broken,
                       interval=1, timeout=30)
    assert [f.action for f in watch.tick(1.0)] == ["authorizer_log.level"]
    assert watch.tick(2.5) == []
