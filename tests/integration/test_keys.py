"""Key custody on the real stack: the sealer signing in SoftHSM2, rotation under load, revocation, the token
refusing to give its keys away, and configuration mistakes that must stop the sealer before it seals anything.

Each test uses its own key label in the stack's sealer token and its own keyring file, so rotating or
revoking here never touches the keys the rest of the suite verifies against.
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
from confluent_kafka import Consumer, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.integrity.chain_state import ViolationKind
from pipeline.integrity.keyring import load_keyring
from pipeline.keys.pkcs11 import Pkcs11Config, open_token
from pipeline.keys.store import SigningKeyStore
from pipeline.producer.client import AuditProducer
from pipeline.producer.event import complete_event
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import CHECKPOINT_KIND
from pipeline.wire.topics import RAW_TOPIC
from tests.support.sealing import (
    REPO,
    audit,
    create_topics,
    delete_topics,
    raw_end_offsets,
    read_sealed,
    sealed_source_offsets,
    stop_worker,
    wait_until_sealed,
)

pytestmark = pytest.mark.stack
COMPROMISED_KEY = ViolationKind.COMPROMISED_KEY


@pytest.fixture()
def topics(stack):
    created = create_topics(stack, partitions=3)
    _wait_for_grants(stack, created)
    yield created
    delete_topics(stack, created)


def _wait_for_grants(stack, topics) -> None:
    # the broker applies new ACLs asynchronously: wait until the producer may see the raw topic
    from pipeline.errors import AuditSealError

    deadline = time.monotonic() + 30
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw) as producer:
        while True:
            try:
                producer.check(timeout=5)
                return
            except AuditSealError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


@pytest.fixture()
def custody(stack, tmp_path):
    """The variables of a key label and keyring of this test's own, in the stack's sealer token."""
    stack.hsm.use_conf()
    return {**stack.custody_env(), "AUDITSEAL_KEYRING": str(tmp_path / "keyring.json"),
            "AUDITSEAL_SIGNING_KEY_LABEL": f"test-{secrets.token_hex(4)}"}


def _keys(stack, custody, *args: str) -> subprocess.CompletedProcess:
    # as an operator runs it: the token and keyring, and a Kafka identity that may write audit.raw
    env = {**os.environ, **stack.env("producer"), **custody}
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", "keys", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _start_sealer(stack, topics, env_overrides: dict[str, str], log: Path) -> subprocess.Popen:
    env = {**os.environ, **stack.env("sealer"), **env_overrides}
    argv = [sys.executable, "-m", "pipeline.cli.main", "seal", "--raw-topic", topics.raw, "--sealed-topic",
            topics.sealed, "--app-id", topics.app_id, "--metrics-port", "0", "--checkpoint-records", "500",
            "--checkpoint-ms", "100"]
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def _emit(stack, topics, count: int, seed: int, rate: float | None = None) -> None:
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw) as producer:
        started = time.monotonic()
        for index, event in enumerate(synthetic_events(count, seed=seed)):
            producer.emit(event)
            if rate is not None and (ahead := index / rate - (time.monotonic() - started)) > 0:
                time.sleep(ahead)


def _checkpoints(sealed) -> list[dict]:
    return [record for records in sealed.values() for _, kind, record in records if kind == CHECKPOINT_KIND]


def _key_events(stack, since: dict[int, int]) -> list[dict]:
    """The key-operation events written to the stack's audit.raw after the offsets ``since``."""
    consumer = Consumer(KafkaSettings.from_env(stack.env("sealer")).client_config(**{
        "group.id": f"auditseal-sealer-test-{secrets.token_hex(4)}", "enable.auto.commit": False,
        "isolation.level": "read_committed"}))
    codec = default_codec()
    found = []
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(RAW_TOPIC, p), timeout=30)[1] for p in since}
        consumer.assign([TopicPartition(RAW_TOPIC, p, since[p]) for p in since if ends[p] > since[p]])
        remaining = sum(ends[p] - since[p] for p in since)
        deadline = time.monotonic() + 60
        while remaining > 0 and time.monotonic() < deadline:
            for message in consumer.consume(1000, 1.0):
                if message.error():
                    continue
                remaining -= 1
                try:
                    event = codec.decode(message.value())
                except Exception:  # other tests' garbled records share audit.raw
                    continue
                if event["source_service"] == "auditseal-keys":
                    found.append(event)
    finally:
        consumer.close()
    return found


def _raw_ends(stack) -> dict[int, int]:
    consumer = Consumer(KafkaSettings.from_env(stack.env("sealer")).client_config(**{
        "group.id": "auditseal-sealer-test-ends"}))
    try:
        metadata = consumer.list_topics(RAW_TOPIC, timeout=30)
        return {p: consumer.get_watermark_offsets(TopicPartition(RAW_TOPIC, p), timeout=30)[1]
                for p in metadata.topics[RAW_TOPIC].partitions}
    finally:
        consumer.close()


def _emit_until(stack, topics, stop: threading.Event, rate: float, emitted: list[int]) -> None:
    events = list(synthetic_events(5_000, seed=11))
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw) as producer:
        started = time.monotonic()
        index = 0
        while not stop.is_set():
            event = dict(events[index % len(events)])
            event.pop("event_id")  # a fresh id each time
            producer.emit(complete_event(event))
            index += 1
            if (ahead := index / rate - (time.monotonic() - started)) > 0:
                time.sleep(ahead)
    emitted.append(index)


def test_rotation_under_load_leaves_no_gap_no_fork_and_both_keys_verify(stack, topics, custody, tmp_path):
    before = _raw_ends(stack)
    init = _keys(stack, custody, "init")
    assert init.returncode == 0, init.stderr
    first = load_keyring(custody["AUDITSEAL_KEYRING"]).active.key_id
    worker = _start_sealer(stack, topics, custody, tmp_path / "sealer.log")
    stop, emitted = threading.Event(), []
    load = threading.Thread(target=_emit_until, args=(stack, topics, stop, 2_000, emitted))
    try:
        load.start()
        deadline = time.monotonic() + 90
        while not _checkpoints(read_sealed(stack, topics)):  # the sealer is sealing under the first key
            assert time.monotonic() < deadline and worker.poll() is None, "the sealer did not start sealing"
            time.sleep(0.5)
        rotate = _keys(stack, custody, "rotate", "--lead", "3")
        assert rotate.returncode == 0, rotate.stderr
        time.sleep(8)  # the switch comes 3 s after the rotation; keep the load on well past it
        stop.set()
        load.join()
        sealed = wait_until_sealed(stack, topics, timeout=180)
        assert worker.poll() is None, "the sealer kept running through the rotation"
    finally:
        stop.set()
        load.join()
        stop_worker(worker)
    keyring = load_keyring(custody["AUDITSEAL_KEYRING"])
    second = keyring.active.key_id
    switch = keyring.get(second).valid_from_micros
    assert second != first and keyring.get(first).valid_until_micros == switch
    # no gap, no duplicate: every raw offset sealed once, in order
    ends = raw_end_offsets(stack, topics)
    assert sum(ends.values()) == emitted[0] > 10_000
    offsets = sealed_source_offsets(sealed)
    assert all(offsets[p] == list(range(end)) for p, end in ends.items())
    # no fork and every checkpoint verifies, each under the key valid at its time
    auditor = audit(stack, sealed, custody["AUDITSEAL_KEYRING"])
    assert auditor.violations == []
    assert auditor.checkpoints_valid == auditor.checkpoints_checked
    checkpoints = _checkpoints(sealed)
    by_key = {key: [c for c in checkpoints if c["key_id"] == key] for key in (first, second)}
    assert by_key[first] and by_key[second], "both keys signed part of the stream"
    assert all(c["issued_at_micros"] < switch for c in by_key[first])
    assert all(c["issued_at_micros"] >= switch for c in by_key[second])
    assert set(c["key_id"] for c in checkpoints) == {first, second}
    # each operation is an event in the log
    events = _key_events(stack, before)
    assert {(e["action"], e["resource"]["id"]) for e in events} >= {("key.init", first), ("key.rotate", second)}


def test_rotate_writes_the_keyring_a_full_lead_before_the_switch(stack, custody):
    # the switch is timed from the moment the keyring is written: the token login, the key generation and
    # the log's check before it took seconds right after a fresh `dev up`, and a switch timed from the start
    # of the command had passed before the keyring said so (checkpoints of the old key after its window)
    assert _keys(stack, custody, "init").returncode == 0
    rotate = _keys(stack, custody, "rotate", "--lead", "3")
    assert rotate.returncode == 0, rotate.stderr
    written = os.stat(custody["AUDITSEAL_KEYRING"]).st_mtime_ns // 1000
    switch = max(entry.valid_from_micros for entry in load_keyring(custody["AUDITSEAL_KEYRING"]))
    assert switch - written >= 3_000_000 - 50_000, f"the keyring was written {(switch - written) / 1e6:.2f}s before"


def test_a_revoked_key_is_refused_by_the_sealer_and_its_later_checkpoints_are_reported(stack, topics, custody,
                                                                                      tmp_path):
    assert _keys(stack, custody, "init").returncode == 0
    key_id = load_keyring(custody["AUDITSEAL_KEYRING"]).active.key_id
    log = tmp_path / "sealer.log"
    worker = _start_sealer(stack, topics, custody, log)
    try:
        _emit(stack, topics, 1_500, seed=21)
        early = wait_until_sealed(stack, topics)
        compromised_since = time.time_ns() // 1000
        time.sleep(0.5)
        _emit(stack, topics, 1_500, seed=22)
        wait_until_sealed(stack, topics)
        revoke = _keys(stack, custody, "revoke", key_id, "--compromised-since", str(compromised_since))
        assert revoke.returncode == 0, revoke.stderr
        assert "sealers refuse to sign with it" in revoke.stderr
        sealed_before_refusal = read_sealed(stack, topics)
        # the sealer now refuses to sign with the revoked key: it stops, and seals nothing more
        _emit(stack, topics, 300, seed=23)
        worker.wait(120)
        assert worker.returncode != 0
    finally:
        stop_worker(worker)
    assert "revoked as compromised" in log.read_text()
    after = read_sealed(stack, topics)
    assert _checkpoints(after) == _checkpoints(sealed_before_refusal)
    auditor = audit(stack, after, custody["AUDITSEAL_KEYRING"])
    # each checkpoint signed after the compromise, and each tree head signed beside it, is flagged
    flagged = [v for v in auditor.violations if v.kind == COMPROMISED_KEY and not v.detail.startswith("tree head")]
    heads = [v for v in auditor.violations if v.kind == COMPROMISED_KEY and v.detail.startswith("tree head")]
    late = [c for c in _checkpoints(after) if c["issued_at_micros"] >= compromised_since]
    assert late and len(flagged) == len(late) and len(heads) == len(late)
    assert {v.kind for v in auditor.violations} == {COMPROMISED_KEY}
    assert all(key_id in v.detail and "after its compromise" in v.detail for v in flagged + heads)
    # what it signed before the compromise still verifies
    assert audit(stack, early, custody["AUDITSEAL_KEYRING"]).violations == []


def test_the_private_key_cannot_be_read_out_of_the_token(stack, custody):
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism

    store = SigningKeyStore(custody)
    signer = store.generate()
    key = signer.private_key_object
    assert key[Attribute.SENSITIVE] is True and key[Attribute.EXTRACTABLE] is False
    assert key[Attribute.ALWAYS_SENSITIVE] is True and key[Attribute.NEVER_EXTRACTABLE] is True
    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        key[Attribute.VALUE]
    token = store.token()
    wrapping = token.session.generate_key(KeyType.AES, 256, store=False,
                                          template={Attribute.WRAP: True, Attribute.EXTRACTABLE: True})
    with pytest.raises(pkcs11.exceptions.KeyUnextractable):
        wrapping.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
    with pytest.raises(pkcs11.exceptions.PKCS11Error):
        key[Attribute.EXTRACTABLE] = True  # CKA_EXTRACTABLE may only ever become false
    assert key[Attribute.EXTRACTABLE] is False
    # the master key too
    archive = open_token(Pkcs11Config.from_env(stack.hsm.env("auditseal-archive")))
    master = archive.master_key("auditseal-master")
    assert master._key[Attribute.SENSITIVE] is True and master._key[Attribute.EXTRACTABLE] is False
    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        master._key[Attribute.VALUE]
    # and the signatures it makes verify with the public half alone
    signer.public_key.verify(signer.sign(b"checkpoint bytes"), b"checkpoint bytes")
    assert store.destroy(signer.key_id).startswith("private key")


@pytest.mark.parametrize(("change", "message"), [
    ({"AUDITSEAL_PKCS11_PIN": "000000", "AUDITSEAL_PKCS11_PIN_FILE": ""}, "refused the PIN"),
    ({"AUDITSEAL_PKCS11_MODULE": "/nonexistent/libpkcs11.so"}, "no such file"),
    ({"AUDITSEAL_SIGNING_KEY_LABEL": "no-such-label"}, "holds no signing key"),
    ({"AUDITSEAL_PKCS11_TOKEN": "no-such-token"}, "has no token labelled 'no-such-token'"),
])
def test_a_misconfigured_token_stops_the_sealer_with_one_message_and_exit_2(stack, topics, tmp_path, change,
                                                                             message):
    _emit(stack, topics, 200, seed=31)
    log = tmp_path / "sealer.log"
    worker = _start_sealer(stack, topics, change, log)
    assert worker.wait(120) == 2
    output = log.read_text().strip().splitlines()
    assert len(output) == 1 and output[0].startswith("auditseal: configuration error: ") and message in output[0], \
        output
    assert read_sealed(stack, topics) == {}, "nothing sealed"


def test_a_key_the_keyring_does_not_know_is_never_used(stack, topics, custody, tmp_path):
    # the token holds a key under the label, but the keyring names another: the sealer refuses at start
    SigningKeyStore(custody).generate()
    other = {**custody, "AUDITSEAL_SIGNING_KEY_LABEL": f"other-{secrets.token_hex(4)}"}
    assert _keys(stack, other, "init").returncode == 0
    _emit(stack, topics, 200, seed=41)
    log = tmp_path / "sealer.log"
    worker = _start_sealer(stack, topics, custody, log)
    assert worker.wait(120) == 2
    assert "does not hold it" in log.read_text()
    assert read_sealed(stack, topics) == {}


def test_export_prints_the_keyring_and_c2sp_verifier_keys(stack, custody):
    assert _keys(stack, custody, "init").returncode == 0
    exported = _keys(stack, custody, "export", "--json", "--name", "example.org/audit")
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    keyring = load_keyring(custody["AUDITSEAL_KEYRING"])
    assert [k["key_id"] for k in document["keys"]] == [e.key_id for e in keyring]
    assert document["keys"][0]["verifier_key"].startswith("example.org/audit+")
    assert "recorded as event" in exported.stderr


def test_the_archive_master_key_in_the_token_encrypts_and_decrypts_the_archive(stack, tmp_path):
    from pipeline.archive.encryption import DecryptionError, MasterKey, decrypt_object, encrypt_object
    from pipeline.archive.layout import Manifest
    from pipeline.config import S3Settings
    from pipeline.keys.master import load_master_key_spec
    from tests.support.archive import check_archive, seal_in_process, wait_for_archive
    from tests.support.sealing import start_sink

    stack.hsm.use_conf()
    os.environ.update({k: v for k, v in stack.hsm.env("auditseal-archive").items()})
    try:
        master = load_master_key_spec("pkcs11:auditseal-master")
    finally:
        for name in stack.hsm.env("auditseal-archive"):
            if name != "SOFTHSM2_CONF":
                os.environ.pop(name, None)
    # deterministic, so a retried write rewrites the same bytes
    assert encrypt_object(b"container", "k.avro.enc", master) == encrypt_object(b"container", "k.avro.enc", master)
    topics = create_topics(stack, partitions=2)
    profile = tmp_path / "compliance.yaml"
    profile.write_text("version: 1\ndefault: test\nprofiles:\n  test: {retention: 1d, why: tests}\n")
    try:
        entries = seal_in_process(stack, topics, 2_000, seed=51)
        sealed = read_sealed(stack, topics)
        prefix = f"hsm-{secrets.token_hex(3)}/"
        sink = start_sink(stack, topics, "--prefix", prefix, "--compliance-file", str(profile), "--max-age-ms", "500",
                          "--metrics-port", "0", group=f"auditseal-sink-test-{secrets.token_hex(4)}",
                          log=tmp_path / "sink.log", env={"AUDITSEAL_MASTER_KEY": "pkcs11:auditseal-master"})
        try:
            archive = wait_for_archive(stack, topics.sealed, {p: [o for o, _, _ in r] for p, r in sealed.items()},
                                       prefix=prefix)
        finally:
            sink.send_signal(signal.SIGTERM)
            assert sink.wait(60) == 0, (tmp_path / "sink.log").read_text()
        assert all(key.endswith(".avro.enc") for key in archive.objects)
        auditor = check_archive(stack, archive, sealed, master_key=master)
        assert auditor.violations == [] and auditor.entries_checked == entries
        key, versions = next(iter(archive.objects.items()))
        manifest = Manifest.from_bytes(archive.manifests[key][0])
        assert manifest.encryption.master_key_id == master.key_id
        with pytest.raises(DecryptionError, match="does not unwrap"):
            decrypt_object(versions[0], key, manifest.encryption, MasterKey(master.key_id, bytes(32)))
        # the verifier reaches the same key through its own login to the archive token
        settings = S3Settings.from_env(stack.env("verifier"))
        verify = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "verify", "--s3",
                                 f"s3://{settings.bucket}/{prefix}{topics.sealed}/", "--compliance-file", str(profile),
                                 "--master-key", "pkcs11:auditseal-master", "--json"],
                                env={**os.environ, **stack.env("verifier")}, cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        report = json.loads(verify.stdout)
        assert report["intact"] and report["records"]["entries"] == entries
    finally:
        delete_topics(stack, topics)
