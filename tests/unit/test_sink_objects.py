"""Archive objects are deterministic: the same records give the same bytes, the manifest describes them."""

from __future__ import annotations

import datetime
import hashlib
import io
from functools import lru_cache

import fastavro
import pytest

from pipeline.archive.container import build_object, entry_position, kind_of, read_archived_records
from pipeline.archive.encryption import MasterKey, decrypt_object
from pipeline.archive.layout import Manifest, sync_marker
from pipeline.archive.retention import ComplianceProfile
from pipeline.integrity.checkpoint import checkpoint_hash
from pipeline.integrity.keyring import generate_signing_key
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import checkpoint_from_record, sealed_codecs

PROFILE = ComplianceProfile("soc2", years=1)
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@lru_cache(maxsize=1)
def _records() -> tuple[tuple[int, int, bytes], ...]:
    """Offsets 40.. of a sealed partition: 2 batches of 120 entries (one a rejection) and their
    checkpoints, with a transaction marker's offset skipped after each checkpoint."""
    codec = default_codec()
    sealer = ChainSealer.resume("audit.raw/4", 4, generate_signing_key(), None)
    events = [codec.encode(event) for event in synthetic_events(239, seed=3)]
    values = [sealer.seal(value, n, 1000 * n).value for n, value in enumerate(events[:119])]
    values.append(sealer.seal(b"garbage", 119, 119_000).value)
    values.append(sealer.checkpoint(1).value)
    values += [sealer.seal(value, 120 + n, 1000 * n).value for n, value in enumerate(events[119:])]
    values.append(sealer.checkpoint(2).value)
    out, offset = [], 40
    for n, value in enumerate(values):
        out.append((offset, BASE_MS + n, value))
        offset += 2 if n == 120 else 1
    return tuple(out)


def test_same_records_same_bytes_and_manifest():
    first = build_object("audit.sealed", 4, _records(), profile=PROFILE)
    again = build_object("audit.sealed", 4, list(_records()), profile=PROFILE)
    assert (first.key, first.body, first.manifest_bytes) == (again.key, again.body, again.manifest_bytes)
    assert sync_marker("audit.sealed", 4, 40) in first.body


def test_object_holds_every_record_byte_for_byte_in_offset_order():
    records = _records()
    archive = build_object("audit.sealed", 4, records, profile=PROFILE, prefix="archive/", codec="null")
    assert archive.key == "archive/audit.sealed/004/00000000000000000040-00000000000000000282.avro"
    rows = list(read_archived_records(archive.body))
    assert [(r["offset"], r["timestamp_micros"] // 1000, r["value"]) for r in rows] == list(records)
    assert {r["topic"] for r in rows} == {"audit.sealed"} and {r["partition"] for r in rows} == {4}
    assert [r["kind"] for r in rows].count("checkpoint") == 2 and [r["kind"] for r in rows].count("rejection") == 1
    assert fastavro.reader(io.BytesIO(archive.body)).writer_schema["name"] == "dev.auditseal.ArchivedRecord"


def test_manifest_describes_the_object():
    records = _records()
    archive = build_object("audit.sealed", 4, records, profile=PROFILE)
    manifest = Manifest.from_bytes(archive.manifest_bytes)
    assert manifest == archive.manifest
    assert (manifest.sha256, manifest.size) == (hashlib.sha256(archive.body).hexdigest(), len(archive.body))
    assert (manifest.first_offset, manifest.last_offset, manifest.record_count) == (40, 282, 242)
    assert manifest.record_kinds == {"checkpoint": 2, "event": 239, "rejection": 1, "unknown": 0}
    assert [(c.chain_id, c.first_seq, c.last_seq, c.entries) for c in manifest.chains] == [("audit.raw/4", 0, 239, 240)]
    codecs = sealed_codecs()
    expected = [checkpoint_hash(checkpoint_from_record(codecs.checkpoint.decode(v))).hex()
                for _, _, v in records if kind_of(v) == "checkpoint"]
    assert [(c.first_seq, c.last_seq, c.checkpoint_hash) for c in manifest.checkpoints] == list(
        zip((0, 120), (119, 239), expected, strict=False))
    assert (manifest.first_timestamp_micros, manifest.last_timestamp_micros) == (BASE_MS * 1000, (BASE_MS + 241) * 1000)
    assert manifest.retain_until == "2027-01-01T00:00:01Z"  # newest record rounded up, plus one calendar year
    assert archive.retain_until == datetime.datetime(2027, 1, 1, 0, 0, 1, tzinfo=datetime.UTC)


def test_a_record_of_no_known_kind_is_archived_as_unknown():
    records = list(_records()[:3]) + [(43, BASE_MS, b"\xc3\x01" + bytes(8) + b"stray"), (44, BASE_MS, b"")]
    archive = build_object("audit.sealed", 4, records, profile=PROFILE)
    assert [r["kind"] for r in read_archived_records(archive.body)][-2:] == ["unknown", "unknown"]
    assert archive.manifest.record_kinds["unknown"] == 2
    assert [(c.first_seq, c.last_seq, c.entries) for c in archive.manifest.chains] == [(0, 2, 3)]


def test_entry_position_reads_chain_and_seq_without_decoding():
    codecs = sealed_codecs()
    for _, _, value in _records():
        kind = kind_of(value)
        if kind in ("event", "rejection"):
            record = getattr(codecs, kind).decode(value)
            assert entry_position(value) == (record["chain_id"], record["seq"])
    with pytest.raises((ValueError, IndexError)):
        entry_position(_records()[0][2][:12])


def test_encrypted_object_is_deterministic_and_decrypts_to_the_plain_one():
    master = MasterKey("mk-test", bytes(range(32)))
    plain = build_object("audit.sealed", 4, _records(), profile=PROFILE)
    sealed = build_object("audit.sealed", 4, _records(), profile=PROFILE, master_key=master)
    assert sealed.key == plain.key + ".enc"
    assert sealed.body == build_object("audit.sealed", 4, _records(), profile=PROFILE, master_key=master).body
    assert sealed.manifest.encryption.master_key_id == "mk-test"
    assert sealed.manifest.sha256 == hashlib.sha256(sealed.body).hexdigest()
    assert decrypt_object(sealed.body, sealed.key, sealed.manifest.encryption, master) == plain.body


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="at least one record"):
        build_object("audit.sealed", 0, [], profile=PROFILE)
