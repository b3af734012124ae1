"""The detector's rules, as pure functions over one access event and the tables' state."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli.detect import rules_path
from pipeline.detector.app import alert_event
from pipeline.detector.rules import (
    Access,
    DetectorConfigError,
    access_from_event,
    judge,
    load_detector_config,
    parse_detector_config,
)
from pipeline.wire.codec import EventCodec
from pipeline.wire.validation import validate_event

HOUR = 3600 * 1_000_000
DAY = 24 * HOUR
T0 = 1_767_225_600 * 1_000_000  # 2026-01-01T00:00:00Z
CONFIG = load_detector_config(rules_path())


def _access(principal="User:siem", action="topic.read", topic="audit.sealed", status="SUCCESS", at=T0 + 2 * DAY,
            event_id="e", reason=None) -> Access:
    return Access(event_id, principal, action, "kafka.topic", topic, status, at, reason)


def _replay(accesses, config=CONFIG):
    """Run accesses through judge with in-memory tables; return the alerts per access."""
    profiles, buckets, started, raised = {}, {}, None, []
    for access in accesses:
        window = access.occurred_at // (config.burst_window * 1_000_000)
        verdict = judge(access, profiles.get(access.principal), buckets.get((access.principal, window)),
                        config=config, learning_started=started, window_start=window)
        profiles[access.principal] = verdict.profile
        if verdict.bucket is not None:
            buckets[(access.principal, window)] = verdict.bucket
        started = verdict.learning_started
        raised.append(verdict.alerts)
    return raised


def _baseline(principal="User:siem", topic="audit.sealed", days=1, hours=range(9, 18)):
    """Reads during the learning day, in office hours."""
    return [_access(principal, topic=topic, at=T0 + d * DAY + h * HOUR, event_id=f"b{d}-{h}")
            for d in range(days) for h in hours for _ in range(3)]


def _rules(raised) -> list[str]:
    return [alert.rule for alerts in raised for alert in alerts]


def test_normal_traffic_after_learning_raises_nothing():
    normal = [_access(at=T0 + 2 * DAY + h * HOUR + m, event_id=f"n{h}{m}") for h in range(9, 18) for m in range(3)]
    assert _rules(_replay(_baseline() + normal)) == []


def test_a_burst_of_denials_raises_one_alert_per_window_with_the_evidence():
    threshold = CONFIG.rule("denied_burst").threshold
    denials = [_access("User:mallory", "topic.describe", status="DENIED", at=T0 + i * 1_000_000, event_id=f"d{i}",
                       reason="DefaultDeny") for i in range(threshold * 2)]
    raised = _replay(denials)
    bursts = [a for alerts in raised for a in alerts if a.rule == "denied_burst"]
    assert len(bursts) == 1 and raised[threshold - 1] == (bursts[0],)
    alert = bursts[0]
    assert (alert.principal, alert.count, alert.threshold) == ("User:mallory", threshold, threshold)
    assert alert.evidence_event_ids == tuple(f"d{i}" for i in range(threshold))
    assert alert.attributes["last_reason"] == "DefaultDeny"


def test_denials_below_the_threshold_or_spread_over_windows_stay_quiet():
    threshold, window = CONFIG.rule("denied_burst").threshold, CONFIG.burst_window
    spread = [_access("User:mallory", status="DENIED", at=T0 + i * window * 1_000_000 // 2, event_id=f"d{i}")
              for i in range(threshold * 2)]
    assert "denied_burst" not in _rules(_replay(spread))


def test_a_known_principal_reading_a_new_topic_is_flagged_once_per_topic():
    at = T0 + 2 * DAY + 10 * HOUR
    reads = [_access(topic="audit.raw", event_id="x1", at=at), _access(topic="audit.raw", event_id="x2", at=at + 1)]
    raised = _replay(_baseline() + reads)
    assert _rules(raised) == ["new_topic_read"]
    alert = raised[-2][0]
    assert alert.attributes["topic"] == "audit.raw" and alert.attributes["known_topics"] == "audit.sealed"


def test_a_read_outside_usual_hours_is_flagged_once_per_clock_hour():
    late = [_access(at=T0 + 2 * DAY + 3 * HOUR + i, event_id=f"late{i}") for i in range(3)]
    raised = _replay(_baseline() + late)
    assert _rules(raised) == ["off_hours_read"]
    assert raised[-3][0].attributes["hour_utc"] == "3"
    assert raised[-3][0].attributes["usual_hours"] == ",".join(str(h) for h in range(9, 18))


def test_too_little_history_is_never_off_hours():
    few = _baseline(hours=[10])[:2]
    assert _rules(_replay(few + [_access(at=T0 + 2 * DAY + 3 * HOUR)])) == []


def test_a_new_principal_is_flagged_after_learning_but_not_during_it_nor_when_known():
    during = _access("User:early", at=T0 + HOUR)
    after = _access("User:intruder", action="topic.describe", status="DENIED", at=T0 + 2 * DAY)
    assert _rules(_replay([*_baseline(), during, after])) == ["new_principal"]
    config = parse_detector_config((rules_path()).read_text().replace("known_principals: [kafka-controller, User:reconciler]",
                                                                      "known_principals: [User:intruder]"))
    assert _rules(_replay([*_baseline(), after], config)) == []


def test_a_failed_verification_is_flagged_even_while_learning():
    failed = _access("User:verifier", "archive.verify", "s3://audit-archive", "FAILURE", T0, "v1", "2 violations")
    passed = _access("User:verifier", "archive.verify", "s3://audit-archive", "SUCCESS", T0 + 1, "v2")
    raised = _replay([failed, passed])
    assert _rules(raised) == ["verification_failure"]
    assert raised[0][0].attributes["reason"] == "2 violations"


def test_alert_ids_are_deterministic_and_distinct_per_key():
    denials = [_access("User:m", status="DENIED", at=T0 + i, event_id=f"d{i}") for i in range(10)]
    first, second = _rules_alerts(denials), _rules_alerts(denials)
    assert [a.alert_id for a in first] == [a.alert_id for a in second]
    other = _rules_alerts([_access("User:n", status="DENIED", at=T0 + i, event_id=f"d{i}") for i in range(10)])
    assert first[0].alert_id != other[0].alert_id


def _rules_alerts(accesses):
    return [a for alerts in _replay(accesses) for a in alerts]


def test_the_alert_record_and_its_audit_event_are_valid():
    alert = _rules_alerts([_access("User:m", status="DENIED", at=T0 + i, event_id=f"d{i}") for i in range(10)])[0]
    record = alert.record(raised_at=T0 + 5)
    codec = EventCodec(family="alert")
    decoded = codec.decode(codec.encode(record))
    assert str(decoded["alert_id"]) == alert.alert_id and decoded["evidence_event_ids"] == record["evidence_event_ids"]
    event = alert_event(record, principal="User:detector")
    validate_event(event)
    assert event["event_id"] == alert.alert_id and event["action"] == "alert.raised"
    assert event["attributes"]["rule"] == "denied_burst" and event["resource"] == {"type": "principal", "id": "User:m"}


def test_access_events_are_picked_from_the_raw_stream():
    event = {"event_id": "1", "occurred_at": T0, "actor": {"id": "User:siem"}, "action": "topic.read",
             "resource": {"type": "kafka.topic", "id": "audit.sealed"}, "outcome": {"status": "SUCCESS", "reason": None},
             "source_service": "kafka-broker"}
    assert access_from_event(event, CONFIG, own_principal="User:detector").principal == "User:siem"
    assert access_from_event({**event, "source_service": "billing"}, CONFIG, own_principal="User:detector") is None
    own = {**event, "actor": {"id": "User:detector"}}
    assert access_from_event(own, CONFIG, own_principal="User:detector") is None


@pytest.mark.parametrize("text, problem", [
    ("version: 2", "version: expected 1"),
    ("version: 1\nrules: {bogus: {}}", "rules.bogus: unknown rule"),
    ("version: 1\nrules: {denied_burst: {threshold: 0}}", "threshold: expected an integer >= 1"),
    ("version: 1\nrules: {denied_burst: {windw: 5}}", "unknown key(s) windw"),
    ("version: 1\nrules: {new_principal: {severity: LOUD}}", "severity: expected one of"),
])
def test_a_bad_rules_file_is_one_clear_error(text, problem):
    with pytest.raises(DetectorConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_detector_config(text)


def test_a_disabled_rule_is_off():
    config = parse_detector_config("version: 1\nrules: {denied_burst: {enabled: false}, new_principal: {}}")
    assert config.rule("denied_burst") is None and config.rule("new_principal") is not None
    assert Path(rules_path()).name == "detector.yaml"


def _change(action, resource_type, resource_id, attributes, event_id="m1", principal="kafka-controller",
            status="SUCCESS"):
    return Access(event_id, principal, action, resource_type, resource_id, status, T0 + 2 * DAY, None,
                  "kafka-metadata", attributes)


@pytest.mark.parametrize("announced, severity", [("no", "CRITICAL"), ("yes", "INFO")])
def test_a_credential_change_is_alerted_critical_unless_announced(announced, severity):
    change = _change("user.credential_set", "kafka.user", "sealer",
                     {"change": "changed", "rotation_announced": announced, "metadata_offset": "7"})
    raised = _replay([change])  # also while learning: a privileged act is never "normal"
    assert _rules(raised) == ["credential_change"]
    alert = raised[0][0]
    assert (alert.severity, alert.principal, alert.attributes["user"]) == (severity, "User:sealer", "sealer")


@pytest.mark.parametrize("access, named", [
    (_change("topic.delete", "kafka.topic", "audit.sealed", {"request_api": "DeleteRecords"},
             principal="User:sink"), "User:sink deleted records of audit.sealed"),
    (_change("topic.delete", "kafka.topic", "audit.alerts", {}), "deleted audit.alerts"),
    (_change("config.set", "kafka.topic", "audit.sealed", {"key": "retention.ms", "value": "1000"}),
     "retention.ms of topic audit.sealed set to 1000"),
    (_change("config.set", "kafka.broker", "", {"key": "log.cleanup.policy", "value": "compact"}),
     "log.cleanup.policy"),
])
def test_destructive_acts_on_audit_topics_are_critical(access, named):
    raised = _replay([access])
    assert _rules(raised) == ["destructive_act"] and raised[0][0].severity == "CRITICAL"
    assert named in raised[0][0].summary


def test_harmless_changes_and_other_topics_raise_nothing():
    assert _rules(_replay([
        _change("config.set", "kafka.topic", "orders", {"key": "retention.ms", "value": "1"}, "a"),
        _change("config.set", "kafka.topic", "audit.raw", {"key": "max.message.bytes", "value": "1"}, "b"),
        _change("topic.delete", "kafka.topic", "audit.raw", {"request_api": "DeleteRecords"}, "c", status="DENIED"),
    ])) == []


def _acl(operation, principal="User:admin", resource_type="cluster", resource="kafka-cluster"):
    binding = {"principal": principal, "operation": operation, "permission": "allow", "resource_type": resource_type,
               "resource": resource, "pattern": "literal", "host": "*"}
    return f"ALLOW {principal} {operation.upper()} on {resource_type} {resource}", binding


def test_acl_grants_outside_the_roles_file_are_alerted_and_declared_ones_are_not():
    from dataclasses import replace

    grant_id, grant = _acl("alter_configs")
    declared_id, declared = _acl("write", "User:producer", "topic", "audit.raw")
    harmless_id, harmless = _acl("read", "User:orders", "topic", "orders")
    config = replace(CONFIG, declared_acls=frozenset({declared_id}))
    raised = _replay([_change("acl.create", "kafka.acl", grant_id, grant, "g"),
                      _change("acl.delete", "kafka.acl", grant_id, grant, "r"),
                      _change("acl.create", "kafka.acl", declared_id, declared, "d"),
                      _change("acl.create", "kafka.acl", harmless_id, harmless, "h")], config)
    alerts = [alert for alerts in raised for alert in alerts]
    assert [(a.rule, a.severity, a.attributes["change"]) for a in alerts] == [
        ("acl_change", "CRITICAL", "granted"), ("acl_change", "WARNING", "revoked")]
    assert alerts[0].principal == "User:admin"


@pytest.mark.parametrize("action", ["authorizer_log.level", "authorizer_log.silent", "metadata_log.gap"])
def test_an_impaired_trail_is_critical_and_its_restoration_is_not_alerted(action):
    failed = Access("t1", "User:access-auditor", action, "kafka.authorizer_log", "log", "FAILURE", T0, "WARN",
                    "auditseal-access-auditor")
    restored = Access("t2", "User:access-auditor", action, "kafka.authorizer_log", "log", "SUCCESS", T0 + 1, "DEBUG",
                      "auditseal-access-auditor")
    raised = _replay([failed, restored])
    assert _rules(raised) == ["trail_tampering"] and raised[0][0].severity == "CRITICAL"
