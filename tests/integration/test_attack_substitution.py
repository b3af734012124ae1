"""Attack (issue 15, item 5): a compromised sealer host substitutes an event, on the real broker.

With the sealer's password and its signing key (the stack's SoftHSM2 token), the attacker fences the chain
and seals "alice document.read" where the raw partition holds "mallory payroll.export", correctly chained and
signed; the real sealer resumes after it and the chain verifies. The reconciler, reading the raw and the
sealed topic with its own credential, names the substituted offset within RECONCILER_BOUND_S of the attacker's
commit in a record signed with its own key on its own topic; the detector, reading that topic, raises a
CRITICAL verification_failure alert within ALERT_BOUND_S of the commit; and ``verify --reconcile`` exits 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.integrity.keyring import generate_signing_key, save_signing_key
from pipeline.keys.store import sealer_key_schedule
from pipeline.permissions.topology import Grant
from pipeline.producer.client import AuditProducer
from pipeline.producer.event import new_event
from pipeline.reconciler.attestation import attestation_is_valid
from pipeline.sealer.output import ChainWriter
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import CHECKPOINT_KIND, EVENT_KIND
from tests.support.detector import (
    create_detector_topics,
    delete_detector_topics,
    new_app_id,
    start_detector,
    wait_for_alert,
)
from tests.support.sealing import (
    REPO,
    audit,
    create_acls,
    create_topics,
    delete_topics,
    read_sealed,
    start_sealer,
    wait_until_sealed,
)

pytestmark = pytest.mark.stack

# a round every 2 s; the bound leaves room for a loaded machine (a round reads both topics of the chain)
RECONCILER_INTERVAL_S = 2.0
RECONCILER_BOUND_S = 30.0
ALERT_BOUND_S = 90.0
RULES = """
version: 1
learning_period: 86400
rules:
  verification_failure: {severity: CRITICAL, actions: [archive.verify, reconcile.mismatch]}
"""


def _event(actor: str, action: str, resource: str) -> dict:
    return new_event(actor={"id": actor, "type": "USER"}, action=action, resource={"type": "document", "id": resource},
                     outcome={"status": "SUCCESS", "reason": None}, source_service="payroll",
                     occurred_at=datetime.now(UTC))


def _emit(stack, topic: str, events: list[dict]) -> None:
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topic) as producer:
        for event in events:
            producer.emit(event, key="one-partition")


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _read_output(stack, topic: str, timeout: float, until) -> list[dict]:
    consumer = Consumer(KafkaSettings.from_env(stack.env("reconciler")).client_config(**{
        "group.id": "auditseal-reconciler-test-read", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    codec, events = default_codec(), []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(events):
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                events.append(codec.decode(message.value()))
    finally:
        consumer.close()
    return events


def test_a_substituted_event_is_named_by_the_reconciler_within_its_bound(stack, tmp_path):
    topics = create_topics(stack, partitions=1)
    # the reconciler's output topic is one of the detector's sources (the test's twin of audit.reconciliation)
    made = create_detector_topics(stack, partitions=3)
    output = made.reconciliation
    create_acls(stack, [("User:reconciler", Grant("topic", t, op)) for t in (topics.raw, topics.sealed)
                        for op in ("read", "describe")])
    rules = tmp_path / "detector.yaml"
    rules.write_text(RULES)
    app_id = new_app_id()
    reconciler_key = generate_signing_key()
    key_file = tmp_path / "reconciler.pem"
    save_signing_key(reconciler_key, key_file)
    reconciler = sealer = detector = None
    try:
        detector = start_detector(stack, made, rules, app_id=app_id, log=tmp_path / "detector.log")
        # normal operation: three events sealed by the real sealer
        _emit(stack, topics.raw, [_event("alice", "document.read", f"doc-{n}") for n in range(3)])
        sealer = start_sealer(stack, topics, log=tmp_path / "sealer.log")
        wait_until_sealed(stack, topics, timeout=120)
        _stop(sealer)
        reconciler = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", "reconcile", "--signing-key", str(key_file), "--source",
             f"{topics.raw}={topics.sealed}", "--output-topic", output, "--interval", str(RECONCILER_INTERVAL_S),
             "--metrics-port", "0"],
            env=dict(os.environ, **stack.env("reconciler")), cwd=REPO, stdout=open(tmp_path / "reconciler.log", "ab"),
            stderr=subprocess.STDOUT)
        # its first round attests the three entries: it is running (the bound below counts rounds, not start-up)
        first = _read_output(stack, output, 120, until=lambda evs: any(e["action"] == "reconcile.attest" for e in evs))
        assert [e["outcome"]["status"] for e in first if e["action"] == "reconcile.attest"][:1] == ["SUCCESS"], (
            (tmp_path / "reconciler.log").read_text(errors="replace")[-3000:])

        # the raw record at offset 3: mallory exports the payroll
        _emit(stack, topics.raw, [_event("mallory", "payroll.export", "payroll-2026-12")])
        # the attack: the sealer's credentials and key, the chain fenced, "alice document.read" sealed at offset 3
        sealer_env = stack.env("sealer")
        writer = ChainWriter(KafkaSettings.from_env(sealer_env), raw_topic=topics.raw, sealed_topic=topics.sealed,
                             partition=0, signing_key=sealer_key_schedule(None, env={**os.environ, **sealer_env}),
                             group_prefix=topics.app_id)
        chain = writer.open()
        assert chain.next_source_offset == 3
        forged = default_codec().encode(_event("alice", "document.read", "doc-3"))
        records = [chain.seal(forged, 3, int(time.time() * 1_000_000)), chain.checkpoint(time.time_ns() // 1000)]
        writer.write(records)
        writer.close()
        committed = time.monotonic()

        # the real sealer resumes after the forged entry and seals what comes next
        _emit(stack, topics.raw, [_event("bob", "document.read", "doc-4")])
        sealer = start_sealer(stack, topics, log=tmp_path / "sealer-2.log")
        sealed = wait_until_sealed(stack, topics, timeout=120)
        # the chain itself is flawless: linked, every checkpoint signed by the sealer's key
        assert audit(stack, sealed).violations == []
        events = {r["source_offset"]: default_codec().decode(r["event"])["action"] for _, kind, r in sealed[0]
                  if kind == EVENT_KIND}
        assert events[3] == "document.read" and events[4] == "document.read"

        found = _read_output(stack, output, RECONCILER_BOUND_S,
                             until=lambda evs: any(e["action"] == "reconcile.mismatch" for e in evs))
        took = time.monotonic() - committed
        mismatches = [e for e in found if e["action"] == "reconcile.mismatch"]
        assert mismatches, (f"no mismatch within {RECONCILER_BOUND_S}s of the forged commit; reconciler log: "
                            + (tmp_path / "reconciler.log").read_text(errors="replace")[-3000:])
        assert took <= RECONCILER_BOUND_S
        attributes = mismatches[0]["attributes"]
        assert (attributes["kind"], attributes["source_offset"], attributes["chain_id"]) == (
            "substituted", "3", f"{topics.raw}/0")
        assert mismatches[0]["actor"]["id"] == "User:reconciler" and mismatches[0]["outcome"]["status"] == "FAILURE"
        # signed with the reconciler's own key: the sealer's key could not have made it
        assert attestation_is_valid(attributes, reconciler_key.public_key)
        attestations = [e for e in found if e["action"] == "reconcile.attest"]
        assert attestations and all(attestation_is_valid(e["attributes"], reconciler_key.public_key)
                                    for e in attestations)
        alert = wait_for_alert(stack, made, "User:reconciler", timeout=ALERT_BOUND_S, detector=detector)
        alerted = time.monotonic() - committed
        assert (alert["rule"], alert["severity"]) == ("verification_failure", "CRITICAL")
        assert alerted <= ALERT_BOUND_S
        print(f"substitution named by the reconciler {took:.1f}s after the forged commit "
              f"(bound {RECONCILER_BOUND_S:.0f}s, rounds every {RECONCILER_INTERVAL_S:.0f}s), "
              f"alerted by the detector after {alerted:.1f}s (bound {ALERT_BOUND_S:.0f}s)")

        # the same over a window, on demand: exit 1, naming the chain and the offset
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.cli.main", "verify", "--reconcile", "--since", "600", "--source",
             f"{topics.raw}={topics.sealed}", "--json"],
            env={**os.environ, **stack.env("reconciler"), "AUDITSEAL_ACCESS_SPOOL": str(tmp_path / "spool.jsonl")},
            cwd=REPO, capture_output=True, text=True, timeout=180)
        assert result.returncode == 1, result.stderr[-3000:]
        report = json.loads(result.stdout)
        assert [(m["chain_id"], m["kind"], m["source_offset"]) for m in report["mismatches"]] == [
            (f"{topics.raw}/0", "substituted", 3)]
        assert report["entries"] == 5
    finally:
        for process in (reconciler, sealer, detector):
            if process is not None and process.poll() is None:
                _stop(process)
        delete_topics(stack, topics)
        delete_detector_topics(stack, made, [app_id])


def test_an_untouched_chain_reconciles(stack, tmp_path):
    topics = create_topics(stack, partitions=2)
    create_acls(stack, [("User:reconciler", Grant("topic", t, op)) for t in (topics.raw, topics.sealed)
                        for op in ("read", "describe")])
    try:
        _emit(stack, topics.raw, [_event("alice", "document.read", f"doc-{n}") for n in range(5)])
        garbage = Producer(KafkaSettings.from_env(stack.env("producer")).client_config())
        garbage.produce(topics.raw, b"not an audit event", partition=1)  # sealed as a rejection
        assert garbage.flush(30) == 0
        sealer = start_sealer(stack, topics, log=tmp_path / "sealer.log")
        try:
            sealed = wait_until_sealed(stack, topics, timeout=120)
        finally:
            _stop(sealer)
        assert any(kind != EVENT_KIND and kind != CHECKPOINT_KIND for records in sealed.values()
                   for _, kind, _ in records)
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.cli.main", "verify", "--reconcile", "--source",
             f"{topics.raw}={topics.sealed}"],
            env={**os.environ, **stack.env("reconciler"), "AUDITSEAL_ACCESS_SPOOL": str(tmp_path / "spool.jsonl")},
            cwd=REPO, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert "reconciled 6 sealed entries of " in result.stdout and "RECONCILED" in result.stdout
        assert read_sealed(stack, topics)
    finally:
        delete_topics(stack, topics)
