"""``verify`` checks each manifest's query index against its object (pipeline.verifier.index_check): the pure
comparison on fixed indexes, and the verifier over archives built in-process with the sealer's ChainSealer and
the sink's build_object, where a narrowed index hides events from a timeline until verify names it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pipeline.archive.container import build_object
from pipeline.archive.query_index import ACTOR_FIELD, BloomFilter, IndexBuilder
from pipeline.archive.retention import ComplianceProfile
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import Keyring, SigningKey
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.timeline.query import TimelineQuery
from pipeline.timeline.scan import build_timeline
from pipeline.verifier.archive import ArchiveVerifier, DirectorySource
from pipeline.verifier.index_check import INDEX_MISMATCH, index_differences
from pipeline.wire.codec import default_codec

HOUR = 3_600_000_000
START = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
KEY = SigningKey.from_seed(bytes(range(11, 43)))


def _index(*events: tuple[int, str, str]):
    builder = IndexBuilder()
    for event in events:
        builder.add(*event)
    return builder.index()


def test_the_same_index_has_no_difference_and_each_changed_field_is_named():
    index = _index((START, "alice", "doc-1"), (START + HOUR, "bob", "doc-2"))
    assert index_differences(index, _index((START + HOUR, "bob", "doc-2"), (START, "alice", "doc-1"))) == []
    narrowed = dataclasses.replace(index, occurred_max_micros=START)
    assert index_differences(narrowed, index) == [
        f"occurred_at range {START}..{START}, the events' is {START}..{START + HOUR}"]
    without_bob = dataclasses.replace(index, actors=BloomFilter.of(ACTOR_FIELD, ["alice"]))
    assert index_differences(without_bob, index) == ["the actor filter is not that of the object's actor ids"]
    fewer = dataclasses.replace(index, events=1)
    assert index_differences(fewer, index)[0] == "counts 1 events (0 undecoded), the object holds 2 (0 undecoded)"


def _archive(root: Path, events: int = 120, per_object: int = 40) -> Keyring:
    # one chain, event n at START + n hours, actor 'alice' every 10th event
    codec, chain_id = default_codec(), "audit.raw/0"
    sealer = ChainSealer(chain_id, 0, KEY, ChainHead.genesis(chain_id))
    values = []
    for n, event in enumerate(synthetic_events(events, seed=3)):
        event["occurred_at"] = START + n * HOUR
        if n % 10 == 0:
            event["actor"] = {"id": "alice", "type": "USER", "source_ip": None, "user_agent": None, "session_id": None}
        values.append(sealer.seal(codec.encode(event), n, START).value)
        if n % 20 == 19:
            values.append(sealer.checkpoint(START).value)
    records = [(offset, START // 1000, value) for offset, value in enumerate(values)]
    for first in range(0, len(records), per_object):
        obj = build_object("audit.sealed", 0, records[first:first + per_object], profile=ComplianceProfile("test", days=1))
        for name, data in ((obj.key, obj.body), (obj.manifest_key, obj.manifest_bytes)):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    return Keyring().rotate(KEY.public_key, START - 1)


def _edit_index(manifest: Path, edit) -> None:
    raw = json.loads(manifest.read_bytes())
    edit(raw)
    manifest.write_bytes(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode())


def _verify(root: Path, keyring: Keyring):
    return ArchiveVerifier(keyring).verify(DirectorySource(root))


def _alice(root: Path, keyring: Keyring) -> int:
    timeline = build_timeline(DirectorySource(root), TimelineQuery.of(actor="alice"), keyring, use_index=True)
    return len(timeline.events)


def test_an_intact_archive_has_no_index_mismatch(tmp_path):
    keyring = _archive(tmp_path)
    report = _verify(tmp_path, keyring)
    assert INDEX_MISMATCH not in report.violation_counts, report.as_dict()["violations"]
    assert report.intact, report.as_dict()["violations"]


def test_a_narrowed_index_hides_events_from_a_timeline_and_verify_names_the_manifest(tmp_path):
    keyring = _archive(tmp_path)
    assert _alice(tmp_path, keyring) == 12
    manifest = sorted(tmp_path.rglob("*.manifest.json"))[1]
    alice_free = BloomFilter.of(ACTOR_FIELD, ["mallory"])  # the attacker's filter: alice is certainly not there
    _edit_index(manifest, lambda raw: raw["index"].update(actors=alice_free.as_dict()))
    assert _alice(tmp_path, keyring) < 12  # the attack: the timeline skipped the object
    report = _verify(tmp_path, keyring)
    assert report.violation_counts == {INDEX_MISMATCH: 1}
    (violation,) = report.violations
    assert violation.location == manifest.relative_to(tmp_path).as_posix()
    assert "actor filter" in violation.detail


def test_a_shifted_time_range_is_a_mismatch(tmp_path):
    keyring = _archive(tmp_path)
    manifest = sorted(tmp_path.rglob("*.manifest.json"))[0]
    _edit_index(manifest, lambda raw: raw["index"].update(occurred_max_micros=raw["index"]["occurred_min_micros"]))
    report = _verify(tmp_path, keyring)
    assert report.violation_counts == {INDEX_MISMATCH: 1}
    assert "occurred_at range" in report.violations[0].detail


def test_a_manifest_written_before_the_index_existed_is_not_a_finding(tmp_path):
    keyring = _archive(tmp_path)
    for manifest in tmp_path.rglob("*.manifest.json"):
        _edit_index(manifest, lambda raw: raw.pop("index"))
    assert _verify(tmp_path, keyring).intact
