"""The archive key layout and manifest format: the contract the verifier reads."""

from __future__ import annotations

import json

import pytest

from pipeline.archive.layout import (
    ChainRange,
    CheckpointRef,
    Encryption,
    Manifest,
    ManifestError,
    manifest_key,
    object_key,
    parse_key,
    sync_marker,
)


def test_object_keys_name_topic_partition_and_range():
    assert object_key("audit.sealed", 3, 0, 999) == "audit.sealed/003/00000000000000000000-00000000000000000999.avro"
    key = object_key("audit.sealed", 12, 1000, 1999, prefix="archive/", encrypted=True)
    assert key == "archive/audit.sealed/012/00000000000000001000-00000000000000001999.avro.enc"
    assert manifest_key(key) == key + ".manifest.json"


@pytest.mark.parametrize("prefix", ["", "archive/", "a/b/"])
@pytest.mark.parametrize("encrypted", [False, True])
def test_keys_parse_back(prefix, encrypted):
    key = object_key("test.sealed.x1", 1234, 7, 2**40, prefix=prefix, encrypted=encrypted)
    parsed = parse_key(key)
    assert (parsed.prefix, parsed.topic, parsed.partition, parsed.first_offset, parsed.last_offset,
            parsed.encrypted, parsed.is_manifest) == (prefix, "test.sealed.x1", 1234, 7, 2**40, encrypted, False)
    assert parsed.object_key == key
    manifest = parse_key(manifest_key(key))
    assert manifest.is_manifest and manifest.object_key == key and manifest.manifest_key == manifest_key(key)


@pytest.mark.parametrize("key", ["_auditseal/conformance/abc/locked", "audit.sealed/003/0-1.avro",
                                 "audit.sealed/3/00000000000000000000-00000000000000000001.avro",
                                 "audit.sealed/003/00000000000000000000-00000000000000000001.json"])
def test_foreign_keys_are_not_parsed(key):
    assert parse_key(key) is None


def test_keys_sort_by_first_offset():
    keys = [object_key("t", 0, first, first + 9) for first in (0, 10, 100, 1000, 10**12)]
    assert sorted(keys) == keys


def test_sync_marker_is_derived_from_the_range_start():
    assert sync_marker("t", 0, 10) == sync_marker("t", 0, 10)
    assert len({sync_marker("t", 0, 10), sync_marker("t", 1, 10), sync_marker("t", 0, 11), sync_marker("u", 0, 10)}) == 4
    assert len(sync_marker("t", 0, 0)) == 16


def _manifest(**changes) -> Manifest:
    fields = dict(
        key=object_key("audit.sealed", 2, 100, 199, prefix="archive/"), sha256="ab" * 32, size=4096,
        record_count=99, topic="audit.sealed", partition=2, first_offset=100, last_offset=199,
        first_timestamp_micros=1_700_000_000_000_000, last_timestamp_micros=1_700_000_001_000_000,
        record_kinds={"checkpoint": 1, "event": 97, "rejection": 1, "unknown": 0},
        chains=(ChainRange("audit.raw/2", 500, 597, 98),),
        checkpoints=(CheckpointRef("audit.raw/2", 400, 597, "cd" * 32),),
        compliance_profile="soc2", retain_until="2024-11-14T22:13:21Z", codec="deflate", encryption=None,
    )
    fields.update(changes)
    return Manifest(**fields)


def test_manifest_bytes_are_canonical_and_round_trip():
    manifest = _manifest()
    data = manifest.to_bytes()
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    assert b" " not in data and not data.endswith(b"\n")
    assert Manifest.from_bytes(data) == manifest
    assert json.loads(data)["version"] == 1 and json.loads(data)["encryption"] is None


def test_encrypted_manifest_round_trips():
    encryption = Encryption(master_key_id="mk-1", wrapped_key=bytes(range(40)), nonce=bytes(12))
    manifest = _manifest(key=object_key("audit.sealed", 2, 100, 199, prefix="archive/", encrypted=True),
                         encryption=encryption)
    raw = json.loads(manifest.to_bytes())
    assert raw["encryption"] == {"aad": "object_key", "algorithm": "AES-256-GCM", "key_wrap": "AES-KW",
                                 "master_key_id": "mk-1", "nonce": "AAAAAAAAAAAAAAAA",
                                 "wrapped_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJw=="}
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.pop("sha256"), "field 'sha256' is missing"),
    (lambda m: m.update(size="4096"), "field 'size' must be int"),
    (lambda m: m.update(version=2), "version 2, this reader knows version 1"),
    (lambda m: m.update(sha256="AB" * 32), "64 lowercase hex digits"),
    (lambda m: m.update(partition=3), "the fields say"),
    (lambda m: m.update(record_count=500), "does not fit offsets 100..199"),
    (lambda m: m.update(retain_until="2024-11-14 22:13:21"), "retain_until"),
    (lambda m: m["chains"][0].pop("last_seq"), r"chains\[0\]: field 'last_seq' is missing"),
    (lambda m: m.update(record_kinds={"checkpoint": 0, "event": 0, "rejection": 0, "unknown": 0}), "add up to 0"),
    (lambda m: m.update(encryption={"algorithm": "AES-256-GCM"}), "encryption: field"),
])
def test_a_broken_manifest_names_the_field(change, message):
    raw = json.loads(_manifest().to_bytes())
    change(raw)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_bytes(json.dumps(raw).encode(), "archive/x.manifest.json")


def test_manifest_that_is_not_json_is_refused():
    with pytest.raises(ManifestError, match="m.json: not UTF-8 JSON"):
        Manifest.from_bytes(b"\xff{", "m.json")
