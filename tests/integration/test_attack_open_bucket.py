"""Attack 7: the S3 admin opens the bucket (a policy granting ``s3:*`` to everyone) or weakens its default
Object Lock rule. ``s3 check`` fails naming the property; the sink's re-check records a ``bucket.check``
FAILURE (sealed through the access auditor) that the detector alerts on, and stops the sink."""

from __future__ import annotations

import json
import threading

import pytest

from connectors.s3sink.command import BucketRefusedError, checked_bucket, watch_bucket
from pipeline.access.auditor import AccessAuditor
from pipeline.archive.objectlock import EXPOSURE_PROPERTIES, check_bucket, with_exposure
from pipeline.archive.retention import load_profiles
from pipeline.config import KafkaSettings, S3Settings
from pipeline.wire.topics import AUDIT_TOPICS
from tests.support.access import RecordingProducer, detector_alerts, read_back

pytestmark = pytest.mark.stack

OPEN_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Sid": "Everyone", "Effect": "Allow", "Principal": "*", "Action": "s3:*",
     "Resource": ["arn:aws:s3:::audit-archive", "arn:aws:s3:::audit-archive/*"]}]}
WEAK_DEFAULT = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}


def _failed(admin: S3Settings, profile) -> dict[str, str]:
    client = admin.client()
    report = with_exposure(check_bucket(client, admin.bucket), client, profile)
    return {r.name: r.detail for r in report.results if not r.holds}


def test_opening_the_bucket_fails_the_check_and_the_sink_records_and_stops(stack, role_env, tmp_path, monkeypatch):
    spool = tmp_path / "records.jsonl"
    monkeypatch.setenv("AUDITSEAL_ACCESS_SPOOL", str(spool))
    monkeypatch.setenv("AUDITSEAL_SASL_USERNAME", "sink")  # as in the sink's process: its records name it
    profile = load_profiles().get(None)
    admin = S3Settings.from_env(role_env("admin"))
    sink = S3Settings.from_env(role_env("sink"))
    s3 = admin.client()
    assert _failed(admin, profile) == {}
    checked_bucket(sink, profile)  # the untouched bucket passes the sink's own check
    original = s3.get_bucket_policy(Bucket=admin.bucket)["Policy"]
    try:
        s3.put_bucket_policy(Bucket=admin.bucket, Policy=json.dumps(OPEN_POLICY))
        failed = _failed(admin, profile)
        assert set(failed) == {EXPOSURE_PROPERTIES[0]}
        assert "anonymous/all" in failed[EXPOSURE_PROPERTIES[0]] and "s3:DeleteObjectVersion" in \
            failed[EXPOSURE_PROPERTIES[0]]
        # the running sink's periodic re-check catches it and stops
        stop, failures = threading.Event(), []
        watch_bucket(sink, profile, stop, 0.2, failures).join(timeout=60)
        assert stop.is_set() and isinstance(failures[0], BucketRefusedError)
        s3.put_bucket_policy(Bucket=admin.bucket, Policy=original)

        s3.put_object_lock_configuration(Bucket=admin.bucket, ObjectLockConfiguration=WEAK_DEFAULT)
        failed = _failed(admin, profile)
        # (the delete probe's unlocked control object is now locked by the default too: inconclusive, a failure)
        assert EXPOSURE_PROPERTIES[1] in failed and "GOVERNANCE" in failed[EXPOSURE_PROPERTIES[1]]
        assert EXPOSURE_PROPERTIES[0] not in failed
        with pytest.raises(BucketRefusedError, match="default_retention_matches_profile"):
            checked_bucket(sink, profile)
    finally:
        s3.put_bucket_policy(Bucket=admin.bucket, Policy=original)
        s3.put_object_lock_configuration(Bucket=admin.bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    assert _failed(admin, profile) == {}

    with RecordingProducer(KafkaSettings.from_env(role_env("access-auditor"))) as producer:
        AccessAuditor(producer, authorizer_log=tmp_path / "no-authorizer.log", spool=spool,
                      state_file=tmp_path / "position.json", own_principal="User:access-auditor",
                      audit_topics=AUDIT_TOPICS).run(once=True)
        events = read_back(role_env("sealer"), producer.results)
    checks = [(e["outcome"]["status"], e["actor"]["id"]) for e in events if e["action"] == "bucket.check"]
    assert checks[0] == ("SUCCESS", "User:sink") and checks.count(("FAILURE", "User:sink")) == 2
    alerts = [a for a in detector_alerts(events) if a.rule == "verification_failure"]
    assert len(alerts) == 2 and all(a.severity == "CRITICAL" for a in alerts)
    assert any("bucket_policy_opens_nothing" in a.summary for a in alerts)
