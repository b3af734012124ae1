"""Incremental and parallel verification of an archive the real pipeline made (producer -> sealer -> sink -> bucket).

A full ``verify --s3 --state-out`` of what was archived first; the pipeline then runs on (the sealer resumes
its chains, the sink continues its group) and ``verify --since-state`` reads only the new objects, proves the
new tree heads extend the verified ones and finds the archive INTACT. The attacks on what the state covers:
an object rewritten in the bucket (a new version with other bytes), an object hidden by a delete marker, and,
in a local copy, objects deleted outright; each is reported at its key and the run is not INTACT.
``--jobs 2`` over the bucket gives the reports one job gives.
"""

from __future__ import annotations

import json
import secrets
import signal

import pytest

from pipeline.archive.layout import manifest_key
from pipeline.cli.main import main
from pipeline.config import S3Settings
from pipeline.producer.synthetic import synthetic_events
from pipeline.verifier.incremental import COVERED_CHANGED, COVERED_MISSING
from tests.support.archive import wait_for_archive
from tests.support.sealing import create_topics, delete_topics, seal_events, start_sink

pytestmark = pytest.mark.stack


@pytest.fixture(autouse=True)
def access_spool(monkeypatch, tmp_path):
    """Each verify run's access record goes to the test's own spool: it is not under test here."""
    monkeypatch.setenv("AUDITSEAL_ACCESS_SPOOL", str(tmp_path / "access.jsonl"))


def _run_pipeline(stack, topics, prefix, work, events: int, seed: int, group: str) -> None:
    # emit, seal (a sealer run resumes the chains), archive (the sink continues its group), all stopped after
    sealed = seal_events(stack, topics, synthetic_events(events, seed=seed), work / "sealer.log")
    sink = start_sink(stack, topics, "--prefix", prefix, "--compliance-file", str(work / "compliance.yaml"),
                      "--max-records", "90", "--max-age-ms", "300", "--metrics-port", "0", group=group,
                      log=work / "sink.log")
    try:
        wait_for_archive(stack, topics.sealed, {p: [o for o, _, _ in r] for p, r in sealed.items()}, prefix)
    finally:
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(60) == 0, (work / "sink.log").read_text()


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    listed = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    return sorted({v["Key"] for v in listed.get("Versions", []) if not v["Key"].endswith(".manifest.json")})


@pytest.fixture(scope="module")
def grown(stack, tmp_path_factory):
    """(topics, prefix, work dir, state file, objects of the first run, objects added since): 300 events
    archived and verified with --state-out, then 200 more archived."""
    work = tmp_path_factory.mktemp("incremental")
    (work / "compliance.yaml").write_text("version: 1\ndefault: test\nprofiles:\n  test: {retention: 1d, why: tests}\n")
    topics = create_topics(stack, partitions=2)
    prefix = f"incremental-{secrets.token_hex(4)}/"
    group = f"auditseal-sink-test-{secrets.token_hex(4)}"
    settings = S3Settings.from_env(stack.env("verifier"))
    _run_pipeline(stack, topics, prefix, work, 300, 11, group)
    first = _keys(settings.client(), settings.bucket, prefix)
    state = work / "state.json"
    env = stack.env("verifier")
    code = _verify(env, stack, f"s3://{settings.bucket}/{prefix}", "--state-out", str(state),
                   "--compliance-file", str(work / "compliance.yaml"))
    assert code == 0 and state.exists()
    _run_pipeline(stack, topics, prefix, work, 200, 12, group)
    added = sorted(set(_keys(settings.client(), settings.bucket, prefix)) - set(first))
    assert added, "the second run archived nothing"
    yield topics, prefix, work, state, first, added
    delete_topics(stack, topics)


def _verify(env, stack, uri, *args) -> int:
    import os

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return main(["verify", "--keyring", str(stack.keyring_file), "--head-tolerance", "3600", "--s3", uri, *args])
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _report(capsys, env, stack, uri, *args) -> tuple[int, dict]:
    capsys.readouterr()
    code = _verify(env, stack, uri, "--json", *args)
    return code, json.loads(capsys.readouterr().out)


def test_the_increment_reads_only_the_new_objects_and_extends_the_verified_heads(stack, grown, capsys):
    _, prefix, work, state, first, added = grown
    settings = S3Settings.from_env(stack.env("verifier"))
    uri = f"s3://{settings.bucket}/{prefix}"
    code, report = _report(capsys, stack.env("verifier"), stack, uri, "--since-state", str(state),
                           "--compliance-file", str(work / "compliance.yaml"))
    assert code == 0 and report["intact"], report["violations"]
    assert report["objects"]["checked"] == len(added)
    assert report["incremental"]["objects_covered"] == len(first)
    proofs = report["incremental"]["consistency"]
    assert proofs and all(": consistent (RFC 6962 proof" in proof for proof in proofs.values()), proofs
    code, full = _report(capsys, stack.env("verifier"), stack, uri, "--compliance-file", str(work / "compliance.yaml"))
    assert code == 0 and full["chains"] == report["chains"]
    assert full["records"]["entries"] == 500 and report["records"]["entries"] < 500  # 300 + 200 events
    # --jobs 2 (each worker with its own S3 connections) gives the same reports, full and incremental
    assert _report(capsys, stack.env("verifier"), stack, uri, "--compliance-file", str(work / "compliance.yaml"),
                   "--jobs", "2") == (0, full)
    assert _report(capsys, stack.env("verifier"), stack, uri, "--compliance-file", str(work / "compliance.yaml"),
                   "--since-state", str(state), "--jobs", "2") == (0, report)


def test_a_covered_object_rewritten_in_the_bucket_is_reported(stack, grown, capsys):
    _, prefix, work, state, first, _ = grown
    admin = S3Settings.from_env(stack.env("admin"))
    s3 = admin.client()
    victim = first[1]
    body = s3.get_object(Bucket=admin.bucket, Key=victim)["Body"].read()
    s3.put_object(Bucket=admin.bucket, Key=victim, Body=body[:-1] + bytes([body[-1] ^ 1]))
    code, report = _report(capsys, stack.env("verifier"), stack, f"s3://{admin.bucket}/{prefix}",
                           "--since-state", str(state), "--compliance-file", str(work / "compliance.yaml"))
    assert code == 1
    found = [v for v in report["violations"] if v["kind"] == COVERED_CHANGED]
    assert [v["location"] for v in found] == [victim], report["violations"]


def test_a_covered_object_deleted_in_the_bucket_or_the_copy_is_reported(stack, grown, capsys, tmp_path):
    _, prefix, work, state, first, _ = grown
    admin = S3Settings.from_env(stack.env("admin"))
    s3 = admin.client()
    victim = first[2]
    s3.delete_object(Bucket=admin.bucket, Key=victim)  # a delete marker: the locked versions stay
    code, report = _report(capsys, stack.env("verifier"), stack, f"s3://{admin.bucket}/{prefix}",
                           "--since-state", str(state), "--compliance-file", str(work / "compliance.yaml"))
    assert code == 1
    assert any(v["kind"] == "delete_marker" and v["location"] == victim for v in report["violations"]), \
        report["violations"]
    # a local copy of the first run's objects, verified with a state; then one of them is deleted
    copy = tmp_path / "copy"
    settings = S3Settings.from_env(stack.env("verifier"))
    reader = settings.client()
    for key in first:
        for name in (key, manifest_key(key)):
            versions = reader.list_object_versions(Bucket=settings.bucket, Prefix=name)["Versions"]
            oldest = [v for v in versions if v["Key"] == name][-1]  # S3 lists a key's versions newest first
            path = copy / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(reader.get_object(Bucket=settings.bucket, Key=name, VersionId=oldest["VersionId"])
                             ["Body"].read())
    local_state = tmp_path / "local-state.json"
    assert main(["verify", "--keyring", str(stack.keyring_file), "--head-tolerance", "3600", "--dir", str(copy),
                 "--state-out",
                 str(local_state)]) == 0
    (copy / first[0]).unlink()
    capsys.readouterr()
    assert main(["verify", "--keyring", str(stack.keyring_file), "--head-tolerance", "3600", "--dir", str(copy),
                 "--since-state",
                 str(local_state), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [v["location"] for v in report["violations"] if v["kind"] == COVERED_MISSING] == [first[0]], \
        report["violations"]
