"""The archive bucket as the sink sees it: locked writes that are read back, retried through outages.

Every write is ``PutObject`` with ``x-amz-object-lock-mode: COMPLIANCE``, the retain-until date
and the body's SHA-256 (``x-amz-checksum-sha256``, so the server refuses bytes damaged on the
way), then a ``HeadObject`` of exactly the version written: mode COMPLIANCE, retain-until no
earlier than asked, same length and checksum, or :class:`LockNotAppliedError`, which stops the
sink before any offset is committed. Transient failures (server unreachable, 5xx, throttling)
are retried with capped exponential backoff until they succeed or the batch is given up.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

from pipeline.archive.container import ArchiveObject
from pipeline.archive.layout import parse_key, partition_prefix
from pipeline.errors import AuditSealError

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling",
                              "ThrottlingException", "RequestTimeTooSkewed", "OperationAborted"})


class ArchiveWriteError(AuditSealError):
    """The bucket refused a write for a reason retrying cannot fix (access denied, no versioning, ...)."""


class LockNotAppliedError(AuditSealError):
    """An object read back without the COMPLIANCE lock, retention, length or checksum it was written with."""


class WriteCancelled(Exception):
    """The batch was given up while waiting to retry (its partition was revoked or the sink is stopping)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff between attempts: ``initial``, doubling, at most ``maximum`` seconds."""

    initial: float = 0.2
    maximum: float = 5.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return min(self.maximum, self.initial * 2 ** (attempt - 1))


def is_transient(exc: Exception) -> bool:
    """True for failures worth retrying: no connection, timeouts, 5xx and throttling answers."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.get("Code") in _TRANSIENT_CODES or status >= 500
    return isinstance(exc, BotoCoreError) and not isinstance(exc, (NoCredentialsError, ParamValidationError))


def _checksum(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


class ArchiveBucket:
    """Locked, verified writes of archive objects to one bucket."""

    def __init__(self, s3: Any, bucket: str, retry: RetryPolicy = RetryPolicy(),
                 on_retry: Callable[[str, Exception], None] = lambda operation, exc: None) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.retry = retry
        self.on_retry = on_retry

    def _call(self, operation: str, what: str, call: Callable[[], T], cancelled: threading.Event | None) -> T:
        attempt = 0
        while True:
            try:
                return call()
            except (ClientError, BotoCoreError) as exc:
                if not is_transient(exc):
                    raise ArchiveWriteError(f"{operation} {what} in s3://{self.bucket}: {exc}") from exc
                attempt += 1
                delay = self.retry.delay(attempt)
                self.on_retry(operation, exc)
                log.warning("%s %s failed (%s); retry %d in %.1f s", operation, what, exc, attempt, delay)
                if cancelled is not None:
                    if cancelled.wait(delay):
                        raise WriteCancelled(f"{operation} {what}: given up") from exc
                else:
                    threading.Event().wait(delay)

    def write(self, archive: ArchiveObject, cancelled: threading.Event | None = None) -> tuple[str, str]:
        """Write the object, then its manifest, each locked and read back; their version ids."""
        if archive.retain_until <= datetime.datetime.now(datetime.UTC):
            raise ArchiveWriteError(
                f"{archive.key}: its newest record is older than the compliance profile's retention (retain-until "
                f"{archive.retain_until.isoformat()} has passed), so there is nothing left to lock; archive these "
                "records under a longer profile")
        versions = []
        for key, body in ((archive.key, archive.body), (archive.manifest_key, archive.manifest_bytes)):
            checksum = _checksum(body)  # once per body: it is sent with the PUT and compared on read-back
            version = self._put_locked(key, body, checksum, archive.retain_until, cancelled)
            self._verify(key, version, len(body), checksum, archive.retain_until, cancelled)
            versions.append(version)
        return versions[0], versions[1]

    def _put_locked(self, key: str, body: bytes, checksum: str, retain_until: datetime.datetime,
                    cancelled: threading.Event | None) -> str:
        response = self._call("PutObject", key, lambda: self.s3.put_object(
            Bucket=self.bucket, Key=key, Body=body, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=retain_until,
            ChecksumSHA256=checksum), cancelled)
        version = response.get("VersionId")
        if not version:
            raise ArchiveWriteError(f"PutObject {key}: the server returned no VersionId; the bucket must have "
                                    "versioning and Object Lock enabled")
        return version

    def _verify(self, key: str, version: str, size: int, checksum: str, retain_until: datetime.datetime,
                cancelled: threading.Event | None) -> None:
        head = self._call("HeadObject", key, lambda: self.s3.head_object(
            Bucket=self.bucket, Key=key, VersionId=version, ChecksumMode="ENABLED"), cancelled)
        mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
        problems = []
        if mode != "COMPLIANCE":
            problems.append(f"lock mode {mode!r}, expected 'COMPLIANCE'")
        if until is None or until < retain_until:
            problems.append(f"retain-until {until}, expected no earlier than {retain_until.isoformat()}")
        if head.get("ContentLength") != size:
            problems.append(f"{head.get('ContentLength')} bytes, {size} were written")
        stored = head.get("ChecksumSHA256")
        if stored is not None and stored != checksum:
            problems.append(f"SHA-256 {stored}, {checksum} was written")
        if problems:
            raise LockNotAppliedError(f"s3://{self.bucket}/{key} version {version} read back with "
                                      f"{'; '.join(problems)}: no offset is committed")

    def existing_ranges(self, topic: str, partition: int, prefix: str, from_offset: int,
                        cancelled: threading.Event | None = None) -> list[tuple[int, int]]:
        """The (first, last) offsets of objects of one partition starting at or after ``from_offset``
        (written but not committed before a crash or rebalance), sorted."""
        folder = partition_prefix(topic, partition, prefix)
        ranges: set[tuple[int, int]] = set()
        token = None
        while True:
            arguments = {"Bucket": self.bucket, "Prefix": folder, "StartAfter": f"{folder}{from_offset:020d}"}
            if token:
                arguments["ContinuationToken"] = token
            page = self._call("ListObjectsV2", folder, lambda arguments=arguments: self.s3.list_objects_v2(**arguments), cancelled)
            for item in page.get("Contents", []):
                key = parse_key(item["Key"])
                if key is not None and key.prefix == prefix and key.first_offset >= from_offset:
                    ranges.add((key.first_offset, key.last_offset))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return sorted(ranges)
