"""The WORM conformance check a bucket must pass before AuditSeal trusts it (``auditseal s3 check``).

Semantics are those of Amazon S3 Object Lock in COMPLIANCE mode: a locked object version cannot be
deleted or overwritten by anyone, its retention can be extended but never shortened, its mode cannot
be downgraded to GOVERNANCE, and versioning cannot be suspended on a bucket with Object Lock.

A refusal only proves something if the caller would otherwise have been allowed, so the check runs
control operations first (deleting an *unlocked* version, extending a retention) and reports the
result as inconclusive when the principal lacks those rights: run it with the bucket admin's keys.
Probe objects live under ``_auditseal/conformance/`` and stay locked for ``PROBE_RETENTION``.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from pipeline.archive.retention import ComplianceProfile

# a boto3 S3 client: boto3 ships no type information for its generated clients
S3Client = Any

PROBE_PREFIX = "_auditseal/conformance/"
PROBE_RETENTION = datetime.timedelta(minutes=10)

PROPERTIES = (
    "object_lock_enabled",
    "locked_version_cannot_be_deleted",
    "compliance_retention_cannot_be_shortened",
    "compliance_cannot_become_governance",
    "versioning_cannot_be_suspended",
)


@dataclass(frozen=True)
class PropertyResult:
    """One WORM property: whether it holds, and what was observed."""

    name: str
    holds: bool
    detail: str


@dataclass(frozen=True)
class ConformanceReport:
    """All properties checked on one bucket."""

    bucket: str
    endpoint: str
    results: tuple[PropertyResult, ...]

    @property
    def passed(self) -> bool:
        """True only if every property holds."""
        return all(r.holds for r in self.results)

    def failed(self) -> list[str]:
        """Names of the properties that do not hold."""
        return [r.name for r in self.results if not r.holds]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"bucket": self.bucket, "endpoint": self.endpoint, "passed": self.passed,
                "results": [asdict(r) for r in self.results]}


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        code: str = exc.response.get("Error", {}).get("Code", "ClientError")
        return code
    return type(exc).__name__


def _retention(s3: S3Client, bucket: str, key: str, version: str) -> tuple[str | None, datetime.datetime | None]:
    retention = s3.get_object_retention(Bucket=bucket, Key=key, VersionId=version).get("Retention", {})
    return retention.get("Mode"), retention.get("RetainUntilDate")


def check_bucket(s3: S3Client, bucket: str) -> ConformanceReport:
    """Run every WORM property against ``bucket`` with the boto3 client ``s3``; never raises for a
    misbehaving server, only reports (transport errors such as a wrong endpoint still raise)."""
    results = [_object_lock_enabled(s3, bucket)]
    if not results[0].holds:
        results += [PropertyResult(name, False, "not tested: the bucket has no Object Lock") for name in PROPERTIES[1:]]
        return ConformanceReport(bucket, s3.meta.endpoint_url, tuple(results))
    run = uuid.uuid4().hex
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    until = now + PROBE_RETENTION
    key = f"{PROBE_PREFIX}{run}/locked"
    body = b"auditseal object lock probe " + run.encode()
    try:
        put = s3.put_object(Bucket=bucket, Key=key, Body=body, ObjectLockMode="COMPLIANCE",
                            ObjectLockRetainUntilDate=until)
        version = put.get("VersionId")
        problem = None if version else "the server returned no VersionId for a locked object"
    except ClientError as exc:
        problem = (f"inconclusive: this principal may not write a locked probe object ({_error_code(exc)}); "
                   "run the check with the bucket admin's keys")
    except BotoCoreError as exc:
        # a server refusing a PUT may close the connection before reading the body: the client then sees a
        # broken TLS stream, not the 403. Either way nothing was proved, so nothing passes.
        problem = f"inconclusive: the locked probe object could not be written ({type(exc).__name__}: {exc})"
    if problem:
        results += [PropertyResult(name, False, problem) for name in PROPERTIES[1:]]
        return ConformanceReport(bucket, s3.meta.endpoint_url, tuple(results))
    probes: tuple[tuple[str, Callable[[], PropertyResult]], ...] = (
        (PROPERTIES[1], lambda: _delete_refused(s3, bucket, key, version, body, run)),
        (PROPERTIES[2], lambda: _shorten_refused(s3, bucket, key, version, until)),
        (PROPERTIES[3], lambda: _governance_refused(s3, bucket, key, version)),
        (PROPERTIES[4], lambda: _suspend_refused(s3, bucket)),
    )
    for name, probe in probes:
        try:
            results.append(probe())
        except ClientError as exc:
            # a server that errors where S3 answers cannot be trusted with the property
            results.append(PropertyResult(name, False, f"unexpected server error: {exc}"))
    return ConformanceReport(bucket, s3.meta.endpoint_url, tuple(results))


def _object_lock_enabled(s3: S3Client, bucket: str) -> PropertyResult:
    name = PROPERTIES[0]
    try:
        config = s3.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration", {})
        versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    except ClientError as exc:
        return PropertyResult(name, False, f"cannot read the Object Lock configuration: {_error_code(exc)}")
    enabled = config.get("ObjectLockEnabled") == "Enabled"
    return PropertyResult(
        name, enabled and versioning == "Enabled",
        f"ObjectLockEnabled={config.get('ObjectLockEnabled')!r}, versioning={versioning!r}",
    )


def _delete_refused(s3: S3Client, bucket: str, key: str, version: str, body: bytes, run: str) -> PropertyResult:
    name = PROPERTIES[1]
    control_key = f"{PROBE_PREFIX}{run}/unlocked"
    try:
        control = s3.put_object(Bucket=bucket, Key=control_key, Body=b"unlocked control")
        s3.delete_object(Bucket=bucket, Key=control_key, VersionId=control["VersionId"])
    except (ClientError, KeyError) as exc:
        return PropertyResult(name, False, "inconclusive: this principal may not delete even an unlocked "
                              f"version ({_error_code(exc)}); run the check with the bucket admin's keys")
    refusals = []
    for bypass in (False, True):
        try:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=bypass)
        except ClientError as exc:
            refusals.append(_error_code(exc))
        else:
            return PropertyResult(name, False, f"DELETE of locked version {version} succeeded"
                                  + (" with x-amz-bypass-governance-retention" if bypass else ""))
    try:
        still = s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
    except ClientError as exc:
        return PropertyResult(name, False, f"locked version unreadable after refused deletes: {_error_code(exc)}")
    if still != body:
        return PropertyResult(name, False, "locked version's bytes changed after refused deletes")
    return PropertyResult(name, True, f"refused ({', '.join(refusals)}); an unlocked version could be deleted")


def _shorten_refused(s3: S3Client, bucket: str, key: str, version: str, until: datetime.datetime) -> PropertyResult:
    name = PROPERTIES[2]
    try:
        s3.put_object_retention(Bucket=bucket, Key=key, VersionId=version,
                                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until + datetime.timedelta(seconds=60)})
    except ClientError as exc:
        return PropertyResult(name, False, f"inconclusive: extending the retention was refused too ({_error_code(exc)})")
    extended = until + datetime.timedelta(seconds=60)
    code = None
    try:
        s3.put_object_retention(Bucket=bucket, Key=key, VersionId=version,
                                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - datetime.timedelta(seconds=60)})
    except ClientError as exc:
        code = _error_code(exc)
    try:
        mode, retain_until = _retention(s3, bucket, key, version)
    except ClientError as exc:
        if code is None:
            return PropertyResult(name, False, "the server accepted a shorter COMPLIANCE retention "
                                  f"(and then failed to report the retention: {_error_code(exc)})")
        raise
    if mode != "COMPLIANCE" or retain_until is None or retain_until < extended:
        return PropertyResult(name, False, f"retention became {mode} until {retain_until}, earlier than {extended}")
    if code is None:
        return PropertyResult(name, False, "the server accepted a shorter COMPLIANCE retention (and ignored it)")
    return PropertyResult(name, True, f"refused ({code}); extending was allowed")


def _governance_refused(s3: S3Client, bucket: str, key: str, version: str) -> PropertyResult:
    name = PROPERTIES[3]
    _, before = _retention(s3, bucket, key, version)
    if before is None:
        return PropertyResult(name, False, "the locked probe has no retain-until date")
    code = None
    try:
        s3.put_object_retention(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True,
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": before + datetime.timedelta(seconds=60)})
    except ClientError as exc:
        code = _error_code(exc)
    mode, _ = _retention(s3, bucket, key, version)
    if mode != "COMPLIANCE":
        return PropertyResult(name, False, f"mode is now {mode}")
    if code is None:
        return PropertyResult(name, False, "the server accepted a change to GOVERNANCE (and ignored it)")
    return PropertyResult(name, True, f"refused ({code})")


def _suspend_refused(s3: S3Client, bucket: str) -> PropertyResult:
    name = PROPERTIES[4]
    code = None
    try:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    except ClientError as exc:
        code = _error_code(exc)
    status = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    if status != "Enabled":
        repair = "versioning re-enabled"
        try:  # put the bucket back the way we found it before reporting
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        except (ClientError, BotoCoreError) as exc:
            repair = f"re-enabling versioning failed too: {_error_code(exc)}"
        return PropertyResult(name, False, f"versioning became {status!r} ({repair})")
    if code is None:
        return PropertyResult(name, False, "the server accepted suspending versioning (and ignored it)")
    return PropertyResult(name, True, f"refused ({code})")


WRITER_PROPERTIES = (
    PROPERTIES[0],
    "locked_object_reads_back_compliance",
    PROPERTIES[2],
    PROPERTIES[3],
)


def check_bucket_as_writer(s3: S3Client, bucket: str) -> ConformanceReport:
    """The WORM properties a principal that may write locked objects but delete nothing (the sink) can
    prove with its own keys: Object Lock and versioning enabled, a locked probe reads back in COMPLIANCE
    mode with the date written, and its retention can be extended (the control) but neither shortened
    nor switched to GOVERNANCE. Refused deletes and versioning suspension prove something only for a
    principal allowed to try them: :func:`check_bucket` with the bucket admin's keys covers those."""
    results = [_object_lock_enabled(s3, bucket)]
    if not results[0].holds:
        results += [PropertyResult(name, False, "not tested: the bucket has no Object Lock")
                    for name in WRITER_PROPERTIES[1:]]
        return ConformanceReport(bucket, s3.meta.endpoint_url, tuple(results))
    run = uuid.uuid4().hex
    until = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + PROBE_RETENTION
    key = f"{PROBE_PREFIX}{run}/writer"
    try:
        version = s3.put_object(Bucket=bucket, Key=key, Body=b"auditseal writer probe " + run.encode(),
                                ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until).get("VersionId")
        mode, retain_until = _retention(s3, bucket, key, version) if version else (None, None)
    except (ClientError, BotoCoreError) as exc:
        # a server refusing the upload may also just close the connection mid-body (seen as an SSL EOF)
        results += [PropertyResult(name, False, f"cannot write and read back a locked probe: {_error_code(exc)}")
                    for name in WRITER_PROPERTIES[1:]]
        return ConformanceReport(bucket, s3.meta.endpoint_url, tuple(results))
    if not version or mode != "COMPLIANCE" or retain_until is None or retain_until < until:
        results.append(PropertyResult(WRITER_PROPERTIES[1], False, f"probe version {version!r} reads back as "
                                      f"{mode} until {retain_until}, written COMPLIANCE until {until}"))
        results += [PropertyResult(name, False, "not tested: the probe is not locked") for name in WRITER_PROPERTIES[2:]]
        return ConformanceReport(bucket, s3.meta.endpoint_url, tuple(results))
    results.append(PropertyResult(WRITER_PROPERTIES[1], True, f"COMPLIANCE until {retain_until.isoformat()}"))
    writer_probes: tuple[tuple[str, Callable[[], PropertyResult]], ...] = (
        (WRITER_PROPERTIES[2], lambda: _shorten_refused(s3, bucket, key, version, until)),
        (WRITER_PROPERTIES[3], lambda: _governance_refused(s3, bucket, key, version)))
    for name, probe in writer_probes:
        try:
            results.append(probe())
        except ClientError as exc:
            results.append(PropertyResult(name, False, f"unexpected server error: {exc}"))
    return ConformanceReport(bucket, s3.meta.endpoint_url, tuple(results))


EXPOSURE_PROPERTIES = ("bucket_policy_opens_nothing", "default_retention_matches_profile")


def check_exposure(s3: S3Client, bucket: str, profile: ComplianceProfile) -> tuple[PropertyResult, PropertyResult]:
    """What the bucket's configuration grants beyond its locks (:mod:`pipeline.archive.bucket_policy`): the
    policy opens nothing to anonymous/all principals and grants nobody a delete or lock-changing right, and
    a default retention rule, if any, is COMPLIANCE for ``profile``'s period (a ComplianceProfile)."""
    from pipeline.archive.bucket_policy import default_retention_breaches, describe, policy_breaches

    try:
        policy = s3.get_bucket_policy(Bucket=bucket).get("Policy")
        breaches = policy_breaches(policy)
        policy_result = PropertyResult(EXPOSURE_PROPERTIES[0], not breaches, describe(breaches) or (
            "no bucket policy" if policy is None else "grants no anonymous access, no delete, no lock change"))
    except ClientError as exc:
        if _error_code(exc) == "NoSuchBucketPolicy":
            policy_result = PropertyResult(EXPOSURE_PROPERTIES[0], True, "no bucket policy")
        else:
            policy_result = PropertyResult(EXPOSURE_PROPERTIES[0], False,
                                           f"inconclusive: cannot read the bucket policy ({_error_code(exc)})")
    try:
        lock = s3.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration", {})
        breaches = default_retention_breaches(lock, profile=profile.name, days=profile.days or None,
                                              years=profile.years or None)
        default = (lock.get("Rule") or {}).get("DefaultRetention")
        retention_result = PropertyResult(EXPOSURE_PROPERTIES[1], not breaches, describe(breaches) or (
            f"default retention {default}" if default else
            f"no default retention; each object is locked for the {profile.name} profile ({profile.retention})"))
    except ClientError as exc:
        retention_result = PropertyResult(EXPOSURE_PROPERTIES[1], False,
                                          f"cannot read the Object Lock configuration: {_error_code(exc)}")
    return policy_result, retention_result


def with_exposure(report: ConformanceReport, s3: S3Client, profile: ComplianceProfile) -> ConformanceReport:
    """``report`` with the results of :func:`check_exposure` added."""
    return ConformanceReport(report.bucket, report.endpoint,
                             report.results + check_exposure(s3, report.bucket, profile))
