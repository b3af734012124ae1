"""Witnessing wired into the real sealer, against a real omniwitness, the real broker and the real S3 server.

The sealer submits its chains' heads to the witness of its policy off the sealing path, seals the returned
cosignatures as ``cosignature`` records, and the sink archives them; ``verify --policy`` then finds every head
covered. The attack: whoever holds the sealer's key re-seals a rewritten history of the same chain (same origin,
same key): the witness refuses it, the sealer counts and logs the refusal (the alert's series), and
``verify --policy`` reports the rewritten archive with its kinds and locations, while the honest one stays INTACT.
A witness that is down delays cosigning (the lag metric grows), never sealing, and cosigning catches up."""

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
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.config import KafkaSettings, S3Settings
from pipeline.integrity.keyring import load_keyring
from pipeline.integrity.log_identity import log_verifier
from pipeline.integrity.policy import PolicyWitness, format_policy
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import COSIGNATURE_KIND, HEAD_KIND
from tests.support.archive import wait_for_archive
from tests.support.sealing import (
    REPO,
    create_topics,
    delete_topics,
    free_port,
    metric_samples,
    read_sealed,
    start_sealer,
    start_sink,
    wait_until_sealed,
)
from tests.support.witness import start_test_witness

pytestmark = pytest.mark.stack
LOG_NAME = "ww-test"
PER_PARTITION = 40  # four batches of ten per chain: heads at sizes 10, 20, 30, 40


def _origins(topics) -> list[str]:
    return [f"{LOG_NAME}/{topics.raw}/{p}" for p in range(topics.partitions)]


@pytest.fixture()
def topics(stack):
    created = create_topics(stack, partitions=2)
    yield created
    delete_topics(stack, created)


@pytest.fixture()
def witness(stack, topics, tmp_path):
    key = load_keyring(stack.keyring_file).active
    vkeys = {origin: log_verifier(key.public_key, origin).vkey for origin in _origins(topics)}
    running = start_test_witness(tmp_path / "witness", stack.ports()["kafka_client"], [], log_vkeys=vkeys)
    policy = tmp_path / "policy.txt"
    policy.write_text(format_policy([log_verifier(key.public_key, o) for o in _origins(topics)],
                                    [PolicyWitness("test-witness", running.verifier, running.client.url)],
                                    "test-witness"))
    running.policy_file = policy
    yield running
    running.stop()


def _emit(stack, topics, *, altered: int | None = None) -> None:
    producer = Producer(KafkaSettings.from_env(stack.env("producer")).client_config(**{"enable.idempotence": True}))
    codec = default_codec()
    for partition in range(topics.partitions):
        for n, event in enumerate(synthetic_events(PER_PARTITION, seed=7 + partition)):
            if partition == 0 and n == altered:
                event = dict(event, action="what.the.insider.wanted")
            producer.produce(topics.raw, codec.encode(event), partition=partition)
    assert producer.flush(30) == 0


def _sealer(stack, topics, witness, tmp_path, metrics_port: int, name: str):
    return start_sealer(stack, topics, checkpoint_records=10, log=tmp_path / f"{name}.log", metrics_port=metrics_port,
                        extra=("--log-name", LOG_NAME, "--witness-policy", str(witness.policy_file),
                               "--witness-interval", "1", "--heartbeat-interval", "2"))


def _wait_cosigned(stack, topics, size: int, partitions, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        sealed = read_sealed(stack, topics)
        cosigned = {p: max((r["tree_size"] for _, k, r in sealed.get(p, []) if k == COSIGNATURE_KIND), default=-1)
                    for p in partitions}
        if all(s >= size for s in cosigned.values()):
            return sealed
        if time.monotonic() > deadline:
            raise TimeoutError(f"cosigned sizes {cosigned}, wanted {size}")
        time.sleep(1)


def _archive(stack, topics, sealed, tmp_path, prefix: str) -> None:
    sink = start_sink(stack, topics, "--prefix", prefix, "--max-age-ms", "500", "--metrics-port", "0",
                      group=f"auditseal-sink-test-{secrets.token_hex(4)}", log=tmp_path / f"sink-{prefix[:-1]}.log")
    try:
        wait_for_archive(stack, topics.sealed, {p: [o for o, _, _ in r] for p, r in sealed.items()}, prefix=prefix)
    finally:
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(60) == 0, (tmp_path / f"sink-{prefix[:-1]}.log").read_text()


def _verify(stack, topics, prefix: str, *options: str) -> tuple[int, dict, str]:
    bucket = S3Settings.from_env(stack.env("verifier")).bucket
    run = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "verify", "--s3",
                          f"s3://{bucket}/{prefix}{topics.sealed}/", "--json", *options],
                         env={**os.environ, **stack.env("verifier")}, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    return run.returncode, json.loads(run.stdout) if run.stdout.startswith("{") else {}, run.stdout + run.stderr


def _recreate(stack, topics) -> None:
    # the insider's rewrite: the same topic names (so the same chain ids and origins), emptied
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    for future in admin.delete_topics([topics.raw, topics.sealed]).values():
        future.result(timeout=30)
    deadline = time.monotonic() + 90
    while True:
        futures = admin.create_topics([NewTopic(n, num_partitions=topics.partitions, replication_factor=1)
                                       for n in (topics.raw, topics.sealed)])
        try:
            for future in futures.values():
                future.result(timeout=30)
            return
        except Exception:  # still being deleted: TOPIC_ALREADY_EXISTS until the deletion completes
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
            for name in (topics.raw, topics.sealed):
                admin.delete_topics([name])


def _cli(stack, role: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *argv], env={**os.environ, **stack.env(role)},
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def _prove_and_check_with_go(stack, topics, witness, prefix: str, tmp_path) -> None:
    # a C2SP tlog-proof of a real sealed event against the witness-cosigned head, checked by us and by Go
    from pipeline.integrity.merkle import record_leaf_hash
    from pipeline.integrity.tlog_proof import parse_tlog_proof
    from pipeline.wire.sealed import sealed_codecs
    from tests.support.c2spcheck import run_c2spcheck

    event_id = str(list(synthetic_events(PER_PARTITION, seed=7))[5]["event_id"])
    bucket = S3Settings.from_env(stack.env("verifier")).bucket
    path = tmp_path / "event.tlog-proof"
    made = _cli(stack, "verifier", "prove", event_id, "--s3", f"s3://{bucket}/{prefix}{topics.sealed}/",
                "--format", "tlog", "--out", str(path))
    assert made.returncode == 0, made.stdout + made.stderr
    checked = _cli(stack, "verifier", "verify-proof", str(path), "--policy", str(witness.policy_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"entry seq 5 of chain {topics.raw}/0" in checked.stdout and "cosigned by test-witness" in checked.stdout
    assert "signed by key" in checked.stdout  # the stack's keyring ($AUDITSEAL_KEYRING) was checked too
    proof = parse_tlog_proof(path.read_bytes())
    origin = f"{LOG_NAME}/{topics.raw}/0"
    key = load_keyring(stack.keyring_file).active
    single = tmp_path / "go-policy.txt"
    single.write_text(format_policy([log_verifier(key.public_key, origin)],
                                    [PolicyWitness("test-witness", witness.verifier, witness.client.url)],
                                    "test-witness"))
    leaf = record_leaf_hash(sealed_codecs().decode(proof.extra)[1]["hash"])
    go = run_c2spcheck("proof", log_verifier(key.public_key, origin).vkey, single, path, leaf.hex())
    assert go.returncode == 0, go.stdout + go.stderr
    assert go.stdout.strip() == f"ok proof origin={origin} index=5 size={PER_PARTITION}"
    # the same proof with another leaf's index is refused by both
    path.write_bytes(path.read_bytes().replace(b"\nindex 5\n", b"\nindex 6\n"))
    assert _cli(stack, "verifier", "verify-proof", str(path), "--policy", str(witness.policy_file)).returncode == 1
    assert run_c2spcheck("proof", log_verifier(key.public_key, origin).vkey, single, path, leaf.hex()).returncode == 1


def test_a_rewritten_history_resealed_with_the_real_key_is_refused_alerted_and_reported(stack, topics, witness,
                                                                                       tmp_path):
    port = free_port()
    _emit(stack, topics)
    worker = _sealer(stack, topics, witness, tmp_path, port, "honest")
    try:
        wait_until_sealed(stack, topics)
        honest = _wait_cosigned(stack, topics, PER_PARTITION, range(topics.partitions))
        assert sum(metric_samples(port, "auditseal_sealer_witness_cosignatures_total{")) >= 2
        assert sum(metric_samples(port, "auditseal_sealer_witness_refusals_total{")) == 0
    finally:
        worker.terminate()
        worker.wait(30)
    honest_prefix = f"ww-honest-{secrets.token_hex(3)}/"
    _archive(stack, topics, honest, tmp_path, honest_prefix)
    code, report, output = _verify(stack, topics, honest_prefix, "--policy", str(witness.policy_file),
                                   "--witness-tolerance", "0")
    assert code == 0 and report["intact"], output
    _prove_and_check_with_go(stack, topics, witness, honest_prefix, tmp_path)

    # keep what the witness cosigned for chain 0, as anyone holding a cosigned head would
    cosigned = [r for _, k, r in honest[0] if k == COSIGNATURE_KIND]
    witnessed = tmp_path / "witnessed-head.txt"
    witnessed.write_bytes(max(cosigned, key=lambda r: r["tree_size"])["note"])

    # the insider re-seals chain 0 with event 3 altered, with the real key, under the same origin
    _recreate(stack, topics)
    _emit(stack, topics, altered=3)
    port = free_port()
    worker = _sealer(stack, topics, witness, tmp_path, port, "rewritten")
    try:
        wait_until_sealed(stack, topics)
        # both chains start again from genesis: a head smaller than what the witness cosigned is refused at once
        # (chain 1 re-sealed the same events, but the witness saw size 40 and is shown size 10: a rollback)
        deadline = time.monotonic() + 60
        while sum(metric_samples(port, "auditseal_sealer_witness_refusals_total{")) < 2:
            assert time.monotonic() < deadline, (tmp_path / "rewritten.log").read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(3)  # a heartbeat more: no cosignature is ever sealed for these heads
        rewritten = read_sealed(stack, topics)
    finally:
        worker.terminate()
        worker.wait(30)
    assert (tmp_path / "rewritten.log").read_text().count("WITNESS REFUSED") == 2
    assert not [r for p in rewritten for _, k, r in rewritten[p] if k == COSIGNATURE_KIND]
    assert [r["tree_size"] for _, k, r in rewritten[0] if k == HEAD_KIND and not r["heartbeat"]] == [10, 20, 30, 40]

    rewritten_prefix = f"ww-rewritten-{secrets.token_hex(3)}/"
    _archive(stack, topics, rewritten, tmp_path, rewritten_prefix)
    code, report, output = _verify(stack, topics, rewritten_prefix)
    assert code == 0, output  # without a policy the rewrite is a valid chain under the real key: why witnesses matter
    code, report, output = _verify(stack, topics, rewritten_prefix, "--policy", str(witness.policy_file),
                                   "--witnessed-head", str(witnessed), "--witness-tolerance", "0")
    assert code == 1, output
    found = {(v["kind"], v["chain_id"]) for v in report["violations"]}
    assert found == {("unwitnessed_head", f"{topics.raw}/0"), ("unwitnessed_head", f"{topics.raw}/1"),
                     ("witness_fork", f"{topics.raw}/0")}, output
    unwitnessed = next(v for v in report["violations"] if v["kind"] == "unwitnessed_head"
                       and v["chain_id"] == f"{topics.raw}/0")
    assert unwitnessed["seq"] == 9 and unwitnessed["location"].startswith(f"{rewritten_prefix}{topics.sealed}/000/")
    fork = next(v for v in report["violations"] if v["kind"] == "witness_fork")
    assert fork["seq"] == PER_PARTITION - 1 and fork["location"] == str(witnessed)
    # the untouched archive still verifies, witnessed head included
    code, report, output = _verify(stack, topics, honest_prefix, "--policy", str(witness.policy_file),
                                   "--witnessed-head", str(witnessed), "--witness-tolerance", "0")
    assert code == 0 and report["intact"], output


def test_a_witness_that_is_down_delays_cosigning_never_sealing(stack, topics, witness, tmp_path):
    port = free_port()
    _emit(stack, topics)
    worker = _sealer(stack, topics, witness, tmp_path, port, "sealer")
    try:
        wait_until_sealed(stack, topics)
        _wait_cosigned(stack, topics, PER_PARTITION, range(topics.partitions))
        witness.stop()
        started = time.monotonic()
        _emit(stack, topics)  # 40 more per chain while the witness is away
        wait_until_sealed(stack, topics, timeout=60)
        sealing_s = time.monotonic() - started
        deadline = time.monotonic() + 30
        while max(metric_samples(port, "auditseal_sealer_witness_lag_seconds{")) < 3:
            assert time.monotonic() < deadline, "the lag did not grow while the witness was down"
            time.sleep(0.5)
        sealed = read_sealed(stack, topics)
        assert max(r["tree_size"] for _, k, r in sealed[0] if k == COSIGNATURE_KIND) == PER_PARTITION
        # the backlog the sealer holds for the absent witness: a few hashes per chain, not one per entry sealed
        deadline = time.monotonic() + 30
        while min(metric_samples(port, "auditseal_sealer_witness_behind_entries{")) < PER_PARTITION:
            assert time.monotonic() < deadline, "the entries behind the witness were not counted"
            time.sleep(0.5)
        held = metric_samples(port, "auditseal_sealer_witness_held_hashes{")
        assert len(held) == topics.partitions and max(held) <= 2 * (2 * PER_PARTITION).bit_length(), held
        witness.start()
        _wait_cosigned(stack, topics, 2 * PER_PARTITION, range(topics.partitions), timeout=60)
        deadline = time.monotonic() + 30
        while max(metric_samples(port, "auditseal_sealer_witness_lag_seconds{")) > 0:
            assert time.monotonic() < deadline, "the lag did not return to 0 once the witness was back"
            time.sleep(0.5)
        assert sum(metric_samples(port, "auditseal_sealer_witness_refusals_total{")) == 0
        assert max(metric_samples(port, "auditseal_sealer_witness_behind_entries{")) == 0
    finally:
        worker.terminate()
        worker.wait(30)
    print(f"sealed 80 events with the witness down in {sealing_s:.1f}s")


def test_a_restarted_sealer_proves_consistency_from_the_older_size_a_witness_holds(stack, topics, witness, tmp_path):
    # the witness misses sizes 50..80 (down); the restarted sealer knows its tree at 80 only and re-reads the
    # chain from the head of size 40 the witness holds, instead of raising a false alarm
    _emit(stack, topics)
    worker = _sealer(stack, topics, witness, tmp_path, free_port(), "first")
    try:
        wait_until_sealed(stack, topics)
        _wait_cosigned(stack, topics, PER_PARTITION, range(topics.partitions))
        witness.stop()
        _emit(stack, topics)
        wait_until_sealed(stack, topics, timeout=60)
    finally:
        worker.terminate()
        worker.wait(30)
    witness.start()
    port = free_port()
    worker = _sealer(stack, topics, witness, tmp_path, port, "restarted")
    try:
        _wait_cosigned(stack, topics, 2 * PER_PARTITION, range(topics.partitions), timeout=90)
        assert sum(metric_samples(port, "auditseal_sealer_witness_refusals_total{")) == 0
    finally:
        worker.terminate()
        worker.wait(30)
    log = (tmp_path / "restarted.log").read_text()
    assert log.count("a witness holds tree size 40, before this worker's 80: re-reading the chain") == 2, log[-3000:]
