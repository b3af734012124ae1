"""OCSF mapping of sealed records: every produced event valid against the official OCSF schema source,
its integrity evidence re-verifiable with the keyring alone, and every tampering caught."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from pipeline.detector.app import alert_event
from pipeline.integrity.keyring import Keyring, SigningKey
from pipeline.producer.event import new_event
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.siem import ocsf
from pipeline.siem.batches import PartitionMapper
from pipeline.siem.evidence import EvidenceError, verify_record
from pipeline.wire.codec import default_codec
from tests.support.ocsf_schema import ocsf_errors, schema_version

KEY = SigningKey.from_seed(bytes(range(32)))
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in µs
KEYRING = Keyring().rotate(KEY.public_key, T0 - 10**9)


def _alert() -> dict:
    record = {"alert_id": "6f1c8f43-7a4e-5f0b-9d69-2f9e1b0c0a11", "rule": "denied_burst", "severity": "CRITICAL",
              "principal": "User:siem", "raised_at": T0, "window_start": T0 - 10**6, "window_end": T0, "count": 12,
              "threshold": 10, "summary": "User:siem was denied 12 times in 60 s",
              "evidence_event_ids": ["0b0e6c9a-1d3f-4a57-8c2e-9f1a2b3c4d5e"], "attributes": {"topic": "audit.raw"}}
    return alert_event(record, principal="User:detector")


def _sealed_values(events: int = 60, checkpoint_every: int = 25) -> list[bytes]:
    """The values a sealer writes to one partition: events, two rejections, an alert, a login, checkpoints."""
    codec = default_codec()
    raw = [codec.encode(event) for event in synthetic_events(events, seed=19)]
    raw.insert(3, b"not an audit event")
    raw.insert(7, b"\xc3\x01" + bytes(8) + b"unknown fingerprint")
    raw.append(codec.encode(_alert()))
    raw.append(codec.encode(new_event(actor={"id": "alice", "type": "USER", "source_ip": "192.0.2.7"},
                                      action="session.logout", resource={"type": "session", "id": "s-1"},
                                      outcome={"status": "SUCCESS"}, source_service="auth")))
    sealer = ChainSealer.resume("audit.raw/2", 2, KEY, None)
    values = []
    for offset, value in enumerate(raw):
        values.append(sealer.seal(value, offset, T0 + offset).value)
        if sealer.pending == checkpoint_every:
            values.append(sealer.checkpoint(T0 + 10**6 + offset).value)
    values.append(sealer.checkpoint(T0 + 2 * 10**6).value)
    return values


def _documents(values: list[bytes], format: str = "ocsf", native: bool = True) -> list[dict]:
    mapper = PartitionMapper("audit.sealed", 2, format=format, native=native)
    documents = []
    for offset, value in enumerate(values):
        documents += mapper.add(offset, value, T0 // 1000)
    return [json.loads(document.json) for document in documents + mapper.flush()]


@pytest.fixture(scope="module", params=[True, False], ids=["compiled", "reference"])
def documents(request) -> list[dict]:
    """The documents of the compiled writer (where it maps) and of the readable mapping alone."""
    return _documents(_sealed_values(), native=request.param)


def test_the_compiled_writer_is_built_and_used():
    from pipeline.siem.fast import event_writer

    assert event_writer("audit.sealed", 2) is not None, "pipeline.native.ocsf_writer is not built: run make venv"
    values = _sealed_values(30)
    assert _documents(values) == _documents(values, native=False)


def test_the_schema_source_is_ocsf_1_9_with_the_record_integrity_profile():
    assert schema_version() == ocsf.OCSF_VERSION


def test_every_record_kind_maps_to_a_valid_ocsf_event(documents):
    for document in documents:
        assert ocsf_errors(document) == [], json.dumps(document)[:400]
    classes = {document["class_uid"] for document in documents}
    assert classes == {ocsf.API_ACTIVITY, ocsf.AUTHENTICATION, ocsf.DETECTION_FINDING, ocsf.APPLICATION_ERROR,
                       ocsf.EVENT_LOG_ACTIVITY}
    # one document per sealed record, in chain order, each checkpoint after the entries it signs
    entries = [d for d in documents if d["class_uid"] != ocsf.EVENT_LOG_ACTIVITY]
    assert [d["unmapped"]["auditseal"]["seq"] for d in entries] == list(range(len(entries)))
    assert [d["unmapped"]["auditseal"]["sealed"]["offset"] for d in documents] == list(range(len(documents)))


def test_the_validator_refuses_what_ocsf_does_not_allow(documents):
    event = copy.deepcopy(next(d for d in documents if d["class_uid"] == ocsf.API_ACTIVITY))
    del event["attestation_list"][0]["fingerprint"], event["attestation_list"][0]["signatures"]
    assert ocsf_errors(event), "an attestation with neither fingerprint nor signatures is not OCSF"
    event = copy.deepcopy(next(d for d in documents if d["class_uid"] == ocsf.API_ACTIVITY))
    event["actor"]["nickname"] = "x"
    assert any("nickname" in error for error in ocsf_errors(event))
    event = copy.deepcopy(next(d for d in documents if d["class_uid"] == ocsf.API_ACTIVITY))
    del event["api"]
    assert any("api" in error for error in ocsf_errors(event))


def test_classes_follow_the_documented_table(documents):
    by_action = {d.get("api", {}).get("operation") or d.get("finding_info", {}).get("title"): d for d in documents}
    logins = [d for d in documents if d["class_uid"] == ocsf.AUTHENTICATION]
    assert {d["activity_id"] for d in logins} == {1, 2}  # session.login (synthetic) and session.logout
    assert all(d["user"]["uid"] for d in logins)
    alert = by_action["denied_burst"]
    assert alert["class_uid"] == ocsf.DETECTION_FINDING and alert["severity_id"] == 5
    assert alert["finding_info"]["uid"] == "6f1c8f43-7a4e-5f0b-9d69-2f9e1b0c0a11"
    rejection = next(d for d in documents if d["class_uid"] == ocsf.APPLICATION_ERROR)
    assert "not an audit event" not in rejection["message"] and rejection["status_code"] == "REJECTED"
    assert ocsf.api_activity_of("document.read") == (2, "Read")
    assert ocsf.api_activity_of("user.role.grant") == (3, "Update")
    assert ocsf.api_activity_of("invoice.pay") == (99, "Other")


def test_every_signed_record_reverifies_against_the_keyring(documents):
    for document in documents:
        verified = verify_record(document, KEYRING)
        assert verified.key_id == KEY.key_id
        if document["class_uid"] != ocsf.EVENT_LOG_ACTIVITY:
            evidence = document["unmapped"]["auditseal"]
            assert verified.seq == evidence["seq"] == int(document["metadata"]["uid"].rsplit(":", 1)[1])


def _tampered(document: dict, change) -> dict:
    copied = copy.deepcopy(document)
    change(copied)
    return copied


def _flip_entry(document: dict) -> None:
    entry = bytearray(base64.b64decode(document["unmapped"]["auditseal"]["entry"]))
    entry[-1] ^= 1
    document["unmapped"]["auditseal"]["entry"] = base64.b64encode(bytes(entry)).decode()


@pytest.mark.parametrize("change, reason", [
    (_flip_entry, "hashes to"),
    (lambda d: d["actor"]["user"].update(uid="mallory"), "actor"),
    (lambda d: d.update(time=d["time"] + 1), "time"),
    (lambda d: d["metadata"].update(original_event_uid="00000000-0000-0000-0000-000000000000"), "original_event_uid"),
    (lambda d: d["unmapped"]["auditseal"]["inclusion"]["audit_path"].reverse(), "audit path"),
    (lambda d: d["unmapped"]["auditseal"]["checkpoint"].update(last_seq=d["unmapped"]["auditseal"]["checkpoint"]
                                                                ["last_seq"] + 1), "signature"),
    (lambda d: d["unmapped"]["auditseal"]["checkpoint"].update(signature="00" * 64), "signature"),
    (lambda d: d["attestation_list"][0]["fingerprint"].update(value="00" * 32), "fingerprint"),
    (lambda d: d["unmapped"].pop("auditseal"), "no unmapped.auditseal"),
])
def test_tampering_with_a_record_is_caught(documents, change, reason):
    original = next(d for d in documents if d["class_uid"] == ocsf.API_ACTIVITY
                    and len(d["unmapped"]["auditseal"]["inclusion"]["audit_path"]) > 1)
    with pytest.raises(EvidenceError, match=reason):
        verify_record(_tampered(original, change), KEYRING)


def test_a_key_outside_the_keyring_is_refused(documents):
    other = Keyring().rotate(SigningKey.from_seed(bytes(32)).public_key, T0 - 10**9)
    with pytest.raises(EvidenceError, match="does not hold"):
        verify_record(documents[0], other)


def test_unreadable_records_become_unmapped_events_with_the_bytes_hash():
    values = _sealed_values(10, checkpoint_every=100)
    future = b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + b"a record of a future schema"
    values.insert(4, future)
    documents = _documents(values)
    assert documents == _documents(values, native=False)
    unmapped = [d for d in documents if d["class_uid"] == ocsf.BASE_EVENT]
    assert len(unmapped) == 1 and ocsf_errors(unmapped[0]) == []
    evidence = unmapped[0]["unmapped"]["auditseal"]
    import hashlib
    assert evidence["value_sha256"] == hashlib.sha256(future).hexdigest() == \
        unmapped[0]["attestation_list"][0]["fingerprint"]["value"]
    assert evidence["schema_fingerprint"] == "0123456789abcdef"
    assert documents.index(unmapped[0]) == 4  # in its place, not dropped nor moved
    with pytest.raises(EvidenceError, match="no chain evidence"):
        verify_record(unmapped[0], KEYRING)
    # the records around it still verify
    for document in documents:
        if document is not unmapped[0]:
            verify_record(document, KEYRING)


def test_an_incomplete_batch_is_released_without_a_signature_and_says_why():
    values = _sealed_values(30, checkpoint_every=10)
    documents = _documents(values[3:])  # the topic's retention removed the first records of a batch
    assert documents == _documents(values[3:], native=False)
    first = documents[0]
    assert ocsf_errors(first) == []
    assert "incomplete batch" in first["unmapped"]["auditseal"]["evidence_error"]
    assert "signatures" not in first["attestation_list"][0]
    with pytest.raises(EvidenceError, match="no covering checkpoint"):
        verify_record(first, KEYRING)
    later = [d for d in documents if d["class_uid"] == ocsf.API_ACTIVITY and "evidence_error" not in
             d["unmapped"]["auditseal"]]
    assert later and all(verify_record(d, KEYRING) for d in later)


def test_entries_wait_for_their_checkpoint():
    values = _sealed_values(5, checkpoint_every=100)
    mapper = PartitionMapper("audit.sealed", 2)
    released = [mapper.add(offset, value) for offset, value in enumerate(values[:-1])]
    assert not any(released) and mapper.held == len(values) - 1 and mapper.first_held_offset == 0
    batch = mapper.add(len(values) - 1, values[-1])
    assert len(batch) == len(values) and mapper.held == 0


def test_json_format_carries_the_record_fields(documents):
    plain = _documents(_sealed_values(), format="json")
    assert len(plain) == len(documents)
    event = next(d for d in plain if d["kind"] == "event")
    assert len(bytes.fromhex(event["hash"])) == 32 and "event_id" in event["event_decoded"]
    assert {d["kind"] for d in plain} == {"event", "rejection", "checkpoint"}
    json.dumps(plain)


def test_the_by_hand_recipe_of_the_siem_guide_verifies_and_refuses(documents, tmp_path):
    """docs/verify_ocsf_record.py (stdlib + cryptography, no AuditSeal import) agrees with verify_record."""
    import subprocess
    import sys
    from pathlib import Path

    from pipeline.integrity.keyring import save_keyring

    script = Path(__file__).resolve().parents[2] / "docs" / "verify_ocsf_record.py"
    keyring = tmp_path / "keyring.json"
    save_keyring(KEYRING, keyring)
    signed = [d for d in documents if d["class_uid"] != ocsf.BASE_EVENT][:40:7]

    def run(document: dict) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(keyring)], input=json.dumps(document),
                              capture_output=True, text=True, timeout=60)

    for document in signed:
        result = run(document)
        assert result.returncode == 0 and result.stdout.startswith("OK"), result.stdout + result.stderr
    result = run(_tampered(signed[1], _flip_entry))
    assert result.returncode == 1 and "do not hash" in result.stdout
    result = run(_tampered(signed[1], lambda d: d["unmapped"]["auditseal"]["checkpoint"].update(signature="00" * 64)))
    assert result.returncode == 1 and "signature" in result.stdout


def test_json_format_writes_bytes_as_hex_timestamps_as_micros_and_uuids_as_text():
    import datetime
    import uuid

    mapper = PartitionMapper("audit.sealed", 2, format="json")
    when = datetime.datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=datetime.UTC)
    document = mapper._document({"hash": b"\x01\xff", "occurred_at": when, "event_id": uuid.UUID(int=1),
                                 "nested": {"list": (b"\x02",)}})
    assert json.loads(document.json) == {"hash": "01ff", "occurred_at": T0 + 5,
                                         "event_id": "00000000-0000-0000-0000-000000000001",
                                         "nested": {"list": ["02"]}}
