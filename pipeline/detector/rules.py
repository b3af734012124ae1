"""The anomalous-access rules: pure functions over one access event and the state a Faust table keeps.

No I/O here. The Faust agent (:mod:`pipeline.detector.app`) looks up a principal's profile and its
denied-attempts bucket for the current window, calls :func:`judge`, stores what it returns and emits
the alerts. State values are plain JSON-able dicts, the form Faust tables persist to their changelog:

- a *profile* per principal: ``first_seen``, ``reads``, ``topics`` read, reads per UTC hour (``hours``),
  and the last clock hour an off-hours alert was raised for;
- a *bucket* per principal and tumbling window: DENIED decisions counted, the first and last event
  times, the most recent event ids.

Rules, configured in ``config/detector.yaml`` (:func:`load_detector_config`): ``denied_burst``,
``new_topic_read``, ``off_hours_read``, ``new_principal``, ``verification_failure``, and the privileged-act
rules over the access auditor's metadata-log and authorizer events: ``credential_change``, ``destructive_act``,
``acl_change``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

RULE_NAMES = ("denied_burst", "new_topic_read", "off_hours_read", "new_principal", "verification_failure",
              "credential_change", "destructive_act", "acl_change", "trail_tampering")
# the access auditor's findings about its own inputs: the trail silenced, stalled or cut
TRAIL_ACTIONS = frozenset({"authorizer_log.level", "authorizer_log.silent", "authorizer_log.gap", "metadata_log.gap",
                           "access_record.reject"})
CREDENTIAL_ACTIONS = ("user.credential_set", "user.credential_delete")
CONFIG_ACTIONS = ("config.set", "config.delete")
ACL_ACTIONS = ("acl.create", "acl.delete")
# ACL operations that destroy or reconfigure what they cover
DESTRUCTIVE_ACL_OPERATIONS = frozenset({"all", "delete", "alter", "alter_configs", "cluster_action"})
SEVERITIES = ("INFO", "WARNING", "CRITICAL")
MAX_EVIDENCE = 50
HOUR_MICROS = 3600 * 1_000_000
# namespace of alert ids: uuid5(ALERT_ID_NAMESPACE, "<rule>/<principal>/<key>")
ALERT_ID_NAMESPACE = uuid.UUID("5b0f3a56-7d39-4f0e-9a53-2f1c4a7f0d21")


class DetectorConfigError(ConfigError):
    """The detector's rules file is missing, not YAML, or names an unknown rule, key or value."""


@dataclass(frozen=True)
class RuleConfig:
    """One rule's settings; only the fields its rule reads matter."""

    name: str
    severity: str = "WARNING"
    threshold: int = 10
    window: int = 60
    min_history: int = 20
    min_share: float = 0.02
    known_principals: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset({"archive.verify"})
    statuses: frozenset[str] = frozenset({"FAILURE"})
    announced_severity: str = "INFO"
    principals: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset({"audit.raw", "audit.sealed", "audit.alerts"})
    config_keys: frozenset[str] = frozenset({"retention.ms", "retention.bytes", "cleanup.policy", "local.retention.ms",
                                             "local.retention.bytes", "delete.retention.ms", "min.insync.replicas",
                                             "log.retention.ms", "log.retention.hours", "log.retention.minutes",
                                             "log.retention.bytes", "log.cleanup.policy"})


@dataclass(frozen=True)
class DetectorConfig:
    """The whole rules file."""

    rules: Mapping[str, RuleConfig]
    access_sources: frozenset[str] = frozenset({"kafka-broker", "kafka-metadata", "auditseal",
                                                "auditseal-access-auditor", "auditseal-reconciler"})
    read_actions: frozenset[str] = frozenset({"topic.read", "topic.consume", "archive.read"})
    ignore_principals: frozenset[str] = frozenset({"Cert:broker"})
    learning_period: int = 86400
    # ACL bindings the roles file declares (describe_binding form): creating or deleting one is provisioning
    declared_acls: frozenset[str] = frozenset()

    def rule(self, name: str) -> RuleConfig | None:
        """The settings of rule ``name``, or None when it is off."""
        return self.rules.get(name)

    @property
    def burst_window(self) -> int:
        """Seconds of the denied-attempts tumbling window (its table needs it at start-up)."""
        rule = self.rule("denied_burst")
        return rule.window if rule else 60


_RULE_KEYS = {
    "denied_burst": {"threshold", "window"},
    "new_topic_read": set(),
    "off_hours_read": {"min_history", "min_share"},
    "new_principal": {"known_principals"},
    "verification_failure": {"actions", "statuses"},
    "credential_change": {"announced_severity", "principals"},
    "destructive_act": {"topics", "config_keys"},
    "acl_change": {"principals", "topics"},
    "trail_tampering": {"actions"},
}


def parse_detector_config(text: str, *, where: str = "detector.yaml") -> DetectorConfig:
    """Validate rules-file YAML ``text``; DetectorConfigError names the entry and the problem."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DetectorConfigError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(document, Mapping):
        raise DetectorConfigError(f"{where}: expected a mapping at the top")
    _only_keys(document, {"version", "access_sources", "read_actions", "ignore_principals", "learning_period",
                          "rules"}, where)
    if document.get("version") != 1:
        raise DetectorConfigError(f"{where}: version: expected 1, found {document.get('version')!r}")
    entries = document.get("rules") or {}
    if not isinstance(entries, Mapping):
        raise DetectorConfigError(f"{where}: rules: expected a mapping of rule name to settings")
    rules = {}
    for name, entry in entries.items():
        if name not in RULE_NAMES:
            raise DetectorConfigError(f"{where}: rules.{name}: unknown rule; expected one of {', '.join(RULE_NAMES)}")
        rule = _rule(name, entry or {}, f"{where}: rules.{name}")
        if rule is not None:
            rules[name] = rule
    defaults = DetectorConfig(rules={})
    return DetectorConfig(
        rules=rules,
        access_sources=_strings(document, "access_sources", defaults.access_sources, where),
        read_actions=_strings(document, "read_actions", defaults.read_actions, where),
        ignore_principals=_strings(document, "ignore_principals", defaults.ignore_principals, where),
        learning_period=_number(document, "learning_period", defaults.learning_period, where, int, minimum=0),
    )


def load_detector_config(path: Path) -> DetectorConfig:
    """Read and validate the rules file at ``path``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DetectorConfigError(f"cannot read the detector rules file {path}: {exc.strerror or exc}; "
                                  "pass --rules or set AUDITSEAL_DETECTOR_RULES") from None
    return parse_detector_config(text, where=str(path))


def _rule(name: str, entry: Any, where: str) -> RuleConfig | None:
    if not isinstance(entry, Mapping):
        raise DetectorConfigError(f"{where}: expected a mapping of settings")
    _only_keys(entry, {"enabled", "severity"} | _RULE_KEYS[name], where)
    if entry.get("enabled", True) is False:
        return None
    severity = entry.get("severity", "WARNING")
    announced = entry.get("announced_severity", "INFO")
    for key, value in (("severity", severity), ("announced_severity", announced)):
        if value not in SEVERITIES:
            raise DetectorConfigError(f"{where}: {key}: expected one of {', '.join(SEVERITIES)}, found {value!r}")
    base = RuleConfig(name, actions=TRAIL_ACTIONS) if name == "trail_tampering" else RuleConfig(name)
    return RuleConfig(
        name, severity,
        threshold=_number(entry, "threshold", base.threshold, where, int, minimum=1),
        window=_number(entry, "window", base.window, where, int, minimum=1),
        min_history=_number(entry, "min_history", base.min_history, where, int, minimum=1),
        min_share=_number(entry, "min_share", base.min_share, where, float, minimum=0),
        known_principals=_strings(entry, "known_principals", base.known_principals, where),
        actions=_strings(entry, "actions", base.actions, where),
        statuses=_strings(entry, "statuses", base.statuses, where),
        announced_severity=announced,
        principals=_strings(entry, "principals", base.principals, where),
        topics=_strings(entry, "topics", base.topics, where),
        config_keys=_strings(entry, "config_keys", base.config_keys, where),
    )


def _only_keys(entry: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(map(str, entry)) - allowed)
    if unknown:
        raise DetectorConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed))}")


def _number(entry: Mapping[str, Any], key: str, default, where: str, kind: type, *, minimum: float):
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)) \
            or value < minimum:
        raise DetectorConfigError(f"{where}: {key}: expected {'an integer' if kind is int else 'a number'} "
                                  f">= {minimum}, found {value!r}")
    return kind(value)


def _strings(entry: Mapping[str, Any], key: str, default: frozenset[str], where: str) -> frozenset[str]:
    value = entry.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DetectorConfigError(f"{where}: {key}: expected a list of names, found {value!r}")
    return frozenset(value)


# ---- access events -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Access:
    """The parts of an AuditEvent the rules look at."""

    event_id: str
    principal: str
    action: str
    resource_type: str
    resource_id: str
    status: str
    occurred_at: int  # microseconds since the epoch, UTC
    reason: str | None = None
    source: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


def access_from_event(event: Mapping[str, Any], config: DetectorConfig, *, own_principal: str) -> Access | None:
    """The access an AuditEvent (as decoded by the codec) describes, or None if the rules ignore it:
    an event from another source, the detector's own alerts, or an ignored principal."""
    if event.get("source_service") not in config.access_sources:
        return None
    principal = event["actor"]["id"]
    if principal == own_principal or principal in config.ignore_principals:
        return None
    occurred = event["occurred_at"]
    if isinstance(occurred, datetime):
        occurred = int(occurred.timestamp() * 1_000_000)
    return Access(event_id=str(event["event_id"]), principal=principal, action=event["action"],
                  resource_type=event["resource"]["type"], resource_id=event["resource"]["id"],
                  status=str(event["outcome"]["status"]), occurred_at=int(occurred),
                  reason=event["outcome"].get("reason"), source=event["source_service"],
                  attributes=dict(event.get("attributes") or {}))


# ---- alerts --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Alert:
    """One alert, in the fields of ``schemas/alert.v1.avsc`` (raised_at is set when it is written)."""

    rule: str
    severity: str
    principal: str
    key: str  # what makes this alert distinct for its rule and principal (window, topic, hour, event)
    window_start: int
    window_end: int
    count: int
    threshold: int
    summary: str
    evidence_event_ids: tuple[str, ...]
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def alert_id(self) -> str:
        """Deterministic: the same evidence replayed raises the same id."""
        return str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{self.rule}/{self.principal}/{self.key}"))

    def record(self, raised_at: int) -> dict[str, Any]:
        """The Avro record for ``audit.alerts`` (``raised_at`` in microseconds)."""
        return {"alert_id": self.alert_id, "rule": self.rule, "severity": self.severity, "principal": self.principal,
                "raised_at": raised_at, "window_start": self.window_start, "window_end": self.window_end,
                "count": self.count, "threshold": self.threshold, "summary": self.summary,
                "evidence_event_ids": list(self.evidence_event_ids), "attributes": dict(self.attributes)}


# ---- judging -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """What :func:`judge` decided: the principal's new profile, the window bucket's new value (None when the
    event is not a denial), the learning start, and the alerts to raise."""

    profile: dict[str, Any]
    bucket: dict[str, Any] | None
    learning_started: int
    alerts: tuple[Alert, ...]


def judge(access: Access, profile: Mapping[str, Any] | None, bucket: Mapping[str, Any] | None, *,
          config: DetectorConfig, learning_started: int | None, window_start: int) -> Verdict:
    """Apply every enabled rule to one access, given the principal's profile (None: never seen), its
    denied-attempts bucket for the current window (None or empty: none yet), when learning started (None:
    this is the first access ever seen) and the current window's start (microseconds)."""
    started = access.occurred_at if learning_started is None else min(learning_started, access.occurred_at)
    learning = access.occurred_at < started + config.learning_period * 1_000_000
    alerts: list[Alert] = []
    new_bucket = None
    if access.status == "DENIED":
        new_bucket = count_denial(bucket, access)
        alerts += denied_burst(new_bucket, access.principal, config.rule("denied_burst"), window_start)
    alerts += verification_failure(access, config.rule("verification_failure"))
    alerts += credential_change(access, config.rule("credential_change"))
    alerts += destructive_act(access, config.rule("destructive_act"))
    alerts += acl_change(access, config.rule("acl_change"), config.declared_acls)
    alerts += trail_tampering(access, config.rule("trail_tampering"))
    if not learning:
        alerts += new_principal(access, profile, config.rule("new_principal"))
        if profile is not None and access.action in config.read_actions:
            alerts += new_topic_read(access, profile, config.rule("new_topic_read"))
            alerts += off_hours_read(access, profile, config.rule("off_hours_read"))
    updated = observe(profile, access, read=access.action in config.read_actions and access.status == "SUCCESS")
    if any(a.rule == "off_hours_read" for a in alerts):
        updated["off_hours_alerted"] = access.occurred_at // HOUR_MICROS
    return Verdict(updated, new_bucket, started, tuple(alerts))


def observe(profile: Mapping[str, Any] | None, access: Access, *, read: bool) -> dict[str, Any]:
    """The principal's profile after ``access``: seen, and for a successful read its topic and hour learnt."""
    updated = {"first_seen": access.occurred_at, "reads": 0, "topics": [], "hours": [0] * 24,
               "off_hours_alerted": -1, **(dict(profile) if profile else {})}
    updated["first_seen"] = min(updated["first_seen"], access.occurred_at)
    if read:
        updated["reads"] += 1
        if access.resource_id not in updated["topics"]:
            updated["topics"] = [*updated["topics"], access.resource_id]
        hours = list(updated["hours"])
        hours[hour_of(access.occurred_at)] += 1
        updated["hours"] = hours
    return updated


def hour_of(micros: int) -> int:
    """The UTC hour of day (0-23) of a time in microseconds."""
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC).hour


def count_denial(bucket: Mapping[str, Any] | None, access: Access) -> dict[str, Any]:
    """The window bucket after one more DENIED decision."""
    bucket = dict(bucket or {})
    ids = [*bucket.get("ids", []), access.event_id][-MAX_EVIDENCE:]
    return {"count": bucket.get("count", 0) + 1, "first": min(bucket.get("first", access.occurred_at),
                                                                access.occurred_at),
            "last": max(bucket.get("last", access.occurred_at), access.occurred_at), "ids": ids,
            "last_reason": access.reason or "", "last_action": access.action, "last_resource": access.resource_id}


def denied_burst(bucket: Mapping[str, Any], principal: str, rule: RuleConfig | None, window_start: int) -> list[Alert]:
    """One alert when a principal's denials in the window reach the threshold (exactly at it: once per window)."""
    if rule is None or bucket["count"] != rule.threshold:
        return []
    return [Alert("denied_burst", rule.severity, principal, f"window-{window_start}", bucket["first"], bucket["last"],
                  bucket["count"], rule.threshold,
                  f"{principal} was denied {bucket['count']} times within {rule.window}s "
                  f"(threshold {rule.threshold}); last: {bucket['last_action']} on {bucket['last_resource']}",
                  tuple(bucket["ids"]),
                  {"window_seconds": str(rule.window), "window_start_micros": str(window_start),
                   "last_reason": bucket["last_reason"], "last_action": bucket["last_action"],
                   "last_resource": bucket["last_resource"]})]


def new_principal(access: Access, profile: Mapping[str, Any] | None, rule: RuleConfig | None) -> list[Alert]:
    """An alert on the first access of a principal the detector has never seen and was not told about."""
    if rule is None or profile is not None or access.principal in rule.known_principals:
        return []
    return [_single(access, rule, "first", f"new principal {access.principal} appeared: {access.action} on "
                    f"{access.resource_id} ({access.status})", {"action": access.action,
                                                                  "resource": access.resource_id})]


def new_topic_read(access: Access, profile: Mapping[str, Any], rule: RuleConfig | None) -> list[Alert]:
    """An alert when a known principal reads a topic it never read before (successfully or not)."""
    if rule is None or access.resource_id in profile.get("topics", []):
        return []
    return [_single(access, rule, f"topic-{access.resource_id}",
                    f"{access.principal} read {access.resource_id} for the first time ({access.status}); "
                    f"it read only {', '.join(profile.get('topics', [])) or 'nothing'} before",
                    {"topic": access.resource_id, "action": access.action,
                     "known_topics": ",".join(profile.get("topics", []))})]


def usual_hours(profile: Mapping[str, Any], min_share: float) -> list[int]:
    """The UTC hours holding at least ``min_share`` of a principal's reads."""
    total = sum(profile.get("hours", [])) or 1
    return [hour for hour, count in enumerate(profile.get("hours", [])) if count and count / total >= min_share]


def off_hours_read(access: Access, profile: Mapping[str, Any], rule: RuleConfig | None) -> list[Alert]:
    """An alert when a principal with enough history reads in an hour that is not one of its usual hours
    (at most one per principal per clock hour)."""
    if rule is None or profile.get("reads", 0) < rule.min_history:
        return []
    hour, clock_hour = hour_of(access.occurred_at), access.occurred_at // HOUR_MICROS
    usual = usual_hours(profile, rule.min_share)
    if hour in usual or profile.get("off_hours_alerted") == clock_hour:
        return []
    return [_single(access, rule, f"hour-{clock_hour}",
                    f"{access.principal} read {access.resource_id} at {hour:02d}:00 UTC, outside its usual hours "
                    f"({_ranges(usual)} UTC, from {profile.get('reads', 0)} reads)",
                    {"hour_utc": str(hour), "usual_hours": ",".join(map(str, usual)), "topic": access.resource_id,
                     "history_reads": str(profile.get("reads", 0))})]


def verification_failure(access: Access, rule: RuleConfig | None) -> list[Alert]:
    """An alert for every verification run that reported violations."""
    if rule is None or access.action not in rule.actions or access.status not in rule.statuses:
        return []
    return [_single(access, rule, f"event-{access.event_id}",
                    f"verification of {access.resource_id} by {access.principal} failed: {access.reason or 'no reason'}",
                    {"action": access.action, "resource": access.resource_id, "reason": access.reason or ""})]


def credential_change(access: Access, rule: RuleConfig | None) -> list[Alert]:
    """An alert for every SCRAM credential set or deleted (``principals``, if given, limits it to those users):
    at ``severity`` unless ``auditseal acl apply`` (or ``dev up``) announced it (``announced_severity``)."""
    if rule is None or access.action not in CREDENTIAL_ACTIONS:
        return []
    user = access.resource_id
    if rule.principals and f"User:{user}" not in rule.principals:
        return []
    announced = access.attributes.get("rotation_announced") == "yes"
    what = "deleted" if access.action == "user.credential_delete" else access.attributes.get("change", "set")
    summary = (f"SCRAM credential of {user} {what}"
               + (" (announced by auditseal acl apply)" if announced else " outside `auditseal acl apply`"))
    alert = _single(access, rule, f"event-{access.event_id}", summary,
                    {"user": user, "change": what, "rotation_announced": "yes" if announced else "no",
                     "metadata_offset": access.attributes.get("metadata_offset", "")})
    severity = rule.announced_severity if announced else rule.severity
    return [Alert(alert.rule, severity, f"User:{user}", alert.key, alert.window_start, alert.window_end, alert.count,
                  alert.threshold, alert.summary, alert.evidence_event_ids, alert.attributes)]


def destructive_act(access: Access, rule: RuleConfig | None) -> list[Alert]:
    """An alert for any act that destroys or shortens the audit topics' data: records or a topic deleted
    (DeleteRecords, DeleteTopics), or a retention or cleanup setting of an audit topic (or the broker
    default) changed."""
    if rule is None or access.status != "SUCCESS":
        return []
    if access.action == "topic.delete" and access.resource_id in rule.topics:
        request = access.attributes.get("request_api", "topic deleted (metadata log)")
        summary = f"{access.principal} deleted {'records of ' if request == 'DeleteRecords' else ''}" \
                  f"{access.resource_id} ({request})"
        return [_single(access, rule, f"event-{access.event_id}", summary,
                        {"resource": access.resource_id, "request_api": request})]
    if access.action in CONFIG_ACTIONS and access.attributes.get("key") in rule.config_keys and (
            (access.resource_type == "kafka.topic" and access.resource_id in rule.topics)
            or access.resource_type == "kafka.broker"):
        key, value = access.attributes["key"], access.attributes.get("value", "(deleted)")
        return [_single(access, rule, f"event-{access.event_id}",
                        f"{key} of {access.resource_type.removeprefix('kafka.')} {access.resource_id} set to {value}",
                        {"resource": access.resource_id, "key": key, "value": value})]
    return []


def acl_change(access: Access, rule: RuleConfig | None, declared: frozenset[str]) -> list[Alert]:
    """An alert for an ACL created or deleted that the roles file does not declare, if it names one of
    ``principals`` (the pipeline's roles, ``User:*``) or an audit topic, an ``auditseal-`` name or the
    cluster: CRITICAL-level ``severity`` for a destructive ALLOW, WARNING otherwise."""
    if rule is None or access.action not in ACL_ACTIONS or access.resource_id in declared:
        return []
    binding = access.attributes
    resource = binding.get("resource", "")
    touches = (binding.get("principal") in rule.principals or binding.get("principal") == "User:*"
               or binding.get("resource_type") == "cluster" or resource in rule.topics or resource == "*"
               or resource.startswith(("audit.", "auditseal-")) or "unknown" in binding)
    if not touches:
        return []
    destructive = binding.get("permission") == "allow" and binding.get("operation") in DESTRUCTIVE_ACL_OPERATIONS
    verb = "granted" if access.action == "acl.create" else "revoked"
    alert = _single(access, rule, f"event-{access.event_id}", f"ACL {verb} outside the roles file: {access.resource_id}",
                    {"binding": access.resource_id, "change": verb})
    severity = rule.severity if destructive and verb == "granted" else "WARNING"
    return [Alert(alert.rule, severity, binding.get("principal", access.principal), alert.key, alert.window_start,
                  alert.window_end, alert.count, alert.threshold, alert.summary, alert.evidence_event_ids,
                  alert.attributes)]


def trail_tampering(access: Access, rule: RuleConfig | None) -> list[Alert]:
    """An alert for every failure the access auditor reports about its own inputs: the authorizer logger
    turned down, the log silent while it probes it, entries rotated or deleted before they were read."""
    if rule is None or access.action not in rule.actions or access.status != "FAILURE":
        return []
    return [_single(access, rule, f"event-{access.event_id}",
                    f"the audit trail's input is impaired ({access.action}): {access.reason or 'no reason given'}",
                    {"action": access.action, "reason": access.reason or ""})]


def _single(access: Access, rule: RuleConfig, key: str, summary: str, attributes: Mapping[str, str]) -> Alert:
    return Alert(rule.name, rule.severity, access.principal, key, access.occurred_at, access.occurred_at, 1, 1,
                 summary, (access.event_id,), dict(attributes))


def _ranges(hours: list[int]) -> str:
    return ",".join(f"{h:02d}" for h in hours) or "none"
