"""Judging bucket policies and default Object Lock rules (pure)."""

from __future__ import annotations

import json

import pytest

from pipeline.archive.bucket_policy import default_retention_breaches, policy_breaches
from pipeline.dev.s3server import bucket_policy


def _policy(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(principal, action, sid="S") -> dict:
    return {"Sid": sid, "Effect": "Allow", "Principal": principal, "Action": action, "Resource": "*"}


def test_the_stacks_policy_and_no_policy_open_nothing():
    assert policy_breaches(bucket_policy("audit-archive", ["verifier-1"], ["sink-1"])) == []
    assert policy_breaches(None) == []


@pytest.mark.parametrize("statement, named", [
    (_allow("*", "s3:GetObject"), "anonymous/all"),
    (_allow({"AWS": "*"}, "s3:GetObject"), "anonymous/all"),
    (_allow({"AWS": ["sink-1"]}, "s3:*"), "s3:DeleteObjectVersion"),
    (_allow({"AWS": ["sink-1"]}, ["s3:GetObject", "s3:Delete*"]), "s3:DeleteObject"),
    (_allow({"AWS": ["admin-1"]}, "s3:PutBucketObjectLockConfiguration"), "s3:PutBucketObjectLockConfiguration"),
    (_allow({"AWS": ["admin-1"]}, "S3:put*"), "s3:PutBucketVersioning"),
    (_allow({"AWS": ["sink-1"]}, "*"), "s3:BypassGovernanceRetention"),
    ({"Sid": "N", "Effect": "Allow", "Principal": "*", "NotAction": "s3:GetObject", "Resource": "*"}, "NotAction"),
])
def test_each_opening_is_named(statement, named):
    breaches = policy_breaches(_policy(statement))
    assert breaches and any(named in b for b in breaches), breaches


def test_deny_statements_and_unparsable_policies():
    assert policy_breaches(_policy({"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*"})) == []
    assert "not JSON" in policy_breaches("{nope")[0]


def test_default_retention_must_be_the_profiles_compliance_period():
    assert default_retention_breaches({"ObjectLockEnabled": "Enabled"}, profile="soc2", days=None, years=1) == []
    good = {"Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 1}}}
    assert default_retention_breaches(good, profile="soc2", days=None, years=1) == []
    for rule in ({"Mode": "GOVERNANCE", "Years": 1}, {"Mode": "COMPLIANCE", "Days": 1}):
        breaches = default_retention_breaches({"Rule": {"DefaultRetention": rule}}, profile="soc2", days=None, years=1)
        assert breaches and "soc2 profile needs" in breaches[0]
