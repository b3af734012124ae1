"""``auditseal verify`` and ``auditseal sink`` under operator error and a live stack (issue 14): one
line and exit 2 for a configuration they cannot use; the sink's lag is a notice, a real truncated
tail a violation; a stray record on the sealed topic is a violation at its offset, not a traceback."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer

from pipeline.config import KafkaSettings, S3Settings
from pipeline.producer.client import AuditProducer
from pipeline.producer.synthetic import synthetic_events
from tests.support.archive import wait_for_archive
from tests.support.sealing import (
    REPO,
    create_topics,
    delete_topics,
    start_sealer,
    start_sink,
    wait_until_sealed,
)

pytestmark = pytest.mark.stack


def _run(stack, role: str, *args: str, env: dict[str, str] | None = None, tmp_path, timeout: float = 120):
    environment = {**os.environ, **stack.env(role), "AUDITSEAL_ACCESS_SPOOL": str(tmp_path / "access.jsonl"),
                   "PYTHONPATH": str(REPO), **(env or {})}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=environment, cwd=tmp_path,
                            capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - started


def _one_config_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1 and lines[0].startswith("auditseal: configuration error:"), lines
    return lines[0]


@pytest.mark.parametrize("case", ["missing bucket", "wrong secret"])
def test_verify_with_an_s3_setup_it_cannot_use_is_one_line_and_exit_2(stack, tmp_path, case):
    settings = S3Settings.from_env(stack.env("verifier"))
    bucket, env = {
        "missing bucket": (f"no-such-bucket-{secrets.token_hex(4)}", {}),
        "wrong secret": (settings.bucket, {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}),
    }[case]
    result, took = _run(stack, "verifier", "verify", "--s3", f"s3://{bucket}/", "--keyring", str(stack.keyring_file),
                        env=env, tmp_path=tmp_path)
    line = _one_config_line(result)
    assert {"missing bucket": "NoSuchBucket", "wrong secret": "SignatureDoesNotMatch"}[case] in line
    assert took < 30


def test_the_sink_with_an_unreachable_s3_endpoint_is_one_line_and_exit_2(stack, tmp_path):
    result, took = _run(stack, "sink", "sink", "--metrics-port", "0", env={"AWS_ENDPOINT_URL": "https://127.0.0.1:9"},
                        tmp_path=tmp_path)
    line = _one_config_line(result)
    assert "127.0.0.1:9" in line
    assert took < 60


@pytest.fixture()
def live(stack, tmp_path):
    """A sealer and a sink running on fresh topics, archiving under a fresh prefix."""
    topics = create_topics(stack, partitions=2)
    prefix = f"tail-{secrets.token_hex(4)}/"
    profile = tmp_path / "compliance.yaml"
    profile.write_text("version: 1\ndefault: test\nprofiles:\n  test: {retention: 1d, why: tests}\n")
    sealer = start_sealer(stack, topics, checkpoint_records=50, checkpoint_ms=100, log=tmp_path / "sealer.log")
    sink = start_sink(stack, topics, "--prefix", prefix, "--compliance-file", str(profile), "--max-age-ms", "500",
                      "--metrics-port", "0", group=f"auditseal-sink-test-{secrets.token_hex(4)}",
                      log=tmp_path / "sink.log")
    try:
        yield topics, prefix, profile, sink
    finally:
        for process in (sealer, sink):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
        delete_topics(stack, topics)


def _emit(stack, topics, count: int, seed: int) -> None:
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw) as producer:
        for event in synthetic_events(count, seed=seed):
            producer.emit(event)


def _verify_kafka(stack, topics, prefix, profile, tmp_path, *args):
    bucket = S3Settings.from_env(stack.env("verifier")).bucket
    result, _ = _run(stack, "verifier", "verify", "--s3", f"s3://{bucket}/{prefix}", "--keyring",
                     str(stack.keyring_file), "--compliance-file", str(profile), "--kafka", "--kafka-topic",
                     topics.sealed, "--json", *args, tmp_path=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout)


def test_the_sink_s_lag_is_a_notice_and_a_real_truncated_tail_a_violation(stack, live, tmp_path):
    topics, prefix, profile, sink = live
    _emit(stack, topics, 300, seed=61)
    sealed = wait_until_sealed(stack, topics)
    wait_for_archive(stack, topics.sealed, {p: [o for o, _, _ in r] for p, r in sealed.items()}, prefix)
    # the sink stops (or falls behind): what is sealed after that is not archived yet; within the grace
    # period that is the sink's lag, a notice; once older, a truncated tail, worded as one
    sink.send_signal(signal.SIGTERM)
    assert sink.wait(60) == 0
    _emit(stack, topics, 200, seed=62)
    wait_until_sealed(stack, topics)
    code, report = _verify_kafka(stack, topics, prefix, profile, tmp_path)
    assert code == 0 and report["intact"], report["violations"]
    lag = [n for n in report["notices"] if n["kind"] == "not_yet_archived"]
    assert lag and all(n["detail"].startswith("not yet archived (lag)") and n["severity"] == "warning" for n in lag)
    assert json.loads((tmp_path / "access.jsonl").read_text().splitlines()[-1])["outcome"]["status"] == "SUCCESS"

    time.sleep(4)
    code, report = _verify_kafka(stack, topics, prefix, profile, tmp_path, "--kafka-grace", "3")
    assert code == 1
    truncated = [v for v in report["violations"] if v["kind"] == "tail_truncated"]
    assert truncated and all(v["detail"].startswith("truncated: ") for v in truncated), report["violations"]
    assert not [n for n in report["notices"] if n["chain_id"] in {v["chain_id"] for v in truncated}]


def test_a_stray_record_on_the_sealed_topic_is_a_violation_at_its_offset(stack, live, tmp_path):
    topics, prefix, profile, _ = live
    _emit(stack, topics, 100, seed=64)
    sealed = wait_until_sealed(stack, topics)
    wait_for_archive(stack, topics.sealed, {p: [o for o, _, _ in r] for p, r in sealed.items()}, prefix)
    offsets = []
    stray = Producer(KafkaSettings.from_env(stack.env("sealer")).client_config())
    stray.produce(topics.sealed, b"\xc3\x01 garbage", partition=1, on_delivery=lambda e, m: offsets.append(m.offset()))
    assert stray.flush(30) == 0
    code, report = _verify_kafka(stack, topics, prefix, profile, tmp_path)
    assert code == 1
    strays = [v for v in report["violations"] if v["kind"] == "stray_record"]
    assert [v["location"] for v in strays] == [f"{topics.sealed}[1] offset {offsets[0]}"], report["violations"]


def test_the_verifier_delivers_its_own_record_to_its_origin_topic_and_it_is_sealed_from_there(stack, tmp_path):
    # as the chart and compose run it: no access auditor reads the verifier's spool, so it writes its record
    # to audit.verification, which only the verifier may write, as its own principal
    archive = tmp_path / "empty-archive"
    archive.mkdir()
    result, _ = _run(stack, "verifier", "verify", "--dir", str(archive), "--keyring", str(stack.keyring_file),
                     env={"AUDITSEAL_VERIFICATION_RECORD": "kafka"}, tmp_path=tmp_path)
    # an empty prefix proves nothing (no_archive, exit 1): the run is still an access, recorded as a failure
    assert result.returncode == 1 and "no archived object" in result.stdout, result.stderr[-3000:]
    record = json.loads((tmp_path / "access.jsonl").read_text().splitlines()[-1])
    assert record["action"] == "archive.verify"
    # the real pipeline seals it: a sealer on audit.verification -> audit.sealed.verification, chains
    # audit.verification/N: the sealed entry names the verifier's authenticated source
    from tests.support.sealing import Topics

    real = Topics("audit.verification", "audit.sealed.verification", 3, "auditseal-sealer-verification")
    sealer = start_sealer(stack, real, log=tmp_path / "sealer.log")
    try:
        sealed = wait_until_sealed(stack, real, timeout=180)
    finally:
        sealer.send_signal(signal.SIGTERM)
        sealer.wait(60)
    from pipeline.wire.codec import default_codec
    from pipeline.wire.sealed import EVENT_KIND

    chains = {str(default_codec().decode(r["event"])["event_id"]): r["chain_id"] for records in sealed.values()
              for _, kind, r in records if kind == EVENT_KIND}
    assert chains[record["event_id"]].startswith("audit.verification/")


def test_an_access_record_that_cannot_be_delivered_fails_the_run_in_one_line(stack, tmp_path):
    archive = tmp_path / "empty-archive"
    archive.mkdir()
    result, took = _run(stack, "verifier", "verify", "--dir", str(archive), "--keyring", str(stack.keyring_file),
                        env={"AUDITSEAL_VERIFICATION_RECORD": "kafka", "AUDITSEAL_SASL_PASSWORD": "wrong"},
                        tmp_path=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and "was not delivered" in lines[0], lines
    assert took < 60
