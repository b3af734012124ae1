"""`auditseal s3 check` passes only on a server that really enforces Object Lock COMPLIANCE."""

from __future__ import annotations

import json

import certifi
import pytest

from pipeline.archive.objectlock import EXPOSURE_PROPERTIES, PROPERTIES, check_bucket
from pipeline.cli.main import main
from pipeline.config import S3Settings


@pytest.mark.stack
def test_local_server_passes_every_property(role_env):
    settings = S3Settings.from_env(role_env("admin"))
    report = check_bucket(settings.client(), settings.bucket)
    assert [r.name for r in report.results] == list(PROPERTIES)
    assert report.passed, report.as_dict()


@pytest.mark.stack
def test_cli_exit_zero_and_json_on_local_server(role_env, monkeypatch, capsys):
    for name, value in role_env("admin").items():
        monkeypatch.setenv(name, value)
    assert main(["s3", "check", "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["passed"] is True and len(output["results"]) == len(PROPERTIES + EXPOSURE_PROPERTIES)


@pytest.mark.stack
def test_reader_role_is_inconclusive_not_a_pass(role_env):
    # the verifier may not delete anything, so a refused delete proves nothing about the lock
    settings = S3Settings.from_env(role_env("verifier"))
    report = check_bucket(settings.client(), settings.bucket)
    assert not report.passed
    assert report.failed() == list(PROPERTIES[1:])
    assert all("inconclusive" in r.detail for r in report.results[1:])


def test_moto_fails_because_compliance_can_be_shortened(moto_bucket, monkeypatch, capsys):
    report = check_bucket(moto_bucket.client(), moto_bucket.bucket)
    assert not report.passed
    shortened = next(r for r in report.results if r.name == "compliance_retention_cannot_be_shortened")
    assert not shortened.holds and "accepted a shorter COMPLIANCE retention" in shortened.detail
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_bucket.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CA_BUNDLE", certifi.where())
    monkeypatch.setenv("AUDITSEAL_BUCKET", moto_bucket.bucket)
    assert main(["s3", "check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  compliance_retention_cannot_be_shortened" in out
    assert "bucket FAILS" in out


def test_bucket_without_object_lock_fails_every_property(moto_bucket):
    s3 = moto_bucket.client()
    s3.create_bucket(Bucket="plain")
    report = check_bucket(s3, "plain")
    assert report.failed() == list(PROPERTIES)
