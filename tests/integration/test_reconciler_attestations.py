"""The reconciler's attestations, end to end on the real broker and S3 server (issue 15): the verifier checks them
in the archive under the reconciler's own keyring, a forged or altered one is reported where it is, a mismatch
is a violation naming the chain and offset, a range never attested is reported; and the reconciler's position
survives a restart (its group's committed offsets) without skipping a range.

Each test seals and archives test topics with the real sealer and sink processes: a source/sealed pair, and the
reconciler's output topic (the test's twin of ``audit.reconciliation``) sealed into its own twin.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from pipeline.config import KafkaSettings, S3Settings
from pipeline.integrity.keyring import Keyring, generate_signing_key, save_keyring, save_signing_key
from pipeline.keys.store import sealer_key_schedule
from pipeline.permissions.topology import Grant
from pipeline.producer.event import new_event
from pipeline.reconciler.attestation import sign_attestation
from pipeline.reconciler.reconciler import Reconciler
from pipeline.sealer.output import ChainWriter
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import EVENT_KIND
from pipeline.wire.topics import RECONCILIATION_TOPIC
from tests.integration.test_attack_forged_origin import _write_error
from tests.integration.test_attack_substitution import _emit, _event, _read_output, _stop
from tests.support.archive import wait_for_archive
from tests.support.sealing import (
    REPO,
    create_acls,
    create_topics,
    delete_topics,
    read_sealed,
    start_sealer,
    start_sink,
    wait_until_sealed,
)

pytestmark = pytest.mark.stack


def _reconciler_grants(stack, topics, output) -> None:
    # as the roles file grants the real topics: READ on the source and its twin, WRITE on its own output only
    grants = [("User:reconciler", Grant("topic", t, op)) for t in (topics.raw, topics.sealed) for op in ("read", "describe")]
    grants += [("User:reconciler", Grant("topic", output.raw, op)) for op in ("write", "describe", "read")]
    create_acls(stack, grants)


def _reconcile_once(stack, topics, output, key_file, log) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "reconcile", "--once", "--signing-key", str(key_file), "--source",
         f"{topics.raw}={topics.sealed}", "--output-topic", output.raw, "--metrics-port", "0"],
        env=dict(os.environ, **stack.env("reconciler")), cwd=REPO, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
        timeout=300)


def _substitute(stack, topics, offset: int) -> None:
    # the compromised sealer host: fence the chain, seal "alice document.read" where the raw topic holds another event
    sealer_env = stack.env("sealer")
    writer = ChainWriter(KafkaSettings.from_env(sealer_env), raw_topic=topics.raw, sealed_topic=topics.sealed,
                         partition=0, signing_key=sealer_key_schedule(None, env={**os.environ, **sealer_env}),
                         group_prefix=topics.app_id)
    chain = writer.open()
    assert chain.next_source_offset == offset
    forged = default_codec().encode(_event("alice", "document.read", f"doc-{offset}"))
    writer.write([chain.seal(forged, offset, int(time.time() * 1_000_000)), chain.checkpoint(time.time_ns() // 1000)])
    writer.close()


def _attestations(stack, output, count: int, timeout: float = 60) -> list[dict]:
    events = _read_output(stack, output.raw, timeout, until=lambda evs: len(evs) >= count)
    assert len(events) >= count, events
    return events


def _archived_offsets(stack, topics) -> dict[int, list[int]]:
    return {p: [offset for offset, _, _ in records] for p, records in read_sealed(stack, topics).items()}


def _verify(stack, tmp_path, prefix: str, reconciler_keyring, output, *extra: str) -> tuple[int, dict]:
    bucket = S3Settings.from_env(stack.env("verifier")).bucket
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "verify", "--s3", f"s3://{bucket}/{prefix}", "--json",
         "--reconciler-keyring", str(reconciler_keyring), "--attestation-topic", output.sealed, *extra],
        env={**os.environ, **stack.env("verifier"), "AUDITSEAL_ACCESS_SPOOL": str(tmp_path / "spool.jsonl")},
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout)


def test_the_verifier_checks_the_reconcilers_attestations_in_the_archive(stack, tmp_path):
    topics, output = create_topics(stack, partitions=1), create_topics(stack, partitions=1)
    _reconciler_grants(stack, topics, output)
    reconciler_key = generate_signing_key()
    key_file, keyring_file = tmp_path / "reconciler.pem", tmp_path / "reconciler-keyring.json"
    save_signing_key(reconciler_key, key_file)
    # published like the sealer's keys: a keyring of its own, the same format
    save_keyring(Keyring().rotate(reconciler_key.public_key, time.time_ns() // 1000 - 60_000_000), keyring_file)
    prefix = f"test-attest-{uuid.uuid4().hex[:8]}/"
    processes: list[subprocess.Popen] = []
    try:
        # the untouched pipeline: 3 events sealed, reconciled once, attestations sealed, both archived
        _emit(stack, topics.raw, [_event("alice", "document.read", f"doc-{n}") for n in range(3)])
        sealer = start_sealer(stack, topics, log=tmp_path / "sealer.log")
        wait_until_sealed(stack, topics, timeout=120)
        # stopped before the round: an idle sealer's heartbeat (a tree head) sealed after it would be unattested
        _stop(sealer)
        assert _reconcile_once(stack, topics, output, key_file, tmp_path / "reconciler.log").returncode == 0
        processes += [start_sealer(stack, output, log=tmp_path / "sealer-output.log"),
                      start_sink(stack, topics, "--prefix", prefix, "--metrics-port", "0", group=f"auditseal-sink-{topics.app_id}",
                                 log=tmp_path / "sink.log"),
                      start_sink(stack, output, "--prefix", prefix, "--metrics-port", "0", group=f"auditseal-sink-{output.app_id}",
                                 log=tmp_path / "sink-output.log")]
        wait_until_sealed(stack, output, timeout=120)
        wait_for_archive(stack, topics.sealed, _archived_offsets(stack, topics), prefix, timeout=120)
        wait_for_archive(stack, output.sealed, _archived_offsets(stack, output), prefix, timeout=120)
        code, report = _verify(stack, tmp_path, prefix, keyring_file, output, "--attestation-grace", "0")
        assert (code, report["violation_counts"]) == (0, {}), report["violations"]

        # the attacks: a substituted entry (a real mismatch), then forgeries written to the reconciler's topic
        _emit(stack, topics.raw, [_event("mallory", "payroll.export", "payroll-2026-12")])
        _substitute(stack, topics, 3)
        _emit(stack, topics.raw, [_event("bob", "document.read", "doc-4")])
        sealer = start_sealer(stack, topics, log=tmp_path / "sealer-2.log")
        processes.append(sealer)
        wait_until_sealed(stack, topics, timeout=120)
        assert _reconcile_once(stack, topics, output, key_file, tmp_path / "reconciler.log").returncode == 1
        genuine = [e for e in _attestations(stack, output, 3) if e["action"] == "reconcile.attest"]
        # the real topic refuses anyone but the reconciler (acl check: only_origin_writes)
        # (test_attack_forged_origin.py tries every role)
        assert _write_error(stack.env("producer"), RECONCILIATION_TOPIC) == KafkaError.TOPIC_AUTHORIZATION_FAILED
        # an ACL hole on the test's twin: the producer signs "all is well" with a key of its own, and replays the
        # reconciler's first attestation with its range widened
        attacker = generate_signing_key()
        fake = sign_attestation({**genuine[0]["attributes"], "mismatches": "0", "sealed_last_offset": "999"}, attacker)
        altered = {**genuine[0]["attributes"], "sealed_last_offset": "999"}
        _emit(stack, output.raw, [new_event(actor={"id": "User:reconciler", "type": "SYSTEM"}, action="reconcile.attest",
                                            resource={"type": "audit.chain", "id": f"{topics.raw}/0"},
                                            outcome={"status": "SUCCESS", "reason": None},
                                            source_service="auditseal-reconciler", attributes=attributes)
                                  for attributes in (fake, altered)])
        # and a range sealed after the last round, never reconciled
        _emit(stack, topics.raw, [_event("carol", "document.read", "doc-6")])
        wait_until_sealed(stack, topics, timeout=120)
        wait_until_sealed(stack, output, timeout=120)
        wait_for_archive(stack, topics.sealed, _archived_offsets(stack, topics), prefix, timeout=120)
        wait_for_archive(stack, output.sealed, _archived_offsets(stack, output), prefix, timeout=120)

        code, report = _verify(stack, tmp_path, prefix, keyring_file, output)
        assert code == 1
        # the chains themselves are flawless (the substitution is correctly signed): only the attestations tell
        assert report["violation_counts"] == {"forged_attestation": 2, "reconcile_mismatch": 1}, report["violations"]
        forged = [v for v in report["violations"] if v["kind"] == "forged_attestation"]
        assert all(v["location"].startswith(f"{prefix}{output.sealed}/") and " offset " in v["location"] for v in forged)
        assert {"not in the reconciler's keyring" in v["detail"] for v in forged} == {True, False}
        assert any("forged or altered" in v["detail"] for v in forged)
        (mismatch,) = [v for v in report["violations"] if v["kind"] == "reconcile_mismatch"]
        assert mismatch["chain_id"] == f"{topics.raw}/0" and "(source offset 3)" in mismatch["location"]
        assert mismatch["detail"].startswith("substituted: ")
        # the newest range is the reconciler's lag (a notice) until the grace has passed, then a violation
        assert any(n["kind"] == "not_yet_attested" for n in report["notices"]), report["notices"]
        code, report = _verify(stack, tmp_path, prefix, keyring_file, output, "--attestation-grace", "0")
        unattested = [v for v in report["violations"] if v["kind"] == "unattested_range"]
        assert code == 1 and unattested and all(f"{topics.sealed}[0] sealed offsets" in v["detail"] for v in unattested)
    finally:
        for process in processes:
            if process.poll() is None:
                _stop(process)
        delete_topics(stack, topics)
        delete_topics(stack, output)


def _committed(stack, topics) -> int:
    consumer = Consumer(KafkaSettings.from_env(stack.env("reconciler")).client_config(**{
        "group.id": f"auditseal-reconciler-{topics.raw}", "enable.auto.commit": False}))
    try:
        (tp,) = consumer.committed([TopicPartition(topics.sealed, 0)], timeout=30)
        return tp.offset
    finally:
        consumer.close()


def _rounds(events: list[dict]) -> list[tuple[int, int]]:
    return sorted((int(e["attributes"]["sealed_from_offset"]), int(e["attributes"]["sealed_last_offset"]))
                  for e in events if e["action"] == "reconcile.attest")


def test_the_reconciler_resumes_from_its_committed_position_and_skips_nothing(stack, tmp_path):
    topics, output = create_topics(stack, partitions=1), create_topics(stack, partitions=1)
    _reconciler_grants(stack, topics, output)
    key_file = tmp_path / "reconciler.pem"
    save_signing_key(generate_signing_key(), key_file)
    sealer = daemon = None
    try:
        _emit(stack, topics.raw, [_event("alice", "document.read", f"doc-{n}") for n in range(5)])
        sealer = start_sealer(stack, topics, log=tmp_path / "sealer.log")
        sealed = wait_until_sealed(stack, topics, timeout=120)
        assert _reconcile_once(stack, topics, output, key_file, tmp_path / "reconciler.log").returncode == 0
        (first,) = _rounds(_attestations(stack, output, 1))
        assert first[0] == 0 and _committed(stack, topics) == first[1] + 1

        # while it is stopped: a substitution at source offset 5, and more sealed by the real sealer
        _stop(sealer)
        _emit(stack, topics.raw, [_event("mallory", "payroll.export", "payroll-2026-12")])
        _substitute(stack, topics, 5)
        _emit(stack, topics.raw, [_event("bob", "document.read", f"doc-{n}") for n in (6, 7)])
        sealer = start_sealer(stack, topics, log=tmp_path / "sealer-2.log")
        sealed = wait_until_sealed(stack, topics, timeout=120)
        # a restarted reconciler starts at its committed offset, with the chain's next source offset read back
        resumed = Reconciler(KafkaSettings.from_env(stack.env("reconciler")), source_topic=topics.raw,
                             sealed_topic=topics.sealed, group_id=f"auditseal-reconciler-{topics.raw}", resume=True)
        try:
            assert resumed.positions == {0: first[1] + 1} and resumed.chains[0].next_source_offset == 5
        finally:
            resumed.close()
        assert _reconcile_once(stack, topics, output, key_file, tmp_path / "reconciler.log").returncode == 1
        events = _attestations(stack, output, 3)
        assert _rounds(events)[1][0] == first[1] + 1, "resumed where it stopped, not from the start"
        (mismatch,) = [e for e in events if e["action"] == "reconcile.mismatch"]
        assert (mismatch["attributes"]["kind"], mismatch["attributes"]["source_offset"]) == ("substituted", "5")

        # kill -9 of the running service, then a restart: every sealed offset in some round, no hole
        daemon = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", "reconcile", "--signing-key", str(key_file), "--source",
             f"{topics.raw}={topics.sealed}", "--output-topic", output.raw, "--interval", "1", "--metrics-port", "0"],
            env=dict(os.environ, **stack.env("reconciler")), cwd=REPO,
            stdout=open(tmp_path / "reconciler.log", "ab"), stderr=subprocess.STDOUT)
        _emit(stack, topics.raw, [_event("carol", "document.read", f"doc-{n}") for n in (8, 9)])
        sealed = wait_until_sealed(stack, topics, timeout=120)
        end = max(offset for offset, _, _ in sealed[0])
        _read_output(stack, output.raw, 120, until=lambda evs: any(last >= end for _, last in _rounds(evs)))
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
        _emit(stack, topics.raw, [_event("dave", "document.read", "doc-10")])
        sealed = wait_until_sealed(stack, topics, timeout=120)
        end = max(offset for offset, _, _ in sealed[0])
        assert _reconcile_once(stack, topics, output, key_file, tmp_path / "reconciler.log").returncode == 0
        rounds = _rounds(_read_output(stack, output.raw, 120,
                                      until=lambda evs: any(last >= end for _, last in _rounds(evs))))
        position = 0
        for start, last in rounds:
            assert start <= position, f"sealed offsets {position}..{start - 1} never attested: {rounds}"
            position = max(position, last + 1)
        assert position >= end + 1, rounds  # (beyond: a heartbeat sealed since)
        assert sum(1 for e in sealed[0] if e[1] == EVENT_KIND) == 11
    finally:
        for process in (daemon, sealer):
            if process is not None and process.poll() is None:
                _stop(process)
        delete_topics(stack, topics)
        delete_topics(stack, output)
