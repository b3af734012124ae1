"""The measured checks of an evidence report: each says what was checked, how, the result and the evidence.

Every result is measured when the report runs, not copied from configuration: the archive is verified in
full (:class:`~pipeline.verifier.archive.ArchiveVerifier`), the period's events are read and verified with
the timeline (:mod:`pipeline.timeline.scan`), the bucket's WORM behaviour is probed (``s3 check``), the
broker's ACLs are read (``acl check``). A check that cannot run here (no bucket for a local copy, no admin
credentials) is NOT_RUN with the reason: never a silent PASS.

Statuses: PASS, FAIL, NOT_RUN, and INFO for checks that are evidence to read (alerts raised, key changes)
rather than a pass mark.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.archive.layout import Manifest, ManifestError
from pipeline.archive.retention import ComplianceProfiles
from pipeline.errors import AuditSealError, ConfigError
from pipeline.integrity.keyring import Keyring
from pipeline.report.frameworks import Framework
from pipeline.timeline.query import TimelineQuery
from pipeline.timeline.scan import VERIFIED, Timeline, build_timeline
from pipeline.timeline.source import without_locks
from pipeline.verifier.archive import ArchiveVerifier, Report
from pipeline.verifier.chains import DEFAULT_HEAD_TOLERANCE_S

PASS, FAIL, NOT_RUN, INFO = "PASS", "FAIL", "NOT_RUN", "INFO"
DAY_MICROS = 86_400_000_000
ADMIN_USER_VARIABLE = "AUDITSEAL_REPORT_ADMIN_SASL_USERNAME"
ADMIN_PASSWORD_VARIABLE = "AUDITSEAL_REPORT_ADMIN_SASL_PASSWORD"
S3_CHECK_KEY_VARIABLE = "AUDITSEAL_S3_CHECK_ACCESS_KEY_ID"
S3_CHECK_SECRET_VARIABLE = "AUDITSEAL_S3_CHECK_SECRET_ACCESS_KEY"
LOG_ACCESS_RESOURCES = frozenset({"kafka.topic", "kafka.group", "kafka.transactional_id", "s3.prefix", "archive.dir",
                                  "s3.bucket", "evidence.report"})
LOGGING_STOP_ACTIONS = frozenset({"authorizer_log.silent", "authorizer_log.level", "authorizer_log.gap",
                                  "metadata_log.gap"})
REVIEW_ACTIONS = frozenset({"archive.verify", "archive.timeline", "report.issue"})


@dataclass
class Check:
    """One measured check (module docstring)."""

    id: str
    title: str
    how: str
    status: str
    summary: str
    evidence: Any = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"id": self.id, "title": self.title, "how": self.how, "status": self.status, "summary": self.summary,
                "evidence": self.evidence}


@dataclass
class Period:
    """The reported period ``[start, end)`` in microseconds."""

    start_micros: int
    end_micros: int

    def __post_init__(self) -> None:
        if self.end_micros <= self.start_micros:
            raise ConfigError("--until must be after --from: the period is empty")

    @property
    def days(self) -> list[str]:
        """Each UTC day of the period, ``YYYY-MM-DD``."""
        first = _day(self.start_micros)
        count = -(-(self.end_micros - self.start_micros) // DAY_MICROS)
        start = datetime.date.fromisoformat(first)
        return [(start + datetime.timedelta(days=n)).isoformat() for n in range(count + 1)
                if _day_start(start + datetime.timedelta(days=n)) < self.end_micros]


def _day(micros: int) -> str:
    return datetime.datetime.fromtimestamp(micros / 1e6, datetime.UTC).date().isoformat()


def _day_start(day: datetime.date) -> int:
    return int(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp() * 1_000_000)


def iso(micros: int | None) -> str | None:
    """ISO 8601 UTC (seconds) of a time in microseconds."""
    if micros is None:
        return None
    return datetime.datetime.fromtimestamp(micros / 1e6, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class EvidenceInputs:
    """Everything the checks read: the archive source, its keys and profiles, the period, the framework."""

    source: Any
    keyring: Keyring
    period: Period
    framework: Framework
    profiles: ComplianceProfiles
    master_keys: Mapping[str, Any] = field(default_factory=dict)
    bucket: str | None = None               # set when the source is a bucket (--s3)
    max_skew_s: float = 300.0
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    progress: Callable[[str], None] | None = None
    head_tolerance_s: float = DEFAULT_HEAD_TOLERANCE_S   # as verify --head-tolerance
    now_micros: int | None = None                        # the as-of time is min(period end, now); None: the clock


@dataclass
class Evidence:
    """What was measured: the checks and the series the charts draw."""

    checks: list[Check]
    events_per_day: dict[str, dict[str, int]]       # day -> service -> events
    denials_per_day: dict[str, int]
    gaps: list[dict[str, Any]]
    coverage: dict[str, int]                          # objects / valid, checkpoints / valid, events verified
    verification: dict[str, Any]
    first_event_micros: int | None
    last_event_micros: int | None


def _say(inputs: EvidenceInputs, text: str) -> None:
    if inputs.progress:
        inputs.progress(text)


def gather(inputs: EvidenceInputs) -> Evidence:
    """Run every check (module docstring)."""
    _say(inputs, "verifying the whole archive")
    as_of = min(inputs.period.end_micros, inputs.now_micros or time.time_ns() // 1000)
    report = ArchiveVerifier(inputs.keyring, inputs.profiles, dict(inputs.master_keys), as_of_micros=as_of,
                             head_tolerance_s=inputs.head_tolerance_s).verify(inputs.source)
    _say(inputs, "reading and verifying the period's events")
    timeline = build_timeline(without_locks(inputs.source), TimelineQuery.of(since_micros=inputs.period.start_micros,
                                                              until_micros=inputs.period.end_micros),
                              inputs.keyring, master_keys=inputs.master_keys, use_index=True)
    manifests = _manifests(inputs.source)
    first, last = _archive_span(manifests)
    checks = [
        _verification(report),
        _continuity(report, timeline, inputs.period, first, as_of, inputs.head_tolerance_s),
        _object_locks(report, inputs.bucket),
        _worm(inputs),
        _separation_of_duties(inputs),
        _retention(manifests, inputs),
        _access(timeline),
        _logging_stops(timeline),
        _alerts(timeline),
        _review(timeline),
        _key_changes(timeline),
        _clock_skew(timeline, inputs.max_skew_s),
    ]
    per_day: dict[str, dict[str, int]] = {day: {} for day in inputs.period.days}
    denials = dict.fromkeys(inputs.period.days, 0)
    for event in timeline.events:
        day = _day(event.head.occurred_at_micros)
        service = str(event.event.get("source_service"))
        per_day.setdefault(day, {})[service] = per_day.get(day, {}).get(service, 0) + 1
        if event.head.outcome == "DENIED":
            denials[day] = denials.get(day, 0) + 1
    continuity = next(check for check in checks if check.id == "continuity").evidence
    gaps = [v.as_dict() for v in report.violations if v.kind in ("gap", "tail_truncated")] + \
        [p.as_dict() for p in timeline.problems if p.kind == "gap"] + continuity["silent_intervals"]
    coverage = {"objects": report.objects, "objects_valid": report.objects_valid, "checkpoints": report.checkpoints,
                "checkpoints_valid": report.checkpoints_valid, "events": len(timeline.events),
                "events_verified": sum(e.status == VERIFIED for e in timeline.events)}
    return Evidence(checks, per_day, denials, gaps, coverage, report.as_dict(), first, last)


def _manifests(source: Any) -> list[Manifest]:
    found = []
    for entry in source.entries():
        if entry.manifest_versions:
            try:
                found.append(Manifest.from_bytes(entry.manifest_versions[0].read(), entry.name))
            except ManifestError:
                continue  # reported by the verification
    return found


def _archive_span(manifests: list[Manifest]) -> tuple[int | None, int | None]:
    # occurred_at range from the query indexes, else the records' Kafka timestamps
    lows = [m.index.occurred_min_micros if m.index and m.index.occurred_min_micros is not None
            else m.first_timestamp_micros for m in manifests]
    highs = [m.index.occurred_max_micros if m.index and m.index.occurred_max_micros is not None
             else m.last_timestamp_micros for m in manifests]
    return (min(lows) if lows else None), (max(highs) if highs else None)


def _verification(report: Report) -> Check:
    data = report.as_dict()
    status = PASS if report.intact else FAIL
    summary = (f"INTACT: {report.objects} objects, {report.records} records, {report.checkpoints} checkpoints all valid"
               if report.intact else f"{report.violation_total} violation(s): " + ", ".join(
                   f"{kind} {count}" for kind, count in sorted(report.violation_counts.items())))
    return Check("verification", "Full verification of the archive",
                 "auditseal verify's verifier over every object and version: manifests against bytes, every record's "
                 "hash, chain contiguity, every checkpoint's Merkle root and Ed25519 signature under a key valid at "
                 "its time, the chain of checkpoints", status, summary,
                 {"violation_counts": data["violation_counts"], "violations": data["violations"][:50],
                  "objects": data["objects"], "checkpoints": data["checkpoints"], "chains": data["chains"]})


CHAIN_BREAKS = ("gap", "tail_truncated", "unsigned_tail", "checkpoint_chain_broken", "no_archive", "lost_records",
                "unaccounted_offsets")


def _continuity(report: Report, timeline: Timeline, period: Period, first: int | None, as_of: int,
                tolerance_s: float) -> Check:
    # the chains' breaks, and the tree heads' silent intervals that fall in the period: the same findings
    # (logging_gap, stale_head) as auditseal verify --as-of <period end> --head-tolerance <tolerance>
    problems = [v.as_dict() for v in report.violations if v.kind in CHAIN_BREAKS]
    problems += [p.as_dict() for p in timeline.problems if p.kind in ("gap", "checkpoint_chain_broken")]
    logging = report.logging
    silent = [dict(i.as_dict(), start=iso(i.start_micros), end=iso(i.end_micros))
              for i in logging.intervals if i.overlaps(period.start_micros, period.end_micros)]
    chains = sorted(report.last_seq)
    headless = [chain for chain in chains if chain not in logging.newest_head]
    coverage = [{"chain_id": chain, "first_head": iso(logging.first_head[chain]),
                 "newest_head": iso(logging.newest_head[chain])} for chain in chains if chain in logging.newest_head]
    before = first is not None and first > period.end_micros
    evidence = {"silent_intervals": silent, "problems": problems[:50], "heads": coverage,
                "chains_without_heads": headless, "head_tolerance_s": tolerance_s, "as_of": iso(as_of),
                "archive_begins": iso(first), "period_start": iso(period.start_micros),
                "period_end": iso(period.end_micros)}
    if first is None or before:
        status, summary = FAIL, ("the archive holds nothing" if first is None else
                                 f"the period ends before the archive began ({iso(first)}): nothing of it is archived")
    elif problems or silent:
        parts = [f"{len(problems)} gap(s) or break(s) in the chains"] if problems else []
        if silent:
            parts.append(f"{len(silent)} interval(s) without tree heads: " + ", ".join(
                f"{i['chain_id']} {i['start']} to {i['end']} ({i['kind']}, {i['seconds']:g} s)" for i in silent[:5]))
        status, summary = FAIL, "; ".join(parts)
    elif headless:
        status, summary = NOT_RUN, (f"{len(headless)} chain(s) hold no tree head ({', '.join(headless[:5])}): "
                                    "without heartbeats an idle period cannot be told from a stopped pipeline")
    else:
        status = PASS
        summary = (f"every chain runs from seq 0 without a gap, every entry under a signed checkpoint, and tree heads "
                   f"no more than {tolerance_s:g} s apart through {iso(as_of)}")
        begins = [logging.first_head[chain] for chain in chains if logging.first_head[chain] > period.start_micros]
        if begins:
            summary += f"; the first tree head is at {iso(min(begins))}, after the period's start: logging is shown from there"
    return Check("continuity", "Continuity of logging over the period",
                 "verify's checks over the chains (a missing seq range, a lost raw range or an unsigned tail is a "
                 "break) and over the tree heads the sealer signs at least every heartbeat interval, idle or not: "
                 f"two heads more than {tolerance_s:g} s apart (logging_gap), or a newest head older than that "
                 f"before {iso(as_of)} (stale_head), is an interval in which logging was not seen; each that meets "
                 "the period is listed with its times", status, summary, evidence)


def _object_locks(report: Report, bucket: str | None) -> Check:
    how = ("every version of every object and manifest: COMPLIANCE mode until at least its manifest's retain_until and "
           "its compliance profile's period (GetObjectRetention)")
    if bucket is None:
        return Check("object_locks", "Every object's lock against the retention profile", how, NOT_RUN,
                     "a local copy (--dir) carries no locks: run the report with --s3 on the bucket")
    bad = {kind: report.violation_counts.get(kind, 0) for kind in ("not_locked", "retention_too_short")}
    examples = [v.as_dict() for v in report.violations if v.kind in bad][:20]
    status = FAIL if any(bad.values()) else PASS
    return Check("object_locks", "Every object's lock against the retention profile", how, status,
                 f"{report.objects} objects checked; not locked {bad['not_locked']}, retention too short "
                 f"{bad['retention_too_short']}", {"counts": bad, "examples": examples})


def _worm(inputs: EvidenceInputs) -> Check:
    how = ("auditseal s3 check on the live bucket: locked versions cannot be deleted, COMPLIANCE retention cannot be "
           "shortened or downgraded, versioning cannot be suspended, the policy opens nothing (needs the bucket "
           f"admin's keys in {S3_CHECK_KEY_VARIABLE} / {S3_CHECK_SECRET_VARIABLE})")
    title = "WORM conformance of the bucket (SEC 17a-4(f) non-rewriteable storage)"
    if inputs.bucket is None:
        return Check("worm_conformance", title, how, NOT_RUN, "a local copy (--dir) has no bucket to probe")
    from pipeline.archive.objectlock import check_bucket, with_exposure
    from pipeline.config import S3Settings

    env = dict(inputs.env)
    env["AUDITSEAL_BUCKET"] = inputs.bucket
    if env.get(S3_CHECK_KEY_VARIABLE) and env.get(S3_CHECK_SECRET_VARIABLE):
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = env[S3_CHECK_KEY_VARIABLE], env[S3_CHECK_SECRET_VARIABLE]
    try:
        settings = S3Settings.from_env(env)
        client = settings.client()
        result = with_exposure(check_bucket(client, inputs.bucket), client,
                               inputs.profiles.get(inputs.framework.retention_profile))
    except (AuditSealError, OSError) as exc:
        return Check("worm_conformance", title, how, FAIL, f"the check could not run: {exc}")
    return Check("worm_conformance", title, how, PASS if result.passed else FAIL,
                 "bucket enforces WORM" if result.passed else f"fails: {', '.join(result.failed())}",
                 result.as_dict())


def _separation_of_duties(inputs: EvidenceInputs) -> Check:
    how = ("auditseal acl check on the live broker's ACLs, users and listener security (needs the admin role: "
           f"{ADMIN_USER_VARIABLE} / {ADMIN_PASSWORD_VARIABLE}, broker from AUDITSEAL_BOOTSTRAP)")
    title = "Separation of duties on the live broker"
    user, password = inputs.env.get(ADMIN_USER_VARIABLE), inputs.env.get(ADMIN_PASSWORD_VARIABLE)
    if not (user and password and inputs.env.get("AUDITSEAL_BOOTSTRAP")):
        return Check("separation_of_duties", title, how, NOT_RUN,
                     "no admin credentials given: the broker's ACLs were not read")
    from pipeline.cli.acl import acl_check

    lines: list[str] = []
    env = {**inputs.env, "AUDITSEAL_SASL_USERNAME": user, "AUDITSEAL_SASL_PASSWORD": password}
    try:
        code = acl_check(env=env, as_json=True, out=lines.append)
        result = json.loads("\n".join(lines))
    except (AuditSealError, OSError, ValueError) as exc:
        return Check("separation_of_duties", title, how, FAIL, f"the check could not run: {exc}")
    failed = [rule["name"] for rule in result.get("rules", []) if not rule.get("holds")]
    return Check("separation_of_duties", title, how, PASS if code == 0 else FAIL,
                 "every rule holds" if code == 0 else f"rules broken: {', '.join(failed)}", result)


def _retention(manifests: list[Manifest], inputs: EvidenceInputs) -> Check:
    required = inputs.profiles.get(inputs.framework.retention_profile)
    short = []
    for manifest in manifests:
        needed = required.retain_until(manifest.last_timestamp_micros)
        if manifest.retain_until_datetime < needed:
            short.append({"object": manifest.key, "profile": manifest.compliance_profile,
                          "retain_until": manifest.retain_until, "required": needed.strftime("%Y-%m-%dT%H:%M:%SZ")})
    profiles = Counter(m.compliance_profile for m in manifests)
    status = FAIL if short or not manifests else PASS
    return Check("retention", f"Retention for the framework's period ({required.name}: {required.retention})",
                 "each manifest's retain_until (the COMPLIANCE lock asked for) against its newest record plus the "
                 f"framework's profile '{required.name}' of the compliance file", status,
                 f"{len(manifests)} objects, {len(short)} retained shorter than required" if manifests else
                 "no archived object", {"profiles": dict(profiles), "too_short": short[:50]})


def _events(timeline: Timeline, keep: Callable[[Any], bool]) -> list[dict[str, Any]]:
    return [{"time": iso(e.head.occurred_at_micros), "actor": e.head.actor_id, "action": e.head.action,
             "resource": f"{e.head.resource_type}/{e.head.resource_id}", "outcome": e.head.outcome,
             "chain": f"{e.chain_id}:{e.seq}", "status": e.status,
             "reason": (e.event.get("outcome") or {}).get("reason")} for e in timeline.events if keep(e)]


def _access(timeline: Timeline) -> Check:
    rows = _events(timeline, lambda e: e.head.resource_type in LOG_ACCESS_RESOURCES)
    by_actor = Counter((row["actor"], row["outcome"]) for row in rows)
    return Check("access_to_log", "Who accessed the log",
                 "the access events in the period (the broker's decisions on audit topics forwarded by the access "
                 "auditor, and the records of AuditSeal's own reading commands), by principal and outcome", INFO,
                 f"{len(rows)} access events by {len({a for a, _ in by_actor})} principal(s), "
                 f"{sum(c for (_, o), c in by_actor.items() if o == 'DENIED')} denied",
                 {"by_principal": [{"principal": a, "outcome": o, "events": c} for (a, o), c in by_actor.most_common()],
                  "events": rows[:200]})


def _logging_stops(timeline: Timeline) -> Check:
    rows = _events(timeline, lambda e: e.head.action in LOGGING_STOP_ACTIONS)
    failures = [row for row in rows if row["outcome"] == "FAILURE"]
    return Check("logging_stops", "Stops and failures of logging",
                 "the access auditor's trail events in the period: the authorizer logger turned down "
                 "(authorizer_log.level), the log silent (authorizer_log.silent), rotated away unread "
                 "(authorizer_log.gap, metadata_log.gap), and each restoration", INFO,
                 f"{len(failures)} stop(s) or failure(s) recorded, {len(rows) - len(failures)} restoration(s)",
                 {"events": rows[:200]})


def _alerts(timeline: Timeline) -> Check:
    rows = _events(timeline, lambda e: e.head.action == "alert.raised")
    by_rule = Counter(str((e.event.get("attributes") or {}).get("rule", "?")) for e in timeline.events
                      if e.head.action == "alert.raised")
    return Check("alerts", "Alerts raised", "the detector's alert.raised events in the period (rules of "
                 "config/detector.yaml over the access events)", INFO, f"{len(rows)} alert(s)",
                 {"by_rule": dict(by_rule), "events": rows[:200]})


def _review(timeline: Timeline) -> Check:
    rows = _events(timeline, lambda e: e.head.action in REVIEW_ACTIONS)
    failed = [row for row in rows if row["action"] == "archive.verify" and row["outcome"] != "SUCCESS"]
    verifications = [row for row in rows if row["action"] == "archive.verify"]
    status = PASS if verifications and not failed else FAIL
    return Check("review", "Automated review of the log", "the recorded runs of auditseal verify (archive.verify), "
                 "timeline and report in the period, and this report's own full verification", status,
                 f"{len(verifications)} verification run(s) recorded, {len(failed)} failed" if verifications else
                 "no verification run was recorded in the period", {"events": rows[:200]})


def _key_changes(timeline: Timeline) -> Check:
    rows = _events(timeline, lambda e: e.event.get("source_service") == "auditseal-keys"
                   or e.head.action in ("credential.rotate", "user.credential_set", "user.credential_delete"))
    return Check("key_changes", "Key and credential changes", "auditseal keys operations (key.init, key.rotate, "
                 "key.retire, key.revoke, key.export, master_key.init) and SCRAM credential changes in the period",
                 INFO, f"{len(rows)} change(s)", {"events": rows[:200]})


def _clock_skew(timeline: Timeline, max_skew_s: float) -> Check:
    skews: dict[str, list[float]] = defaultdict(list)
    for event in timeline.events:
        if event.source_timestamp_micros is not None:
            skews[str(event.event.get("source_service"))].append(
                abs(event.source_timestamp_micros - event.head.occurred_at_micros) / 1e6)
    rows = []
    for service, values in sorted(skews.items()):
        values.sort()
        rows.append({"service": service, "events": len(values), "median_s": round(values[len(values) // 2], 3),
                     "p99_s": round(values[min(len(values) - 1, int(len(values) * 0.99))], 3),
                     "max_s": round(values[-1], 3)})
    worst = max((row["p99_s"] for row in rows), default=0.0)
    status = NOT_RUN if not rows else PASS if worst <= max_skew_s else FAIL
    return Check("clock_skew", "Clock skew between producers and the broker",
                 f"per service, |broker timestamp of the raw record - occurred_at| over the period's events (sealed "
                 f"with each event); p99 must stay within {max_skew_s:g}s", status,
                 "no event in the period" if not rows else f"worst p99 {worst:g}s ({len(rows)} service(s))", rows)
