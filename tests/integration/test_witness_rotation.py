"""A signing-key rotation while the real sealer runs with witnessing on, against a real omniwitness.

omniwitness verifies each origin's heads with one log key, and never takes a new one from its log list (it only
inserts logs it does not know). The change-over therefore goes: ``keys rotate`` gives the witness policy the new
key beside the old one, then the keyring; the sealer co-signs every tree head with both keys until the switch;
the witness's operator swaps the origin's key (:func:`pipeline.dev.witness.set_log_keys`, ``dev witness-rekey``
for the stack's own witness) at any moment of that window; after the switch only the new key signs. No head is
refused, the heads after the switch are cosigned by the witness, and ``verify --policy`` is INTACT across it.

Revocation: the key is revoked as compromised from an instant between two cosigned stretches; ``verify --policy``
flags the heads and checkpoints it signed from then on, and none of those the witness cosigned before it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.config import KafkaSettings, S3Settings
from pipeline.dev.witness import set_log_keys
from pipeline.integrity.keyring import load_keyring
from pipeline.integrity.log_identity import log_verifier
from pipeline.integrity.note import parse_note, verified_signatures
from pipeline.integrity.policy import PolicyWitness, format_policy, load_policy
from pipeline.producer.client import AuditProducer
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.sealed import CHECKPOINT_KIND, COSIGNATURE_KIND, HEAD_KIND
from tests.support.archive import wait_for_archive
from tests.support.sealing import (
    REPO,
    create_topics,
    delete_topics,
    raw_end_offsets,
    read_sealed,
    sealed_source_offsets,
    start_sink,
    stop_worker,
    wait_until_sealed,
)
from tests.support.witness import start_test_witness

pytestmark = pytest.mark.stack
LOG_NAME = "rw-test"


@pytest.fixture()
def topics(stack):
    created = create_topics(stack, partitions=2)
    yield created
    delete_topics(stack, created)


@pytest.fixture()
def custody(stack, tmp_path):
    """A key label and keyring of this test's own in the stack's sealer token, its first key made."""
    stack.hsm.use_conf()
    env = {**stack.custody_env(), "AUDITSEAL_KEYRING": str(tmp_path / "keyring.json"),
           "AUDITSEAL_SIGNING_KEY_LABEL": f"rw-{secrets.token_hex(4)}",
           "AUDITSEAL_WITNESS_POLICY": str(tmp_path / "policy.txt")}
    init = _keys(stack, env, "init")
    assert init.returncode == 0, init.stderr
    return env


@pytest.fixture()
def witness(stack, topics, custody, tmp_path):
    key = load_keyring(custody["AUDITSEAL_KEYRING"]).active
    origins = [f"{LOG_NAME}/{topics.raw}/{p}" for p in range(topics.partitions)]
    running = start_test_witness(tmp_path / "witness", stack.ports()["kafka_client"], [],
                                 log_vkeys={o: log_verifier(key.public_key, o).vkey for o in origins})
    Path(custody["AUDITSEAL_WITNESS_POLICY"]).write_text(
        format_policy([log_verifier(key.public_key, o) for o in origins],
                      [PolicyWitness("test-witness", running.verifier, running.client.url)], "test-witness"))
    running.origins = origins
    yield running
    running.stop()


def _keys(stack, custody, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **stack.env("producer"), **custody}
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", "keys", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _start_sealer(stack, topics, custody, log: Path) -> subprocess.Popen:
    env = {**os.environ, **stack.env("sealer"), **custody}
    argv = [sys.executable, "-m", "pipeline.cli.main", "seal", "--raw-topic", topics.raw, "--sealed-topic",
            topics.sealed, "--app-id", topics.app_id, "--metrics-port", "0", "--checkpoint-records", "50",
            "--checkpoint-ms", "200", "--log-name", LOG_NAME, "--witness-policy", custody["AUDITSEAL_WITNESS_POLICY"],
            "--witness-interval", "1", "--heartbeat-interval", "1"]
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def _emit_until(stack, topics, stop: threading.Event, rate: float, emitted: list[int]) -> None:
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw) as producer:
        started, index = time.monotonic(), 0
        for index, event in enumerate(synthetic_events(10**7, seed=31)):
            if stop.is_set():
                break
            producer.emit(event)
            if (ahead := index / rate - (time.monotonic() - started)) > 0:
                time.sleep(ahead)
    emitted.append(index)


def _emit(stack, topics, count: int, seed: int) -> None:
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw) as producer:
        for event in synthetic_events(count, seed=seed):
            producer.emit(event)


def _records(sealed, kind: bytes) -> list[tuple[int, dict]]:
    return [(p, r) for p, records in sealed.items() for _, k, r in records if k == kind]


def _wait_for(what: str, predicate, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        sealed = read_sealed(_wait_for.stack, _wait_for.topics)
        if predicate(sealed):
            return sealed
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def _cosigned_at_least(sizes: dict[int, int]):
    def check(sealed) -> bool:
        best = {p: max((r["tree_size"] for q, r in _records(sealed, COSIGNATURE_KIND) if q == p), default=-1)
                for p in sizes}
        return all(best[p] >= size for p, size in sizes.items())
    return check


def _archive_and_verify(stack, topics, custody, sealed, tmp_path) -> tuple[int, dict, str]:
    prefix = f"rw-{secrets.token_hex(3)}/"
    sink = start_sink(stack, topics, "--prefix", prefix, "--max-age-ms", "500", "--metrics-port", "0",
                      group=f"auditseal-sink-test-{secrets.token_hex(4)}", log=tmp_path / "sink.log")
    try:
        wait_for_archive(stack, topics.sealed, {p: [o for o, _, _ in r] for p, r in sealed.items()}, prefix=prefix)
    finally:
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(60) == 0, (tmp_path / "sink.log").read_text()
    bucket = S3Settings.from_env(stack.env("verifier")).bucket
    run = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "verify", "--s3",
                          f"s3://{bucket}/{prefix}{topics.sealed}/", "--json", "--keyring", custody["AUDITSEAL_KEYRING"],
                          "--policy", custody["AUDITSEAL_WITNESS_POLICY"], "--head-tolerance", "3600"],
                         env={**os.environ, **stack.env("verifier")}, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    return run.returncode, json.loads(run.stdout) if run.stdout.startswith("{") else {}, run.stdout + run.stderr


def _log_signers(record: dict, keyring) -> set[str]:
    note = parse_note(record["note"])
    origin = note.text.split("\n", 1)[0]
    return {entry.key_id for entry in keyring
            if verified_signatures(note, [log_verifier(entry.public_key, origin)])}


def test_rotation_with_witnessing_on_the_witness_cosigns_across_the_switch(stack, topics, custody, witness,
                                                                           tmp_path):
    _wait_for.stack, _wait_for.topics = stack, topics
    first = load_keyring(custody["AUDITSEAL_KEYRING"]).active
    log = tmp_path / "sealer.log"
    worker = _start_sealer(stack, topics, custody, log)
    stop, emitted = threading.Event(), []
    load = threading.Thread(target=_emit_until, args=(stack, topics, stop, 150, emitted))
    try:
        load.start()
        _wait_for("the witness cosigning both chains under the first key", _cosigned_at_least({0: 1, 1: 1}))
        rotate = _keys(stack, custody, "rotate", "--lead", "12")
        assert rotate.returncode == 0, rotate.stderr
        assert "2 log(s) gained the new key" in rotate.stdout, rotate.stdout
        keyring = load_keyring(custody["AUDITSEAL_KEYRING"])
        second = next(e for e in keyring if e.key_id != first.key_id)
        switch = second.valid_from_micros
        # the policy lists both keys for each log before the switch
        policy = load_policy(custody["AUDITSEAL_WITNESS_POLICY"])
        for origin in witness.origins:
            assert {k.public_key_bytes for k in policy.keys_of(origin)} == {
                log_verifier(first.public_key, origin).public_key_bytes,
                log_verifier(second.public_key, origin).public_key_bytes}
        # the sealer co-signs heads with both keys before the switch
        _wait_for("a head co-signed by both keys", lambda sealed: any(
            _log_signers(r, keyring) == {first.key_id, second.key_id} for _, r in _records(sealed, HEAD_KIND)))
        # the witness operator's half, inside the change-over window: the witness now trusts the new key only
        changed = set_log_keys(witness.home, {o: log_verifier(second.public_key, o).vkey for o in witness.origins})
        assert changed == witness.origins
        assert time.time_ns() // 1000 < switch, "the change-over took longer than the lead"
        while time.time_ns() // 1000 < switch + 5_000_000:  # keep the load on well past the switch
            assert worker.poll() is None, log.read_text()
            time.sleep(0.5)
        stop.set()
        load.join()
        sealed = wait_until_sealed(stack, topics, timeout=180)
        ends = {p: max(r["tree_size"] for q, r in _records(sealed, HEAD_KIND) if q == p) for p in sealed}
        sealed = _wait_for("the newest heads cosigned", _cosigned_at_least(ends))
        assert worker.poll() is None, "the sealer kept running through the rotation"
    finally:
        stop.set()
        load.join()
        stop_worker(worker)
    text = log.read_text()
    assert "WITNESS REFUSED" not in text, text[-3000:]
    # and none was turned away for its key during the change-over (omniwitness answers 500 for a head with no
    # signature of the key it trusts, which the submitter retries as an unavailable witness)
    assert "cosigning is delayed" not in text, text[-3000:]
    heads = _records(sealed, HEAD_KIND)
    before = [r for _, r in heads if r["issued_at_micros"] < switch]
    after = [r for _, r in heads if r["issued_at_micros"] >= switch]
    assert before and after
    assert all(r["key_id"] == first.key_id for r in before) and all(r["key_id"] == second.key_id for r in after)
    assert all(_log_signers(r, keyring) == {second.key_id} for r in after), "only the new key signs after the switch"
    # heads after the switch cosigned by the real witness, on both chains
    for partition in range(topics.partitions):
        first_after = min(r["tree_size"] for q, r in heads if q == partition and r["issued_at_micros"] >= switch)
        cosigned = [r for q, r in _records(sealed, COSIGNATURE_KIND) if q == partition and r["tree_size"] >= first_after]
        assert cosigned, f"chain {partition}: no head after the switch was cosigned"
        assert all(_log_signers(r, keyring) >= {second.key_id} for r in cosigned)
    # no gap, no duplicate: every raw offset sealed once, in order
    raw_ends = raw_end_offsets(stack, topics)
    offsets = sealed_source_offsets(sealed)
    assert all(offsets[p] == list(range(end)) for p, end in raw_ends.items())
    checkpoints = _records(sealed, CHECKPOINT_KIND)
    assert {r["key_id"] for _, r in checkpoints} == {first.key_id, second.key_id}
    # no fork: the archive verifies across the rotation, witnesses included
    code, report, output = _archive_and_verify(stack, topics, custody, sealed, tmp_path)
    assert code == 0 and report.get("intact") is True, output[-4000:]


def test_revoked_key_heads_after_the_compromise_are_flagged_those_cosigned_before_are_not(stack, topics, custody,
                                                                                         witness, tmp_path):
    _wait_for.stack, _wait_for.topics = stack, topics
    key_id = load_keyring(custody["AUDITSEAL_KEYRING"]).active.key_id
    worker = _start_sealer(stack, topics, custody, tmp_path / "sealer.log")
    try:
        _emit(stack, topics, 400, seed=41)
        early = wait_until_sealed(stack, topics)
        sizes = {p: max(r["tree_size"] for q, r in _records(early, HEAD_KIND) if q == p) for p in early}
        early = _wait_for("the early heads cosigned", _cosigned_at_least(sizes))
        # a cosignature's time has whole seconds: the compromise starts on the next second after them
        compromised_since = (time.time_ns() // 1_000_000_000 + 1) * 1_000_000
        while time.time_ns() // 1000 < compromised_since + 200_000:
            time.sleep(0.1)
        _emit(stack, topics, 400, seed=42)
        late = wait_until_sealed(stack, topics)
        sizes = {p: max(r["tree_size"] for q, r in _records(late, HEAD_KIND) if q == p) for p in late}
        sealed = _wait_for("the late heads cosigned", _cosigned_at_least(sizes))
    finally:
        stop_worker(worker)
    revoke = _keys(stack, custody, "revoke", key_id, "--compromised-since", str(compromised_since))
    assert revoke.returncode == 0, revoke.stderr
    code, report, output = _archive_and_verify(stack, topics, custody, sealed, tmp_path)
    assert code == 1, output[-4000:]
    flagged = [v for v in report["violations"] if v["kind"] == "compromised_key"]
    assert {v["kind"] for v in report["violations"]} == {"compromised_key"}, output[-4000:]
    heads = _records(sealed, HEAD_KIND)
    late_heads = {(f"{topics.raw}/{p}", r["tree_size"] - 1) for p, r in heads if r["issued_at_micros"] >= compromised_since}
    early_heads = {(f"{topics.raw}/{p}", r["tree_size"] - 1) for p, r in heads if r["issued_at_micros"] < compromised_since}
    flagged_heads = {(v["chain_id"], v["seq"]) for v in flagged if v["detail"].startswith("tree head")}
    # a heartbeat head repeats the size of the head before it: a head issued after TIME at a size the witness
    # cosigned before TIME shows nothing new, existed before TIME in all it says, and is not flagged either
    fresh = late_heads - early_heads
    repeated = late_heads & early_heads
    assert fresh and early_heads
    # every head at a size first reached after the compromise is flagged, though the witness cosigned it (after)
    assert fresh <= flagged_heads
    assert all(key_id in v["detail"] and "after its compromise" in v["detail"] for v in flagged)
    # none of those the witness cosigned before TIME is, not even as possibly backdated
    assert not early_heads & flagged_heads
    assert not [v for v in flagged if "may have been backdated" in v["detail"]]
    vouched = {(n["chain_id"], n["seq"]) for n in report["notices"] if n["kind"] == "compromised_key_vouched"}
    assert vouched == repeated


def test_rotate_with_a_policy_that_does_not_parse_changes_nothing(stack, custody, tmp_path):
    before = Path(custody["AUDITSEAL_KEYRING"]).read_bytes()
    bad = tmp_path / "bad-policy.txt"
    bad.write_text("log not-a-key\nquorum none\n")
    rotate = _keys(stack, custody, "rotate", "--lead", "5", "--witness-policy", str(bad))
    assert rotate.returncode == 2, rotate.stderr
    lines = [line for line in rotate.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad-policy.txt line 1" in lines[0], rotate.stderr
    assert Path(custody["AUDITSEAL_KEYRING"]).read_bytes() == before and bad.read_text() == "log not-a-key\nquorum none\n"
    # the key made for it was destroyed: the token holds only the first key under the test's label
    from pipeline.keys.store import SigningKeyStore

    held = SigningKeyStore(env={**os.environ, **custody}).require_signers()
    assert set(held) == {load_keyring(custody["AUDITSEAL_KEYRING"]).active.key_id}
