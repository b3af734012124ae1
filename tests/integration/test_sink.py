"""The S3 sink against the real broker and S3 server: every sealed record archived exactly once,
COMPLIANCE-locked, through an S3 outage and SIGKILLs, and across the upgrade to the compiled object builder;
encryption; refusal of a non-WORM bucket."""

from __future__ import annotations

import datetime
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.s3sink.bucket import ArchiveBucket
from connectors.s3sink.command import BucketRefusedError, check_archive_bucket
from pipeline.archive.container import build_object
from pipeline.archive.encryption import DecryptionError, MasterKey, decrypt_object, generate_master_key
from pipeline.archive.layout import Manifest
from pipeline.archive.objectlock import PROPERTIES, WRITER_PROPERTIES
from pipeline.archive.retention import load_profiles
from pipeline.config import KafkaSettings, S3Settings
from pipeline.dev import s3server
from pipeline.dev.stack import LocalStack
from tests.support.archive import check_archive, seal_in_process, wait_for_archive
from tests.support.sealing import (
    REPO,
    create_topics,
    delete_topics,
    free_port,
    metric_samples,
    read_sealed,
    start_sink,
)

pytestmark = pytest.mark.stack

EVENTS = 6000


@pytest.fixture(scope="module")
def sealed_topics(stack):
    """A sealed topic of 3 chains (EVENTS events, a few rejections, a checkpoint per 500 entries),
    shared by the tests of the module: each archives it with its own consumer group and key prefix."""
    topics = create_topics(stack, partitions=3)
    entries = seal_in_process(stack, topics, EVENTS, seed=606)
    yield topics, read_sealed(stack, topics), entries
    delete_topics(stack, topics)


@pytest.fixture()
def profile_file(tmp_path):
    """A one-day profile: test objects stay locked for a day, not a year."""
    path = tmp_path / "compliance.yaml"
    path.write_text("version: 1\ndefault: test\nprofiles:\n  test: {retention: 1d, why: tests}\n")
    return path


def _group() -> str:
    return f"auditseal-sink-test-{secrets.token_hex(4)}"


def _metric(port: int, name: str) -> float:
    return sum(metric_samples(port, name))


def _committed(stack, topic: str, group: str, partitions: int) -> list[int]:
    consumer = Consumer(KafkaSettings.from_env(stack.env("sink")).client_config(**{"group.id": group}))
    try:
        return [tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)]
    finally:
        consumer.close()


def _expected(sealed) -> dict[int, list[int]]:
    return {p: [offset for offset, _, _ in records] for p, records in sealed.items()}


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(60)


def test_every_sealed_record_is_archived_once_under_compliance_lock(stack, sealed_topics, profile_file, tmp_path):
    topics, sealed, entries = sealed_topics
    group, port = _group(), free_port()
    sink = start_sink(stack, topics, "--prefix", "archive/", "--compliance-file", str(profile_file),
                      "--max-records", "700", "--max-age-ms", "500", "--metrics-port", str(port),
                      group=group, log=tmp_path / "sink.log")
    try:
        archive = wait_for_archive(stack, topics.sealed, _expected(sealed), prefix="archive/")
        deadline = time.monotonic() + 10
        while metric_samples(port, "auditseal_sink_lag_records") != [0, 0, 0] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert metric_samples(port, "auditseal_sink_lag_records") == [0, 0, 0], "caught up, yet lag reported"
        assert _metric(port, "auditseal_sink_records_total") == sum(len(records) for records in sealed.values())
        assert _metric(port, "auditseal_sink_objects_total") == len(archive.objects)
    finally:
        assert _stop(sink) == 0, (tmp_path / "sink.log").read_text()
    auditor = check_archive(stack, archive, sealed)
    assert auditor.violations == [] and auditor.entries_checked == entries
    assert auditor.checkpoints_valid == auditor.checkpoints_checked > 0
    # committed = last archived offset + 1 (the high watermark is one more: the last transaction marker)
    assert _committed(stack, topics.sealed, group, topics.partitions) == [sealed[p][-1][0] + 1 for p in range(3)]
    for manifest_bytes in (versions[0] for versions in archive.manifests.values()):
        manifest = Manifest.from_bytes(manifest_bytes)
        newest = datetime.datetime.fromtimestamp(-(-manifest.last_timestamp_micros // 1_000_000), datetime.UTC)
        assert manifest.retain_until_datetime == newest + datetime.timedelta(days=1)
        assert manifest.compliance_profile == "test" and manifest.encryption is None
        assert manifest.record_count <= 700


def test_encrypted_objects_decrypt_only_with_the_master_key(stack, sealed_topics, profile_file, tmp_path):
    topics, sealed, entries = sealed_topics
    master = generate_master_key(tmp_path / "master.json", "test-master")
    sink = start_sink(stack, topics, "--prefix", "encrypted/", "--compliance-file", str(profile_file),
                      "--max-records", "4000", "--max-age-ms", "500", "--metrics-port", "0",
                      group=_group(), log=tmp_path / "sink.log", env={"AUDITSEAL_MASTER_KEY": str(tmp_path / "master.json")})
    try:
        archive = wait_for_archive(stack, topics.sealed, _expected(sealed), prefix="encrypted/")
    finally:
        assert _stop(sink) == 0, (tmp_path / "sink.log").read_text()
    assert all(key.endswith(".avro.enc") for key in archive.objects)
    assert check_archive(stack, archive, sealed, master_key=master).violations == []
    key, versions = next(iter(archive.objects.items()))
    manifest = Manifest.from_bytes(archive.manifests[key][0])
    assert manifest.encryption.master_key_id == "test-master"
    assert b"audit.raw" not in versions[0], "chain ids readable in an encrypted object"
    with pytest.raises(DecryptionError, match="was not given"):
        decrypt_object(versions[0], key, manifest.encryption, MasterKey("other", bytes(32)))
    with pytest.raises(DecryptionError, match="does not unwrap"):
        decrypt_object(versions[0], key, manifest.encryption, MasterKey("test-master", bytes(32)))


def test_s3_outage_mid_stream_commits_nothing_and_loses_nothing(stack, profile_file, tmp_path):
    topics = create_topics(stack, partitions=3)
    group, port = _group(), free_port()
    sink = start_sink(stack, topics, "--compliance-file", str(profile_file), "--max-records", "400",
                      "--max-age-ms", "300", "--metrics-port", str(port), group=group, log=tmp_path / "sink.log")
    # sealed records keep arriving for ~14 s, before, during and after the outage
    sealing = threading.Thread(target=seal_in_process, args=(stack, topics, 4200),
                               kwargs={"seed": 77, "checkpoint_every": 50, "pause": 0.5})
    sealing.start()
    local = LocalStack()
    try:
        wait_for_any_object(stack, topics.sealed, count=3)
        # the outage starts once every partition has committed an object: the sink commits after it writes,
        # and three objects may be two partitions' (on a busy machine the check below then met -1)
        deadline = time.monotonic() + 120
        while min(_committed(stack, topics.sealed, group, topics.partitions)) < 0:
            assert time.monotonic() < deadline, "a partition committed nothing in 120 s before the outage"
            assert sink.poll() is None, (tmp_path / "sink.log").read_text()[-3000:]
            time.sleep(0.5)
        local.s3_process.stop()
        try:
            _outage(local, 2)
            during = _committed(stack, topics.sealed, group, topics.partitions)
            _outage(local, 6)
            assert _committed(stack, topics.sealed, group, topics.partitions) == during, "committed while S3 was down"
            assert sink.poll() is None, "the sink gave up during the outage"
            assert _metric(port, "auditseal_sink_retries_total") > 0
        finally:
            local.up(log=lambda _line: None)
        sealing.join(60)
        sealed = read_sealed(stack, topics)
        archive = wait_for_archive(stack, topics.sealed, _expected(sealed))
        assert sink.poll() is None
    finally:
        sealing.join(60)
        assert _stop(sink) == 0, (tmp_path / "sink.log").read_text()[-3000:]
        delete_topics(stack, topics)
    auditor = check_archive(stack, archive, sealed)
    assert auditor.violations == [] and auditor.entries_checked == 4200 + 3 * 2
    assert all(offset >= 0 for offset in during)


def _outage(local: LocalStack, seconds: float) -> None:
    """Let ``seconds`` of the S3 outage pass, making sure the server stays down meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if local.s3_process.pid() is not None:
            # another test session's `stack` fixture ran `dev up`, which starts a stopped server
            pytest.skip("the S3 server was restarted by another process during the outage")
        time.sleep(0.2)


def test_sigkill_mid_batch_archives_every_record_exactly_once(stack, sealed_topics, profile_file, tmp_path):
    topics, sealed, entries = sealed_topics
    group, log = _group(), tmp_path / "sink.log"
    options = ("--prefix", "killed/", "--compliance-file", str(profile_file), "--max-records", "120",
               "--max-age-ms", "400", "--metrics-port", "0", "--instance-id", "sink-under-test")
    # deterministic: dies after writing, locking and reading back its 3rd object, before committing it
    sink = start_sink(stack, topics, *options, group=group, log=log, env={"AUDITSEAL_SINK_CRASH_BEFORE_COMMIT": "3"})
    assert sink.wait(60) == -signal.SIGKILL, log.read_text()[-3000:]
    # then killed at random moments while it works: after a few more objects appear in the bucket
    rng = random.Random(6)
    for _ in range(2):
        sink = start_sink(stack, topics, *options, group=group, log=log)
        wait_for_any_object(stack, f"killed/{topics.sealed}", count=_manifests(stack, f"killed/{topics.sealed}")
                            + rng.randint(3, 8))
        sink.send_signal(signal.SIGKILL)
        sink.wait(30)
    sink = start_sink(stack, topics, *options, group=group, log=log)
    try:
        archive = wait_for_archive(stack, topics.sealed, _expected(sealed), prefix="killed/")
    finally:
        assert _stop(sink) == 0, log.read_text()[-3000:]
    auditor = check_archive(stack, archive, sealed)  # one logical object per offset, identical versions
    assert auditor.violations == [] and auditor.entries_checked == entries
    assert archive.retried_keys(), "the object written before the crash was not rewritten by the retry"
    assert "reproduced as they were" in log.read_text()


def _manifests(stack, folder: str) -> int:
    settings = S3Settings.from_env(stack.env("verifier"))
    pages = settings.client().get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=f"{folder}/")
    return sum(1 for page in pages for item in page.get("Contents", []) if item["Key"].endswith(".manifest.json"))


def wait_for_any_object(stack, folder: str, count: int, timeout: float = 60) -> None:
    """Until ``count`` manifests exist under ``folder/`` (``[prefix]topic``)."""
    deadline = time.monotonic() + timeout
    while _manifests(stack, folder) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} objects archived under {folder}/ within {timeout}s")
        time.sleep(0.05)


def test_start_up_check_proves_what_each_role_can(stack):
    sink = S3Settings.from_env(stack.env("sink"))
    report = check_archive_bucket(sink, env={})
    assert [r.name for r in report.results] == list(WRITER_PROPERTIES)
    admin = stack.env("admin")
    full = check_archive_bucket(sink, env={"AUDITSEAL_S3_CHECK_ACCESS_KEY_ID": admin["AWS_ACCESS_KEY_ID"],
                                           "AUDITSEAL_S3_CHECK_SECRET_ACCESS_KEY": admin["AWS_SECRET_ACCESS_KEY"]})
    assert [r.name for r in full.results] == list(PROPERTIES)
    with pytest.raises(BucketRefusedError, match="locked_object_reads_back_compliance"):
        check_archive_bucket(S3Settings.from_env(stack.env("verifier")), env={})  # may not write: refused


def test_sink_refuses_to_start_on_a_bucket_without_object_lock(stack, tmp_path):
    root = S3Settings.from_env(stack.setup_env("s3")).client()
    bucket = f"auditseal-test-nolock-{secrets.token_hex(4)}"
    root.create_bucket(Bucket=bucket)
    root.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    sink_keys = stack.env("sink")
    root.put_bucket_policy(Bucket=bucket, Policy=s3server.bucket_policy(bucket, [], [sink_keys["AWS_ACCESS_KEY_ID"]]))
    try:
        result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "sink", "--metrics-port", "0"], cwd=REPO,
                                env={**os.environ, **sink_keys, "AUDITSEAL_BUCKET": bucket}, capture_output=True,
                                text=True, timeout=60)
    finally:
        root.delete_bucket(Bucket=bucket)
    assert result.returncode == 1, result.stderr
    assert "fails the WORM check" in result.stderr and "object_lock_enabled" in result.stderr


def test_sink_refuses_moto_whose_compliance_retention_can_be_shortened(moto_bucket):
    with pytest.raises(BucketRefusedError, match="compliance_retention_cannot_be_shortened"):
        check_archive_bucket(moto_bucket, env={})


def _raw_records(stack, topic: str, partition: int, count: int) -> list[tuple[int, int, bytes]]:
    """The first ``count`` records of one partition as the sink reads them: (offset, timestamp ms, value),
    read_committed."""
    consumer = Consumer(KafkaSettings.from_env(stack.env("verifier")).client_config(**{
        "group.id": f"auditseal-verifier-test-{secrets.token_hex(4)}", "enable.auto.commit": False,
        "isolation.level": "read_committed"}))
    records: list[tuple[int, int, bytes]] = []
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        deadline = time.monotonic() + 60
        while len(records) < count:
            assert time.monotonic() < deadline, f"only {len(records)} records read from {topic}[{partition}]"
            for message in consumer.consume(num_messages=count - len(records), timeout=1):
                assert message.error() is None, message.error().str()
                records.append((message.offset(), message.timestamp()[1], message.value() or b""))
    finally:
        consumer.close()
    return records


def test_objects_of_the_readable_builder_are_rewritten_with_the_same_bytes(stack, sealed_topics, profile_file,
                                                                          tmp_path):
    """Objects the readable builder wrote (the sink before its compiled batch pass) that were not committed
    when that sink stopped are rewritten by today's sink under the same keys with the same bytes: a crash
    across the upgrade leaves one logical object per range, and what was archived before it verifies."""
    topics, sealed, entries = sealed_topics
    prefix, records = "upgraded/", _raw_records(stack, topics.sealed, 0, 400)
    s3 = S3Settings.from_env(stack.env("sink"))
    bucket = ArchiveBucket(s3.client(), s3.bucket)
    profile = load_profiles(profile_file).get(None)
    written = []
    for start, end in ((0, 150), (150, 400)):
        archive = build_object(topics.sealed, 0, records[start:end], profile=profile, prefix=prefix, reference=True)
        bucket.write(archive)
        written.append(archive.key)
    log = tmp_path / "sink.log"
    sink = start_sink(stack, topics, "--prefix", prefix, "--compliance-file", str(profile_file), "--max-records",
                      "700", "--max-age-ms", "500", "--metrics-port", "0", group=_group(), log=log)
    try:
        archive = wait_for_archive(stack, topics.sealed, _expected(sealed), prefix=prefix)
    finally:
        assert _stop(sink) == 0, log.read_text()[-3000:]
    assert "reproduced as they were" in log.read_text()
    auditor = check_archive(stack, archive, sealed)  # every version of a key has the same bytes
    assert auditor.violations == [] and auditor.entries_checked == entries
    assert set(written) <= set(archive.retried_keys()), "the readable builder's objects were not rewritten"
