"""The bucket adapter's decisions, on a scripted S3 client: what is retried, what stops the sink."""

from __future__ import annotations

import base64
import datetime
import hashlib
import threading
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from connectors.s3sink.bucket import (
    ArchiveBucket,
    ArchiveWriteError,
    LockNotAppliedError,
    RetryPolicy,
    WriteCancelled,
    is_transient,
)
from pipeline.archive.container import build_object
from pipeline.archive.retention import ComplianceProfile


def _error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


class ScriptedS3:
    """Answers put_object/head_object from a script of exceptions, then like a good server."""

    def __init__(self, failures=(), lock_mode="COMPLIANCE", until=None):
        self.failures = list(failures)
        self.lock_mode, self.until = lock_mode, until
        self.objects: dict[str, bytes] = {}
        self.calls: list[str] = []

    def put_object(self, **kwargs):
        self.calls.append("put")
        if self.failures:
            raise self.failures.pop(0)
        assert kwargs["ObjectLockMode"] == "COMPLIANCE"
        assert kwargs["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(kwargs["Body"]).digest()).decode()
        self.objects[kwargs["Key"]] = kwargs["Body"]
        return {"VersionId": f"v{len(self.calls)}"}

    def head_object(self, **kwargs):
        self.calls.append("head")
        body = self.objects[kwargs["Key"]]
        return {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate": self.until, "ContentLength": len(body),
                "ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode()}


def _archive(timestamp_ms: int | None = None):
    timestamp_ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return build_object("t", 0, [(0, timestamp_ms, b"\xc3\x01" + bytes(8))], profile=ComplianceProfile("p", days=1))


def test_transient_failures_are_retried_then_object_and_manifest_are_verified():
    retried = []
    archive = _archive()
    s3 = ScriptedS3([EndpointConnectionError(endpoint_url="https://s3"), _error("SlowDown", 503)],
                    until=archive.retain_until)
    bucket = ArchiveBucket(s3, "b", RetryPolicy(initial=0.001, maximum=0.002), on_retry=lambda op, exc: retried.append(op))
    assert bucket.write(archive) == ("v3", "v5")
    assert retried == ["PutObject", "PutObject"]
    assert s3.calls == ["put", "put", "put", "head", "put", "head"]
    assert s3.objects == {archive.key: archive.body, archive.manifest_key: archive.manifest_bytes}


@pytest.mark.parametrize(("mode", "shift", "message"), [
    ("GOVERNANCE", 0, "lock mode 'GOVERNANCE'"),
    (None, 0, "lock mode None"),
    ("COMPLIANCE", -1, "retain-until"),
])
def test_a_wrong_lock_read_back_stops_before_any_commit(mode, shift, message):
    archive = _archive()
    s3 = ScriptedS3(lock_mode=mode, until=archive.retain_until + datetime.timedelta(seconds=shift))
    with pytest.raises(LockNotAppliedError, match=message):
        ArchiveBucket(s3, "b").write(archive)
    assert s3.calls == ["put", "head"], "the manifest is not written for an object that is not locked"


def test_records_older_than_their_retention_are_refused_before_any_write():
    s3 = ScriptedS3()
    with pytest.raises(ArchiveWriteError, match="older than the compliance profile's retention"):
        ArchiveBucket(s3, "b").write(_archive(timestamp_ms=1_700_000_000_000))  # 2023 + 1 day
    assert s3.calls == []


def test_access_denied_is_not_retried():
    with pytest.raises(ArchiveWriteError, match="AccessDenied"):
        ArchiveBucket(ScriptedS3([_error("AccessDenied", 403)]), "b").write(_archive())


def test_a_cancelled_batch_stops_retrying():
    cancelled = threading.Event()
    cancelled.set()
    s3 = ScriptedS3([EndpointConnectionError(endpoint_url="https://s3")] * 5)
    with pytest.raises(WriteCancelled):
        ArchiveBucket(s3, "b", RetryPolicy(initial=0.001)).write(_archive(), cancelled)
    assert s3.calls == ["put"]


def test_which_failures_are_transient():
    assert is_transient(_error("InternalError", 500)) and is_transient(_error("Whatever", 502))
    assert is_transient(EndpointConnectionError(endpoint_url="https://s3"))
    assert not is_transient(_error("AccessDenied", 403)) and not is_transient(_error("NoSuchBucket", 404))
    assert RetryPolicy().delay(1) == 0.2 and RetryPolicy().delay(10) == 5.0
