"""Crypto-shredding on the real stack: protected events go producer -> sealer -> sink -> bucket, a subject is
erased, and afterwards the archive still verifies, every proof still holds, reveal says "erased", other
subjects are untouched, and no byte of the stack's data folders holds the subject's values or its key.

The attacks and faults come first: a producer that may not use the key store, a key store that is down,
a role that may read but not create keys, a wrong KEK, a truncated ciphertext, an unknown subject.
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
import time

import pytest
from confluent_kafka.admin import AdminClient

from pipeline.archive.encryption import generate_master_key, load_master_key
from pipeline.cli.main import main
from pipeline.config import KafkaSettings
from pipeline.dev.provision import acl_binding
from pipeline.permissions.topology import Grant, role_names
from pipeline.privacy.crypto import unwrap_key
from pipeline.privacy.keystore import KeyStore, KeyStoreUnavailableError, keystore_from_env
from pipeline.privacy.protector import PROTECTED_SUBJECTS, Protector, reveal
from pipeline.privacy.residue import scan
from pipeline.producer.client import AuditProducer, AuthorizationError, DeliveryError
from pipeline.producer.event import new_event
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.catalog import AUDIT_EVENT, SchemaCatalog, default_catalog
from pipeline.wire.codec import EventCodec, default_codec
from pipeline.wire.sealed import EVENT_KIND
from tests.support.archive import wait_for_archive
from tests.support.sealing import create_topics, delete_topics, start_sealer, start_sink, wait_until_sealed

pytestmark = pytest.mark.stack

RUN = secrets.token_hex(6)
ALICE = {"id": f"alice-{RUN}@example.org", "type": "USER", "source_ip": f"2001:db8::{RUN[:4]}:{RUN[4:]}",
         "user_agent": f"Mozilla/5.0 shred-test/{RUN}", "session_id": f"sess-{RUN}"}
CAROL = {"id": f"carol-{RUN}@example.org", "type": "USER", "source_ip": f"2001:db8::c:{RUN[:4]}",
         "user_agent": f"curl/8.{RUN}", "session_id": f"sess-c-{RUN}"}
BOB_EMAIL = f"bob-{RUN}@example.org"  # about bob, in events where alice acts: bob's key, not alice's
CANARY = f"canary-{RUN}"  # a non-personal value sent in plaintext: the scan must find it, or it proves nothing


def _event(actor, resource_id, personal_attributes=None, **extra):
    event = new_event(actor=actor, action="patient.record.read", resource={"type": "record", "id": resource_id},
                      outcome={"status": "SUCCESS"}, source_service="clinic", **extra)
    if personal_attributes:
        event["personal_attributes"] = personal_attributes
    return event


def _old_format(event, store):
    """``event`` protected as producers of audit_event.v2 wrote it (the per-value encoding: one AES-SIV
    ciphertext per field in ``protected_fields``), to be encoded with the v2 writer: what archives hold."""
    pseudonyms = store.pseudonym_key()
    actor, flagged = dict(event["actor"]), event.pop("personal_attributes")
    attributes, fields = dict(event["attributes"]), []
    values = [(f"actor.{name}", event["actor"]["id"], event["actor"][name])
              for name in ("id", "source_ip", "user_agent", "session_id")]
    values += [(f"attributes.{key}", subject_id, attributes[key]) for key, subject_id in flagged.items()]
    for dotted, subject_id, value in values:
        subject = pseudonyms.subject_pseudonym(subject_id)
        cipher = store.cipher_for(subject)
        fields.append({"field": dotted, "subject": subject, "key_id": cipher.key_id,
                       "ciphertext": cipher.encrypt(dotted, value)})
        where, name = dotted.split(".", 1)
        (actor if where == "actor" else attributes)[name] = subject if dotted == "actor.id" else \
            pseudonyms.pseudonym(dotted, value)
    return {**event, "actor": actor, "attributes": attributes, "protected_fields": fields}


def _env(monkeypatch, stack, role):
    for name, value in stack.env(role).items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def pipeline_run(stack, tmp_path_factory):
    """Protected events sealed and archived under a prefix of their own; what the tests need to find them."""
    work = tmp_path_factory.mktemp("privacy")
    profile = work / "compliance.yaml"
    profile.write_text("version: 1\ndefault: test\nprofiles:\n  test: {retention: 1d, why: tests}\n")
    topics = create_topics(stack, partitions=2)
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    # the erasure record (privacy) and the reveal's access record (access-auditor) are sealed into this
    # test's raw topic
    grants = [Grant("topic", topics.raw, "write"), Grant("topic", topics.raw, "describe")]
    bindings = [acl_binding(principal, g) for principal in ("User:privacy", "User:access-auditor") for g in grants]
    for future in admin.create_acls(bindings).values():
        future.result(timeout=30)
    # a prefix per fixture instance: test_timeline_privacy runs this fixture again, with the same subjects
    prefix = f"privacy-{RUN}-{secrets.token_hex(3)}/"
    ids = {"alice": [], "carol": [], "plain": [], "alice_v2": []}
    with keystore_from_env(stack.env("producer")) as store:
        protector = Protector(store)
        with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw,
                           protector=protector) as producer:
            for n in range(40):
                event = _event(ALICE, f"r-{n}", attributes={"patient_email": BOB_EMAIL, "ward": "3"},
                               personal_attributes={"patient_email": f"bob-{RUN}"})
                producer.emit(event)
                ids["alice"].append(event["event_id"])
                event = _event(CAROL, f"r-{n}")
                producer.emit(event)
                ids["carol"].append(event["event_id"])
            for event in synthetic_events(200, seed=18):
                producer.emit(event)
            canary = _event({"id": "User:svc-clinic", "type": "SERVICE"}, CANARY)
            producer.emit(canary)
            ids["plain"].append(canary["event_id"])
        # events in the encoding archives already hold (audit_event.v2, one ciphertext per value): reveal,
        # erase, verify and prove must keep working on them
        v2 = EventCodec(SchemaCatalog([v for v in default_catalog().versions(AUDIT_EVENT) if v.version <= 2]))
        with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw, codec=v2) as producer:
            for n in range(5):
                event = _old_format(_event(ALICE, f"v2-{n}", attributes={"patient_email": BOB_EMAIL, "ward": "3"},
                                           personal_attributes={"patient_email": f"bob-{RUN}"}), store)
                producer.emit(event)
                ids["alice_v2"].append(event["event_id"])
        pseudonyms = {name: protector.subject_pseudonym(actor["id"])
                      for name, actor in (("alice", ALICE), ("carol", CAROL))}
        pseudonyms["bob"] = protector.subject_pseudonym(f"bob-{RUN}")
        kek = store.kek
        wrapped = store.wrapped_keys(pseudonyms["alice"])
        key_ids = store.key_ids(pseudonyms["alice"])
    destroyed = [w for w in wrapped.values()] + [base64.b64encode(w) for w in wrapped.values()]
    materials = [unwrap_key(kek.key, w, "alice's key", kek.key_id) for w in wrapped.values()]
    destroyed += materials + [base64.b64encode(m) for m in materials] + [m.hex().encode() for m in materials]

    def seal_and_archive():
        sealer = start_sealer(stack, topics, checkpoint_records=50, checkpoint_ms=100, log=work / "sealer.log")
        try:
            sealed = wait_until_sealed(stack, topics)
        finally:
            sealer.send_signal(signal.SIGTERM)
            sealer.wait(60)
        sink = start_sink(stack, topics, "--prefix", prefix, "--compliance-file", str(profile), "--max-records",
                          "100", "--max-age-ms", "300", "--metrics-port", "0", group=f"auditseal-sink-test-{RUN}",
                          log=work / "sink.log")
        try:
            return wait_for_archive(stack, topics.sealed, {p: [o for o, _, _ in r] for p, r in sealed.items()}, prefix)
        finally:
            sink.send_signal(signal.SIGTERM)
            assert sink.wait(60) == 0, (work / "sink.log").read_text()

    seal_and_archive()
    yield {"topics": topics, "prefix": prefix, "ids": ids, "pseudonyms": pseudonyms, "destroyed": destroyed,
           "key_ids": key_ids,
           "seal_and_archive": seal_and_archive, "profile": profile, "work": work}
    delete_topics(stack, topics)


@pytest.fixture(autouse=True)
def access_spool(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDITSEAL_ACCESS_SPOOL", str(tmp_path / "access.jsonl"))
    return tmp_path / "access.jsonl"


def cached_key_ids(run) -> set[str]:
    return set(run["key_ids"])


def _reveal(capsys, monkeypatch, stack, run, *event_ids, kek_file=None):
    _env(monkeypatch, stack, "investigator")
    if kek_file:
        monkeypatch.setenv("AUDITSEAL_KEK_FILE", str(kek_file))
    capsys.readouterr()
    code = main(["reveal", *event_ids, "--reason", "case INC-7", "--s3", f"s3://audit-archive/{run['prefix']}",
                 "--json"])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


# -- attacks and faults first ---------------------------------------------------------------------


def test_a_producer_cannot_read_the_key_store_with_its_own_credential(stack):
    with pytest.raises(KeyStoreUnavailableError, match="(?i)authoriz.*as producer"):
        KeyStore(KafkaSettings.from_env(stack.env("producer")), load_master_key(stack.root / "keys" / "kek.json"),
                 timeout=10).open()


def test_the_siem_cannot_read_the_key_store(stack):
    with pytest.raises(KeyStoreUnavailableError, match="(?i)authoriz.*as siem"):
        KeyStore(KafkaSettings.from_env(stack.env("siem")), load_master_key(stack.root / "keys" / "kek.json"),
                 timeout=10).open()


@pytest.mark.parametrize("role_name", role_names())
def test_only_the_privacy_roles_read_and_only_privacy_writes_the_key_store(stack, role_name):
    from confluent_kafka import Consumer, Producer, TopicPartition

    from pipeline.wire.topics import KEYS_TOPIC

    settings = KafkaSettings.from_env(stack.env(role_name))
    consumer = Consumer(settings.client_config(**{"group.id": "auditseal-keystore-probe", "enable.auto.commit": False,
                                                  "auto.offset.reset": "earliest"}))
    consumer.assign([TopicPartition(KEYS_TOPIC, 0, 0)])
    message = consumer.poll(10)
    consumer.close()
    read_error = message.error().str() if message is not None and message.error() else None
    if role_name in ("privacy", "investigator"):
        assert message is not None and read_error is None, read_error
    else:
        assert read_error is not None and "authorization failed" in read_error.lower(), (role_name, read_error)
    outcome: list = []
    producer = Producer(settings.client_config(**{"message.timeout.ms": 10000, "enable.idempotence": False}))
    # a tombstone of a key that never existed: harmless if it were accepted, and only privacy's may be
    producer.produce(KEYS_TOPIC, key=f"probe/{RUN}".encode(), value=None, on_delivery=lambda e, _m: outcome.append(e))
    producer.flush(15)
    if role_name == "privacy":
        assert outcome == [None]
    else:
        assert outcome and outcome[0] is not None and "authorization" in outcome[0].str().lower(), (role_name, outcome)


def test_a_key_store_that_is_down_refuses_the_emit_and_sends_nothing(stack, monkeypatch, capsys):
    from tests.support.sealing import free_port

    _env(monkeypatch, stack, "producer")
    monkeypatch.setenv("AUDITSEAL_BOOTSTRAP", f"localhost:{free_port()}")  # nothing listens there
    code = main(["emit", "--protect", "--actor-id", f"down-{RUN}", "--action", "a.b", "--resource-type", "t",
                 "--resource-id", "1", "--source-service", "s"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "key store audit.keys at localhost:" in err and "did not answer" in err


def test_a_new_subject_is_refused_when_the_store_cannot_create_its_key(stack):
    # the investigator may read keys but not write them: the new subject's event must not be sent at all
    settings = KafkaSettings.from_env(stack.env("investigator"))
    with KeyStore(settings, load_master_key(stack.root / "keys" / "kek.json"), timeout=10) as store:
        protector = Protector(store)
        with pytest.raises(KeyStoreUnavailableError, match="refused the write as investigator: .*(?i:authorization)"):
            protector.protect(_event({"id": f"new-{RUN}", "type": "USER"}, "x"))


def test_erasing_an_unknown_subject_is_one_clear_error(stack, monkeypatch, capsys):
    _env(monkeypatch, stack, "privacy")
    assert main(["erase", f"nobody-{RUN}", "--reason", "request 9"]) == 1
    err = capsys.readouterr().err
    assert "holds no key of subject p1." in err and f"nobody-{RUN}" not in err


def test_reveal_with_a_wrong_kek_says_so(stack, pipeline_run, monkeypatch, capsys, tmp_path):
    other_id = generate_master_key(tmp_path / "other.json", key_id="kek-other")
    code, result, _ = _reveal(capsys, monkeypatch, stack, pipeline_run, pipeline_run["ids"]["carol"][0],
                              kek_file=tmp_path / "other.json")
    assert code == 1 and other_id.key_id == "kek-other"
    fields = result[pipeline_run["ids"]["carol"][0]]["fields"]
    assert all("is wrapped with KEK 'kek-1', not with the KEK given ('kek-other')" in f["error"]
               for f in fields.values())
    # same id, other bytes: the key wrap's integrity check catches it
    same_id = tmp_path / "same-id.json"
    generate_master_key(same_id, key_id="kek-1")
    code, result, _ = _reveal(capsys, monkeypatch, stack, pipeline_run, pipeline_run["ids"]["carol"][0],
                              kek_file=same_id)
    assert code == 1
    assert all("does not unwrap with KEK 'kek-1'" in f["error"]
               for f in result[pipeline_run["ids"]["carol"][0]]["fields"].values())


def test_reveal_and_erase_usage_errors_are_one_line_each(stack, pipeline_run, monkeypatch, capsys):
    missing = "00000000-0000-4000-8000-000000000000"
    code, result, _ = _reveal(capsys, monkeypatch, stack, pipeline_run, missing)
    assert code == 1 and result[missing]["error"].startswith(f"no archived event {missing} under ")
    monkeypatch.delenv("AUDITSEAL_KEK_FILE")
    assert main(["reveal", missing, "--reason", "x", "--dir", "."]) == 2
    assert capsys.readouterr().err.startswith("auditseal: configuration error: personal-data protection needs the "
                                               "key-encryption key: set AUDITSEAL_KEK_FILE")
    _env(monkeypatch, stack, "privacy")
    assert main(["erase", ALICE["id"], "--reason", "  "]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--reason must say why" in err


def test_a_truncated_ciphertext_is_one_clear_error(stack, pipeline_run):
    with keystore_from_env(stack.env("investigator")) as store:
        event = dict(Protector(store).protect(_event(CAROL, "t")))  # carol has a key: nothing is created
        event[PROTECTED_SUBJECTS] = [dict(g) for g in event[PROTECTED_SUBJECTS]]  # the protector's are shared
        event[PROTECTED_SUBJECTS][0]["ciphertext"] = event[PROTECTED_SUBJECTS][0]["ciphertext"][:-4]
        revealed = reveal(event, store)
    # one ciphertext holds all of carol's fields: each is named unreadable, with the subject, nothing shown
    assert sorted(revealed) == ["actor.id", "actor.session_id", "actor.source_ip", "actor.user_agent"]
    for outcome in revealed.values():
        assert "value" not in outcome and "actor.source_ip" in outcome["error"]
        assert "truncated, altered or not this subject's" in outcome["error"]


# -- the pipeline ---------------------------------------------------------------------------------


def test_no_plaintext_reaches_the_sealed_log_and_the_siem_sees_pseudonyms(stack, pipeline_run):
    from tests.support.archive import read_archive
    from tests.support.sealing import read_sealed

    sealed = read_sealed(stack, pipeline_run["topics"])
    codec, seen = default_codec(), set()
    for records in sealed.values():
        for _, kind, record in records:
            if kind != EVENT_KIND:
                continue
            for plaintext in (*ALICE.values(), *CAROL.values(), BOB_EMAIL):
                if plaintext != "USER":
                    assert plaintext.encode() not in record["event"]
            seen.add(codec.decode(record["event"])["actor"]["id"])
    assert pipeline_run["pseudonyms"]["alice"] in seen and pipeline_run["pseudonyms"]["carol"] in seen
    archive = read_archive(stack, pipeline_run["topics"].sealed, pipeline_run["prefix"])
    assert archive.objects


def test_reveal_decrypts_chosen_events_and_records_the_access_first(stack, pipeline_run, monkeypatch, capsys,
                                                                    access_spool):
    alice_event = pipeline_run["ids"]["alice"][3]
    code, result, _ = _reveal(capsys, monkeypatch, stack, pipeline_run, alice_event)
    assert code == 0
    fields = {name: f["value"] for name, f in result[alice_event]["fields"].items()}
    assert fields == {"actor.id": ALICE["id"], "actor.source_ip": ALICE["source_ip"],
                      "actor.user_agent": ALICE["user_agent"], "actor.session_id": ALICE["session_id"],
                      "attributes.patient_email": BOB_EMAIL}
    records = [json.loads(line) for line in access_spool.read_text().splitlines()]
    assert [r["action"] for r in records] == ["privacy.reveal"]
    old_format = pipeline_run["ids"]["alice_v2"][1]  # an event archived in the per-value encoding of v2
    code, result, _ = _reveal(capsys, monkeypatch, stack, pipeline_run, old_format)
    assert code == 0 and {name: f["value"] for name, f in result[old_format]["fields"].items()} == fields
    assert records[0]["actor"]["id"] == "User:investigator" and records[0]["outcome"]["reason"] == "case INC-7"
    assert alice_event in records[0]["resource"]["id"] and ALICE["id"] not in access_spool.read_text()


def test_a_reveal_is_sealed_by_the_sealer_and_archived_with_a_proof(stack, pipeline_run, monkeypatch, capsys,
                                                                   access_spool, tmp_path):
    from pipeline.access.auditor import AccessAuditor
    from pipeline.archive.container import read_archived_records
    from pipeline.wire.sealed import sealed_codecs
    from pipeline.wire.topics import AUDIT_TOPICS

    run = pipeline_run
    revealed = run["ids"]["carol"][7]
    code, result, _ = _reveal(capsys, monkeypatch, stack, run, revealed)
    assert code == 0 and result[revealed]["fields"]["actor.id"]["value"] == CAROL["id"]
    (record,) = [json.loads(line) for line in access_spool.read_text().splitlines()]
    # the access auditor forwards the spool (as in production; its broker log is not this test's business)
    authorizer_log = tmp_path / "authorizer.log"
    authorizer_log.write_text("")
    with AuditProducer(KafkaSettings.from_env(stack.env("access-auditor")), topic=run["topics"].raw) as producer:
        auditor = AccessAuditor(producer, authorizer_log=authorizer_log, spool=access_spool,
                                state_file=tmp_path / "position.json", own_principal="User:access-auditor",
                                audit_topics=AUDIT_TOPICS)
        assert auditor.run(once=True, report=lambda _line: None) == 1
    archive = run["seal_and_archive"]()  # the real sealer seals it, the sink archives it under Object Lock

    codecs, codec, found = sealed_codecs(), default_codec(), []
    for versions in archive.objects.values():
        for row in read_archived_records(versions[0]):
            if codecs.kind_of(row["value"]) == EVENT_KIND:
                event = codec.decode(codecs.decode(row["value"])[1]["event"])
                if str(event["event_id"]) == record["event_id"]:
                    found.append(event)
    assert len(found) == 1, f"the reveal's access record {record['event_id']} is not in the archive exactly once"
    (sealed,) = found
    assert sealed["action"] == "privacy.reveal" and sealed["actor"]["id"] == "User:investigator"
    assert sealed["outcome"]["reason"] == "case INC-7" and revealed in sealed["resource"]["id"]
    # what was revealed is never in the record of the reveal: only which events, and why
    assert CAROL["id"] not in json.dumps(sealed, default=str)
    # a signed checkpoint covers it: its inclusion proof verifies against the keyring, and the archive is whole
    _env(monkeypatch, stack, "verifier")
    proof = tmp_path / "reveal-proof.json"
    assert main(["prove", record["event_id"], "--s3", f"s3://audit-archive/{run['prefix']}", "--out", str(proof)]) == 0
    assert main(["verify-proof", str(proof), "--keyring", str(stack.keyring_file)]) == 0
    capsys.readouterr()
    assert main(["verify", "--keyring", str(stack.keyring_file), "--s3", f"s3://audit-archive/{run['prefix']}",
                 "--compliance-file", str(run["profile"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["violations"] == []


def test_a_reveal_whose_access_record_cannot_be_delivered_shows_nothing(stack, pipeline_run, monkeypatch, capsys):
    # where no access auditor forwards the spool (a Kubernetes Job, compose), reveal delivers the record itself
    # first; if that fails, no plaintext is printed
    monkeypatch.setenv("AUDITSEAL_ACCESS_RECORD_SASL_USERNAME", "access-auditor")
    monkeypatch.setenv("AUDITSEAL_ACCESS_RECORD_SASL_PASSWORD", "not-the-password")
    event_id = pipeline_run["ids"]["carol"][9]
    code, result, err = _reveal(capsys, monkeypatch, stack, pipeline_run, event_id)
    assert code == 1 and result is None
    assert err.count("\n") == 1 and "the access record (privacy.reveal " in err
    assert "was not delivered to audit.access as access-auditor" in err
    assert CAROL["id"] not in err


def test_the_investigator_reveals_but_can_neither_write_the_log_nor_create_or_destroy_keys(stack, pipeline_run,
                                                                                           monkeypatch, capsys):
    from confluent_kafka import Consumer, TopicPartition

    from pipeline.wire.topics import RAW_TOPIC, SEALED_TOPIC

    settings = KafkaSettings.from_env(stack.env("investigator"))
    # it cannot forge or suppress its own access records: no write to audit.raw (the auditor forwards them)
    with pytest.raises((AuthorizationError, DeliveryError), match="principal 'investigator' (lacks WRITE on 'audit.raw'|may not write to topic 'audit.raw')"):
        with AuditProducer(settings, config={"log_level": 2}) as producer:
            producer.emit(_event({"id": "User:investigator", "type": "SERVICE"}, "forged")).wait(30)
    # nor read the raw topic (which may hold events of producers that do not protect personal data)
    consumer = Consumer(settings.client_config(**{"group.id": "auditseal-investigator-probe",
                                                  "enable.auto.commit": False}))
    try:
        assert consumer.list_topics(RAW_TOPIC, timeout=10).topics[RAW_TOPIC].error is not None
        assert consumer.list_topics(SEALED_TOPIC, timeout=10).topics[SEALED_TOPIC].error is None
        consumer.assign([TopicPartition(RAW_TOPIC, 0, 0)])
        message = consumer.poll(5)
        assert message is None or message.error() is not None
    finally:
        consumer.close()
    # nor erase: the tombstones are refused and nothing is destroyed
    _env(monkeypatch, stack, "investigator")
    capsys.readouterr()
    assert main(["erase", CAROL["id"], "--reason", "not mine to do", "--raw-topic", pipeline_run["topics"].raw]) == 1
    assert "investigator" in capsys.readouterr().err
    with keystore_from_env(stack.env("investigator")) as store:
        assert store.key_ids(pipeline_run["pseudonyms"]["carol"]) != ()


def test_erase_then_everything_still_verifies_and_the_subject_is_gone(stack, pipeline_run, monkeypatch, capsys,
                                                                     tmp_path):
    run = pipeline_run
    certificate = tmp_path / "certificate.json"
    # before: the key store's segment holds alice's wrapped key (so the scan below looks for something real)
    before = scan([stack.root / "kafka" / "data"], run["destroyed"])
    assert any("audit.keys-0" in path for paths in before.values() for path in paths), before
    # a producer running during the erasure: it has alice's key cached
    running_store = keystore_from_env(stack.env("producer")).open()
    running = Protector(running_store)
    cached_key = running.protect(_event(ALICE, "before"))[PROTECTED_SUBJECTS][0]["key_id"]
    assert cached_key in cached_key_ids(run)
    _env(monkeypatch, stack, "privacy")
    assert main(["erase", ALICE["id"], "--reason", "GDPR Art. 17 request 2026-118", "--certificate",
                 str(certificate), "--raw-topic", run["topics"].raw]) == 0, capsys.readouterr().err
    cert = json.loads(certificate.read_text())
    assert cert["subject_pseudonym"] == run["pseudonyms"]["alice"] and cert["erased_by"] == "User:privacy"
    assert cert["reason"] == "GDPR Art. 17 request 2026-118" and cert["key_store"]["compaction"]["state"] == "done"
    assert ALICE["id"] not in certificate.read_text()
    # "done" covers the replaced segment file too: the broker unlinked it (its scheduler may run a few
    # seconds late on a busy machine; residue after that fails here)
    assert cert["key_store"]["compaction"]["file_delete_delay_ms"] == 1000
    keys_folder = stack.root / "kafka" / "data" / f"{cert['key_store']['topic']}-0"
    deadline = time.monotonic() + 10
    while any(keys_folder.glob("*.deleted")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(keys_folder.glob("*.deleted")), sorted(keys_folder.iterdir())
    # a second erase says it was done, and when
    capsys.readouterr()
    assert main(["erase", ALICE["id"], "--reason", "again", "--raw-topic", run["topics"].raw]) == 1
    assert f"was already erased on {cert['erased_at']} by User:privacy" in capsys.readouterr().err

    # the running producer saw the tombstones: it never encrypts under the destroyed key again
    assert running_store.key_ids(run["pseudonyms"]["alice"]) == ()
    after = running.protect(_event(ALICE, "after"))[PROTECTED_SUBJECTS][0]["key_id"]
    running_store.close()
    assert after != cached_key and after not in cert["destroyed_key_ids"]

    run["seal_and_archive"]()  # the erasure record is sealed and archived like any event

    # the archive still verifies, whole
    _env(monkeypatch, stack, "verifier")
    capsys.readouterr()
    assert main(["verify", "--keyring", str(stack.keyring_file), "--s3", f"s3://audit-archive/{run['prefix']}",
                 "--compliance-file", str(run["profile"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["violations"] == []
    # every proof of the erased subject's events still verifies, and the erasure record has one too
    for event_id in (run["ids"]["alice"][0], run["ids"]["alice"][-1], run["ids"]["alice_v2"][0],
                     cert["erasure_event_id"]):
        proof = tmp_path / f"{event_id}.json"
        assert main(["prove", event_id, "--s3", f"s3://audit-archive/{run['prefix']}", "--out", str(proof)]) == 0
        assert main(["verify-proof", str(proof), "--keyring", str(stack.keyring_file)]) == 0
    capsys.readouterr()

    # reveal: alice's fields are erased, bob's value in alice's event and carol are untouched
    alice_event, carol_event, old_format = run["ids"]["alice"][3], run["ids"]["carol"][3], run["ids"]["alice_v2"][2]
    code, result, _ = _reveal(capsys, monkeypatch, stack, run, alice_event, carol_event, old_format)
    assert code == 0
    for event_id in (alice_event, old_format):  # both encodings: alice gone, bob's value in her event kept
        alice_fields = result[event_id]["fields"]
        for name in ("actor.id", "actor.source_ip", "actor.user_agent", "actor.session_id"):
            assert f"was erased on {cert['erased_at']} by User:privacy" in alice_fields[name]["erased"]
        assert alice_fields["attributes.patient_email"]["value"] == BOB_EMAIL
    assert result[carol_event]["fields"]["actor.id"]["value"] == CAROL["id"]

    # the erasure record in the log names the pseudonym and the reason, never the subject
    from tests.support.sealing import read_sealed

    codec, erasures = default_codec(), []
    for records in read_sealed(stack, run["topics"]).values():
        for _, kind, record in records:
            if kind == EVENT_KIND:
                event = codec.decode(record["event"])
                if event["action"] == "privacy.subject.erase":
                    erasures.append(event)
    assert [(e["resource"]["id"], e["outcome"]["reason"], e["actor"]["id"]) for e in erasures] == [
        (run["pseudonyms"]["alice"], "GDPR Art. 17 request 2026-118", "User:privacy")]

    # every byte of the stack's data folders: Kafka segments (all topics, the key store's too), the S3
    # server's data and the rest of the stack folder
    personal = [v.encode() for k, v in ALICE.items() if k != "type"]
    # objects other tests damaged on purpose (a rewritten object of the incremental verify's attack) are
    # searched as far as they read and listed; none of them may be this run's: those must read whole
    damaged: list[str] = []
    found = scan([stack.root], [*personal, *run["destroyed"], CANARY.encode(), CAROL["id"].encode()], damaged)
    assert not [path for path in damaged if f"/{run['prefix'].strip('/')}/" in path], damaged
    assert found.get(CANARY.encode()), "the scan does not see plaintext values at all: it proves nothing"
    assert any("/kafka/" in p for p in found[CANARY.encode()]) and any("/s3/" in p for p in found[CANARY.encode()])
    leaks = {needle: paths for needle, paths in found.items() if needle != CANARY.encode()}
    assert leaks == {}, leaks


# -- the KEK in a PKCS#11 token ------------------------------------------------------------------


def test_a_kek_in_the_token_wraps_inside_it_and_an_erasure_still_destroys_the_key(stack, monkeypatch):
    from confluent_kafka.admin import NewTopic
    from pkcs11 import Attribute

    from pipeline.dev.hsm import KEYSTORE_TOKEN
    from pipeline.errors import ConfigError
    from pipeline.privacy.keystore import KEYS_TOPIC_CONFIGS, SubjectErasedError, kek_from_env
    from pipeline.privacy.provision import TOKEN_KEK_LABEL
    from pipeline.privacy.records import subject_key_name

    token_env = {**stack.hsm.env(KEYSTORE_TOKEN), "AUDITSEAL_KEK": f"pkcs11:{TOKEN_KEK_LABEL}"}
    monkeypatch.setenv("SOFTHSM2_CONF", token_env["SOFTHSM2_CONF"])
    kek = kek_from_env(token_env)
    # a key of the token that cannot leave it: wrapping and unwrapping happen inside the token
    assert kek.key_id.startswith("kek-hsm-")
    assert kek._key[Attribute.EXTRACTABLE] is False and kek._key[Attribute.SENSITIVE] is True
    with pytest.raises(ConfigError, match="not both"):
        kek_from_env({**token_env, "AUDITSEAL_KEK_FILE": str(stack.root / "keys" / "kek.json")})
    with pytest.raises(ConfigError, match="expected pkcs11:LABEL"):
        kek_from_env({"AUDITSEAL_KEK": str(stack.root / "keys" / "kek.json")})
    with pytest.raises(ConfigError, match="expected one AES master key labelled 'no-such-kek'"):
        kek_from_env({**token_env, "AUDITSEAL_KEK": "pkcs11:no-such-kek"})

    setup = KafkaSettings.from_env(stack.setup_env("kafka"))
    admin = AdminClient(setup.client_config())
    topic = f"test.keys.hsm.{RUN}"
    for future in admin.create_topics([NewTopic(topic, 1, 1, config=KEYS_TOPIC_CONFIGS)]).values():
        future.result(timeout=30)
    dana = {"id": f"dana-{RUN}@example.org", "type": "USER", "source_ip": f"2001:db8::d:{RUN[:4]}",
            "user_agent": f"hsm-test/{RUN}"}
    try:
        with KeyStore(setup, kek, topic=topic) as store:
            store.ensure_pseudonym_key()
            protected = Protector(store).protect(_event(dana, "h"))
            subject = protected["actor"]["id"]
            (key_id,) = store.key_ids(subject)
            wrapped = store.wrapped_keys(subject)[key_id]
            assert reveal(protected, store)["actor.source_ip"]["value"] == dana["source_ip"]
        # another KEK (the stack's file) cannot read what the token wrapped, and says which KEK it needs
        with KeyStore(setup, load_master_key(stack.root / "keys" / "kek.json"), topic=topic) as other:
            assert f"is wrapped with KEK {kek.key_id!r}" in reveal(protected, other)["actor.id"]["error"]
        with KeyStore(setup, kek, topic=topic) as store:  # a fresh reader: unwrapped by the token again
            assert reveal(protected, store)["actor.id"]["value"] == dana["id"]
            store.erase(subject, "User:privacy", f"e-dana-{RUN}")
            store.force_compaction(subject, (key_id,), timeout=180)
            with pytest.raises(SubjectErasedError, match="erased on .* by User:privacy"):
                store.cipher(subject, key_id)
        # the destroyed key's record is gone from the topic's files; its tombstone (which names it) is there,
        # so the scan does see the segment it searched
        folder = stack.root / "kafka" / "data" / f"{topic}-0"
        # the broker unlinks a compacted-away segment (renamed *.deleted) file.delete.delay.ms (1 s) after the
        # swap, and force_compaction waited that long; the broker's scheduler may run late on a busy machine
        # (a bounded wait), and a *.deleted file still there after that is residue, which the scan finds
        deadline = time.monotonic() + 30
        while any(folder.glob("*.deleted")) and time.monotonic() < deadline:
            time.sleep(1)
        found = scan([folder], [wrapped, base64.b64encode(wrapped), wrapped.hex().encode(),
                                subject_key_name(subject, key_id).encode()])
        assert list(found) == [subject_key_name(subject, key_id).encode()], found
    finally:
        for future in admin.delete_topics([topic]).values():
            future.result(timeout=30)


# -- losing the key store, backup and restore -----------------------------------------------------


def test_backup_and_restore_bring_keys_back_but_never_an_erased_one(stack, tmp_path, monkeypatch, capsys):
    from confluent_kafka.admin import NewTopic

    from pipeline.privacy.backup import BackupFileError, backup, restore
    from pipeline.privacy.keystore import KEYS_TOPIC_CONFIGS, PseudonymKeyMissingError, SubjectErasedError

    setup = KafkaSettings.from_env(stack.setup_env("kafka"))
    kek = load_master_key(stack.root / "keys" / "kek.json")
    admin = AdminClient(setup.client_config())
    topic = f"test.keys.{RUN}"

    def create():
        for future in admin.create_topics([NewTopic(topic, 1, 1, config=KEYS_TOPIC_CONFIGS)]).values():
            future.result(timeout=30)

    def delete():
        for future in admin.delete_topics([topic]).values():
            future.result(timeout=30)

    create()
    try:
        with KeyStore(setup, kek, topic=topic) as store:
            pseudonym_key = store.ensure_pseudonym_key()
            alice, bob = pseudonym_key.subject_pseudonym("alice"), pseudonym_key.subject_pseudonym("bob")
            alice_cipher, bob_cipher = store.cipher_for(alice), store.cipher_for(bob)
            alice_secret = alice_cipher.encrypt("actor.id", "alice")
            older = tmp_path / "before-the-erasure.backup"
            assert backup(setup, topic, older) == 3  # pseudonym key, alice's and bob's keys
            store.erase(bob, "User:privacy", "e-bob")
            # a backup older than the erasure, restored into the store that knows of it: bob stays erased
            assert restore(store, older) == (2, [bob])
        with KeyStore(setup, kek, topic=topic) as store:
            assert store.key_ids(bob) == () and store.erasure(bob) is not None
        path = tmp_path / "keys.backup"
        assert backup(setup, topic, path) == 3  # pseudonym key, alice's key, bob's erasure (no tombstone)
        assert path.stat().st_mode & 0o777 == 0o600 and b"alice" not in path.read_bytes()

        delete()  # the key store is lost: nobody may go on as if nothing happened
        with pytest.raises(KeyStoreUnavailableError, match=f"key store {topic}"):
            KeyStore(setup, kek, topic=topic, timeout=10).open()
        create()
        with KeyStore(setup, kek, topic=topic) as empty:
            with pytest.raises(PseudonymKeyMissingError, match="holds no pseudonym key"):
                Protector(empty)  # a producer refuses rather than invent new pseudonyms
            written, erased = restore(empty, path)
        assert (written, erased) == (3, [bob])

        with KeyStore(setup, kek, topic=topic) as restored:
            assert restored.pseudonym_key() == pseudonym_key  # the same pseudonyms as before the loss
            assert restored.cipher(alice, alice_cipher.key_id).decrypt("actor.id", alice_secret) == "alice"
            with pytest.raises(SubjectErasedError, match="erased on .* by User:privacy"):
                restored.cipher(bob, bob_cipher.key_id)
        path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
        with KeyStore(setup, kek, topic=topic) as restored, pytest.raises(BackupFileError, match="truncated"):
            restore(restored, path)
    finally:
        delete()

    # the command, against the real key store, as the privacy role
    _env(monkeypatch, stack, "privacy")
    out = tmp_path / "audit-keys.backup"
    capsys.readouterr()
    assert main(["keystore", "backup", "--out", str(out)]) == 0
    assert f"to {out}" in capsys.readouterr().out and json.loads(out.read_text().splitlines()[0])["records"] >= 2
