"""Tampering with an archive the real pipeline made (producer -> sealer -> sink -> bucket) is found by
``auditseal verify``, which names the kind, object key, chain and seq; the untouched archive verifies.

The archive is made once per module; each --dir case alters its own copy of a local download. Where
the tamperer could also fix the manifest (sha256, size, counts, chains, checkpoint hashes), the case
does, so the chain-level finding is what is asserted, not only the manifest mismatch."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import secrets
import shutil
import signal

import fastavro
import pytest

from pipeline.archive.container import archived_record_schema, read_archived_records, summarise
from pipeline.archive.layout import Manifest, manifest_key, object_key, parse_key, sync_marker
from pipeline.cli.main import main
from pipeline.config import S3Settings
from pipeline.integrity.checkpoint import sign_checkpoint
from pipeline.integrity.keyring import generate_signing_key
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import (
    CHECKPOINT_KIND,
    ENTRY_KINDS,
    checkpoint_from_record,
    checkpoint_record,
    sealed_codecs,
)
from tests.support.archive import wait_for_archive
from tests.support.sealing import create_topics, delete_topics, seal_events, start_sink

pytestmark = pytest.mark.stack

EVENTS = 600


@pytest.fixture(scope="module")
def archived(stack, tmp_path_factory):
    """(topics, prefix, local copy root, profile file): EVENTS events over 2 chains, a checkpoint per
    <= 40 entries, objects of <= 90 records under a unique prefix, downloaded to a local tree."""
    work = tmp_path_factory.mktemp("tamper")
    profile = work / "compliance.yaml"
    profile.write_text("version: 1\ndefault: test\nprofiles:\n  test: {retention: 1d, why: tests}\n")
    topics = create_topics(stack, partitions=2)
    prefix = f"tamper-{secrets.token_hex(4)}/"
    sealed = seal_events(stack, topics, synthetic_events(EVENTS, seed=77), work / "sealer.log")
    sink = start_sink(stack, topics, "--prefix", prefix, "--compliance-file", str(profile), "--max-records", "90",
                      "--max-age-ms", "300", "--metrics-port", "0", group=f"auditseal-sink-test-{secrets.token_hex(4)}",
                      log=work / "sink.log")
    try:
        archive = wait_for_archive(stack, topics.sealed, {p: [o for o, _, _ in r] for p, r in sealed.items()}, prefix)
    finally:
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(60) == 0, (work / "sink.log").read_text()
    root = work / "copy"
    for key, versions in {**archive.objects, **{manifest_key(k): v for k, v in archive.manifests.items()}}.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(versions[-1])
    yield topics, prefix, root, profile
    delete_topics(stack, topics)


@pytest.fixture()
def copy(archived, tmp_path):
    """A fresh copy of the downloaded archive for one test to alter."""
    _, _, root, _ = archived
    target = tmp_path / "archive"
    shutil.copytree(root, target)
    return target


@pytest.fixture(autouse=True)
def access_spool(monkeypatch, tmp_path):
    """Each verify run's access record goes to the test's own spool: it is not under test here."""
    monkeypatch.setenv("AUDITSEAL_ACCESS_SPOOL", str(tmp_path / "access.jsonl"))


def _verify(capsys, monkeypatch, stack, *args, role_env=None):
    for name, value in (role_env or {}).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main(["verify", "--keyring", str(stack.keyring_file), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def _objects(root):
    """Object keys of the partition with the most objects, in offset order (the producer's sticky
    partitioner may fill one partition more than the other), at least three of them."""
    partitions: dict[int, list[str]] = {}
    for path in root.rglob("*.avro"):
        key = path.relative_to(root).as_posix()
        partitions.setdefault(parse_key(key).partition, []).append(key)
    keys = sorted(max(partitions.values(), key=len))
    assert len(keys) >= 3, f"too few objects to tamper with: {partitions}"
    return keys


def _rows(root, key):
    return list(read_archived_records((root / key).read_bytes()))


def _write(root, key, rows, *, fix_manifest: bool) -> None:
    """Re-encode an object with the sink's schema and sync marker; optionally recompute its manifest
    as a clever tamperer would (sha256, size, counts, chains, checkpoint hashes)."""
    parsed = parse_key(key)
    out = io.BytesIO()
    fastavro.writer(out, archived_record_schema(), rows, codec="deflate",
                    sync_marker=sync_marker(parsed.topic, parsed.partition, parsed.first_offset))
    body = out.getvalue()
    (root / key).write_bytes(body)
    if fix_manifest:
        path = root / manifest_key(key)
        manifest = Manifest.from_bytes(path.read_bytes())
        _, counts, chains, checkpoints = summarise([(r["offset"], 0, r["value"]) for r in rows])
        path.write_bytes(dataclasses.replace(
            manifest, sha256=hashlib.sha256(body).hexdigest(), size=len(body), record_count=len(rows),
            record_kinds=counts, chains=tuple(chains), checkpoints=tuple(checkpoints)).to_bytes())


def _decoded(row):
    return sealed_codecs().decode(row["value"])


def _middle_entry(rows):
    """Index of an event entry in the middle of an object, with entries on both sides."""
    for index in range(len(rows) // 2, len(rows) - 1):
        kinds = [_decoded(rows[i])[0] for i in (index - 1, index, index + 1)]
        if kinds == [b"event"] * 3:
            return index
    raise AssertionError("no event entry between two events")


def _found(report, kind, key, chain_id=None, seq=None):
    """The violations of ``kind`` at ``key`` (and chain, seq when given)."""
    return [v for v in report["violations"] if v["kind"] == kind and v["location"].startswith(key)
            and (chain_id is None or v["chain_id"] == chain_id) and (seq is None or v["seq"] == seq)]


def test_the_untouched_copy_verifies(stack, copy, capsys, monkeypatch):
    code, report = _verify(capsys, monkeypatch, stack, "--dir", str(copy))
    assert code == 0 and report["intact"], report["violations"]
    assert report["objects"]["checked"] >= 4 and report["records"]["entries"] == EVENTS
    assert report["checkpoints"]["valid"] == report["checkpoints"]["checked"] > 0


@pytest.mark.parametrize("fix_manifest", [False, True], ids=["manifest-kept", "manifest-recomputed"])
def test_an_edited_field_inside_a_sealed_event(stack, copy, capsys, monkeypatch, fix_manifest):
    key = _objects(copy)[1]
    rows = _rows(copy, key)
    index = _middle_entry(rows)
    codecs, codec = sealed_codecs(), default_codec()
    _, sealed = _decoded(rows[index])
    event = codec.decode(sealed["event"])
    event["action"] = "document.nothing_to_see"
    sealed["event"] = codec.encode(event)
    rows[index]["value"] = codecs.event.encode(sealed)
    _write(copy, key, rows, fix_manifest=fix_manifest)
    code, report = _verify(capsys, monkeypatch, stack, "--dir", str(copy))
    assert code == 1
    assert _found(report, "altered_record", key, sealed["chain_id"], sealed["seq"]), report["violations"]
    assert bool(_found(report, "manifest_mismatch", key)) is not fix_manifest


def test_a_deleted_record(stack, copy, capsys, monkeypatch):
    key = _objects(copy)[1]
    rows = _rows(copy, key)
    index = _middle_entry(rows)
    _, removed = _decoded(rows.pop(index))
    _write(copy, key, rows, fix_manifest=True)
    code, report = _verify(capsys, monkeypatch, stack, "--dir", str(copy))
    assert code == 1 and _found(report, "gap", key, removed["chain_id"], removed["seq"]), report["violations"]
    assert not _found(report, "manifest_mismatch", key)


def test_an_inserted_record(stack, copy, capsys, monkeypatch):
    # a forged, self-consistent entry after a checkpoint, at the offset of the transaction's commit marker
    key = _objects(copy)[1]
    rows = _rows(copy, key)
    at = next(i for i in range(len(rows) - 1) if _decoded(rows[i])[0] == CHECKPOINT_KIND
              and rows[i + 1]["offset"] > rows[i]["offset"] + 1 and _decoded(rows[i + 1])[0] == b"event")
    _, following = _decoded(rows[at + 1])
    from pipeline.integrity.chain import chain_hash
    from pipeline.wire.sealed import event_payload

    event = next(iter(synthetic_events(1, seed=99)))
    forged = dict(following, event=default_codec().encode(event), source_offset=following["source_offset"] + 10**6)
    forged["hash"] = chain_hash(forged["prev_hash"], forged["seq"], event_payload(
        forged["source_partition"], forged["source_offset"], forged["source_timestamp_micros"], forged["event"]))
    rows.insert(at + 1, dict(rows[at + 1], offset=rows[at]["offset"] + 1, value=sealed_codecs().event.encode(forged)))
    _write(copy, key, rows, fix_manifest=True)
    code, report = _verify(capsys, monkeypatch, stack, "--dir", str(copy))
    assert code == 1
    assert _found(report, "fork", key, following["chain_id"], following["seq"]), report["violations"]
    assert _found(report, "checkpoint_mismatch", key, following["chain_id"]), report["violations"]
    assert not _found(report, "altered_record", key)


def test_two_records_swapped(stack, copy, capsys, monkeypatch):
    key = _objects(copy)[1]
    rows = _rows(copy, key)
    index = _middle_entry(rows)
    _, first = _decoded(rows[index])
    rows[index]["value"], rows[index + 1]["value"] = rows[index + 1]["value"], rows[index]["value"]
    _write(copy, key, rows, fix_manifest=True)
    code, report = _verify(capsys, monkeypatch, stack, "--dir", str(copy))
    assert code == 1 and _found(report, "reorder", key, first["chain_id"], first["seq"]), report["violations"]
    assert _found(report, "gap", key, first["chain_id"], first["seq"])


def test_a_deleted_object(stack, copy, capsys, monkeypatch):
    keys = _objects(copy)
    deleted, following = keys[1], keys[2]
    first_seq = next(r for k, r in map(_decoded, _rows(copy, deleted)) if k in ENTRY_KINDS)
    (copy / deleted).unlink()
    (copy / manifest_key(deleted)).unlink()
    code, report = _verify(capsys, monkeypatch, stack, "--dir", str(copy))
    assert code == 1
    assert _found(report, "gap", following, first_seq["chain_id"], first_seq["seq"]), report["violations"]


def test_an_object_copied_under_another_key(stack, copy, capsys, monkeypatch):
    keys = _objects(copy)
    source, last = parse_key(keys[0]), parse_key(keys[-1])
    offset = last.last_offset + 1000
    target = object_key(source.topic, source.partition, offset, offset + source.last_offset - source.first_offset,
                        prefix=source.prefix)
    shutil.copy(copy / keys[0], copy / target)
    shutil.copy(copy / manifest_key(keys[0]), copy / manifest_key(target))
    _, first = next((k, r) for k, r in map(_decoded, _rows(copy, keys[0])) if k in ENTRY_KINDS)
    code, report = _verify(capsys, monkeypatch, stack, "--dir", str(copy))
    assert code == 1
    assert _found(report, "manifest_mismatch", target), report["violations"]
    assert _found(report, "reorder", target, first["chain_id"], first["seq"]), report["violations"]


def _alter_checkpoint(copy, alter):
    """Apply ``alter`` to the first checkpoint of a middle object; (key, checkpoint)."""
    key = _objects(copy)[1]
    rows = _rows(copy, key)
    index = next(i for i, row in enumerate(rows) if _decoded(row)[0] == CHECKPOINT_KIND)
    _, record = _decoded(rows[index])
    checkpoint = alter(checkpoint_from_record(record))
    rows[index]["value"] = sealed_codecs().checkpoint.encode(checkpoint_record(checkpoint, record["last_source_offset"]))
    _write(copy, key, rows, fix_manifest=True)
    return key, checkpoint


def test_a_replaced_checkpoint_signature(stack, copy, capsys, monkeypatch):
    key, checkpoint = _alter_checkpoint(copy, lambda c: dataclasses.replace(c, signature=bytes(64)))
    code, report = _verify(capsys, monkeypatch, stack, "--dir", str(copy))
    assert code == 1
    assert _found(report, "bad_signature", key, checkpoint.chain_id, checkpoint.last_seq), report["violations"]
    assert not _found(report, "manifest_mismatch", key)


def test_a_checkpoint_signed_by_an_unknown_key(stack, copy, capsys, monkeypatch):
    stranger = generate_signing_key()
    key, checkpoint = _alter_checkpoint(copy, lambda c: sign_checkpoint(c, stranger))
    code, report = _verify(capsys, monkeypatch, stack, "--dir", str(copy))
    assert code == 1
    assert _found(report, "unknown_key", key, checkpoint.chain_id, checkpoint.last_seq), report["violations"]
    assert stack.signer().key_id != stranger.key_id


def test_the_bucket_archive_verifies(stack, archived, capsys, monkeypatch):
    _, prefix, _, profile = archived
    settings = S3Settings.from_env(stack.env("verifier"))
    code, report = _verify(capsys, monkeypatch, stack, "--s3", f"s3://{settings.bucket}/{prefix}",
                           "--compliance-file", str(profile), role_env=stack.env("verifier"))
    assert code == 0 and report["intact"], report["violations"]
    assert report["records"]["entries"] == EVENTS


def test_an_object_without_lock_is_reported(stack, archived, capsys, monkeypatch):
    _, prefix, root, profile = archived
    admin = S3Settings.from_env(stack.env("admin"))
    s3 = admin.client()
    source = _objects(root)[0]
    target = f"unlocked-{secrets.token_hex(4)}/" + source[len(prefix):]
    for key in (target, manifest_key(target)):
        s3.put_object(Bucket=admin.bucket, Key=key, Body=(root / (prefix + key.split("/", 1)[1])).read_bytes())
    try:
        code, report = _verify(capsys, monkeypatch, stack, "--s3", f"s3://{admin.bucket}/{target.split('/')[0]}/",
                               "--compliance-file", str(profile), role_env=stack.env("verifier"))
        assert code == 1 and _found(report, "not_locked", target), report["violations"]
    finally:
        for key in (target, manifest_key(target)):
            for version in s3.list_object_versions(Bucket=admin.bucket, Prefix=key).get("Versions", []):
                s3.delete_object(Bucket=admin.bucket, Key=key, VersionId=version["VersionId"])


def test_prove_an_archived_event_and_verify_the_proof_offline(stack, archived, copy, capsys, tmp_path):
    key = _objects(copy)[1]
    _, sealed = _decoded(_rows(copy, key)[_middle_entry(_rows(copy, key))])
    event_id = str(default_codec().decode(sealed["event"])["event_id"])
    proof = tmp_path / "proof.json"
    assert main(["prove", event_id, "--dir", str(copy), "--out", str(proof)]) == 0
    assert json.loads(proof.read_text())["entry"]["seq"] == sealed["seq"]
    capsys.readouterr()
    assert main(["verify-proof", str(proof), "--keyring", str(stack.keyring_file)]) == 0
    assert f"VALID: event {event_id} is entry seq {sealed['seq']} of chain {sealed['chain_id']}" in capsys.readouterr().out
    edited = json.loads(proof.read_text())
    edited["entry"]["source_timestamp_micros"] += 1
    proof.write_text(json.dumps(edited))
    assert main(["verify-proof", str(proof), "--keyring", str(stack.keyring_file)]) == 1
    assert "does not recompute" in capsys.readouterr().out


@pytest.mark.parametrize("field,value,expected", [
    ("signature", b"", "expected a signature, found none"),
    ("signature", bytes(63), "63 bytes"),
    ("key_id", "not-a-key-id", "key_id"),
])
def test_a_malformed_checkpoint_field_is_that_field_s_violation_and_the_rest_is_checked(
        stack, copy, capsys, monkeypatch, field, value, expected):
    key = _objects(copy)[1]
    rows = _rows(copy, key)
    index = next(i for i, row in enumerate(rows) if _decoded(row)[0] == CHECKPOINT_KIND)
    _, record = _decoded(rows[index])
    rows[index] = dict(rows[index], value=sealed_codecs().checkpoint.encode(dict(record, **{field: value})))
    _write(copy, key, rows, fix_manifest=True)
    code, report = _verify(capsys, monkeypatch, stack, "--dir", str(copy))
    assert code == 1
    location = f"{key} offset {rows[index]['offset']}"
    kinds = {v["kind"] for v in report["violations"] if v["location"] == location}
    assert kinds & {"malformed_record", "bad_signature"}, report["violations"]
    assert any(expected in v["detail"] for v in report["violations"] if v["location"] == location), report["violations"]
    assert "unreadable_object" not in report["violation_counts"], report["violations"]
    assert "manifest_mismatch" not in report["violation_counts"], report["violations"]
    # every record of every object was checked, and the damage is reported once, not as a cascade
    assert report["records"]["checked"] == sum(len(_rows(copy, k)) for k in (
        p.relative_to(copy).as_posix() for p in copy.rglob("*.avro")))
    assert sum(report["violation_counts"].values()) <= 2, report["violations"]
