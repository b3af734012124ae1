"""The pure parts of ``auditseal timeline``: the event head reader, the manifest's query index (fixed vectors,
no false negatives, old manifests unchanged), and timelines over archives built in-process with the sealer's
and the sink's own code (index on and off give the same answer; damage makes it INCOMPLETE; bundles verify)."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.archive.container import build_object
from pipeline.archive.layout import Manifest, ManifestError
from pipeline.archive.query_index import BloomFilter, IndexBuilder, QueryIndex
from pipeline.archive.retention import ComplianceProfile
from pipeline.errors import ConfigError
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import Keyring, SigningKey
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.timeline.bundle import make_bundle, verify_bundle
from pipeline.timeline.query import TimelineQuery
from pipeline.timeline.scan import VERIFIED, build_timeline
from pipeline.verifier.archive import DirectorySource
from pipeline.wire.codec import CorruptBodyError, default_codec
from pipeline.wire.event_head import read_event_head, read_event_head_reference
from pipeline.wire.sealed import sealed_codecs

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v1_archive.json"
HOUR = 3_600_000_000
START = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
KEY = SigningKey.from_seed(bytes(range(7, 39)))


def test_event_head_reads_what_the_codec_decodes():
    codec = default_codec()
    for event in synthetic_events(500, seed=4):
        head = read_event_head(codec.encode(event))
        decoded = codec.decode(codec.encode(event))
        assert (head.event_id, head.actor_id, head.actor_type, head.action, head.resource_type, head.resource_id,
                head.outcome) == (str(decoded["event_id"]), decoded["actor"]["id"], decoded["actor"]["type"],
                                  decoded["action"], decoded["resource"]["type"], decoded["resource"]["id"],
                                  decoded["outcome"]["status"])
        assert head.occurred_at_micros == event["occurred_at"]


def test_the_compiled_event_head_reader_agrees_with_the_reference():
    codec = default_codec()
    for event in synthetic_events(300, seed=9):
        value = codec.encode(event)
        assert read_event_head(value) == read_event_head_reference(value)
        for cut in (12, len(value) // 3, len(value) // 2):  # damaged: both refuse, the reference words it
            with pytest.raises(CorruptBodyError):
                read_event_head_reference(value[:cut])
            with pytest.raises(CorruptBodyError):
                read_event_head(value[:cut])


def test_event_head_refuses_damage_naming_the_field():
    value = default_codec().encode(next(synthetic_events(1, seed=1)))
    with pytest.raises(CorruptBodyError, match="AuditEvent"):
        read_event_head(value[:30])
    with pytest.raises(CorruptBodyError, match="not an AuditEvent"):
        read_event_head(b"\xc3\x01" + b"\x00" * 8 + value[10:])


def test_bloom_filter_fixed_vector():
    """The bit layout of schemas/FORMAT.md section 10, pinned: manifests written today are read for years."""
    bloom = BloomFilter.of("actor.id", ["alice", "bob"])
    assert (bloom.bits, bloom.hashes, bloom.data.hex()) == (64, 7, "1042001110642825")
    assert bloom.may_contain("alice") and bloom.may_contain("bob")


def test_bloom_filter_has_no_false_negatives_and_few_false_positives():
    members = [f"usr_{n:06d}" for n in range(2000)]
    bloom = BloomFilter.of("actor.id", members)
    assert all(bloom.may_contain(member) for member in members)
    false_positives = sum(bloom.may_contain(f"other_{n}") for n in range(20_000))
    assert false_positives < 20_000 * 0.02


def test_index_rules_out_by_time_actor_and_resource():
    builder = IndexBuilder()
    builder.add(START, "alice", "doc-1")
    builder.add(START + HOUR, "bob", "doc-2")
    index = QueryIndex.from_dict(json.loads(json.dumps(builder.index().as_dict())), "index")
    assert index.may_match(actor_ids=["alice"], since_micros=START, until_micros=START + 1)
    assert not index.may_match(since_micros=START + HOUR + 1)
    assert not index.may_match(until_micros=START)
    assert not index.may_match(actor_ids=["carol"])
    assert not index.may_match(resource_id="doc-9")
    builder.add_undecoded()  # an event it could not read: the object must always be read
    assert builder.index().may_match(actor_ids=["carol"])


def _objects(events_per_chain: int = 300, chains: int = 2, per_object: int = 50, checkpoint_every: int = 20,
             alter: int | None = None):
    """(files, keyring, events): chains sealed by the sealer's ChainSealer, cut into objects by the sink's
    build_object; event n of a chain happens at START + n hours; actor 'alice' acts every 25th event.
    ``alter``: the sealed event of that seq gets other event bytes after sealing (its hash kept), and the
    manifests are computed from the altered records, as a tamperer who rewrites objects would."""
    codec = default_codec()
    files: dict[str, bytes] = {}
    events = []
    for partition in range(chains):
        chain_id = f"audit.raw/{partition}"
        sealer = ChainSealer(chain_id, partition, KEY, ChainHead.genesis(chain_id))
        values = []
        for n, event in enumerate(synthetic_events(events_per_chain, seed=partition)):
            event["occurred_at"] = START + n * HOUR + partition
            if n % 25 == 0:
                event["actor"] = {"id": "alice", "type": "USER", "source_ip": None, "user_agent": None,
                                  "session_id": None}
            events.append(event)
            value = sealer.seal(codec.encode(event), n, START).value
            if n == alter:
                sealed = sealed_codecs()
                _, record = sealed.decode(value)
                record["event"] = codec.encode(dict(event, action="document.shred"))
                value = sealed.event.encode(record)
            values.append(value)
            if n % checkpoint_every == checkpoint_every - 1:
                values.append(sealer.checkpoint(START).value)
        if events_per_chain % checkpoint_every:
            values.append(sealer.checkpoint(START).value)
        records = [(offset, START // 1000, value) for offset, value in enumerate(values)]
        for first in range(0, len(records), per_object):
            obj = build_object("audit.sealed", partition, records[first:first + per_object],
                               profile=ComplianceProfile("test", days=1))
            files[obj.key], files[obj.manifest_key] = obj.body, obj.manifest_bytes
    return files, Keyring().rotate(KEY.public_key, START - 1), events


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    files, keyring, events = _objects()
    return _write(tmp_path_factory.mktemp("archive"), files), keyring, events


def _ids(timeline):
    return [event.head.event_id for event in timeline.events]


def test_index_and_full_scan_give_the_same_verified_answer(archive):
    root, keyring, events = archive
    query = TimelineQuery.of(actor="alice", since_micros=START + 40 * HOUR, until_micros=START + 140 * HOUR)
    indexed = build_timeline(DirectorySource(root), query, keyring)
    full = build_timeline(DirectorySource(root), query, keyring, use_index=False)
    expected = sorted((e for e in events if e["actor"]["id"] == "alice"
                       and START + 40 * HOUR <= e["occurred_at"] < START + 140 * HOUR), key=lambda e: e["occurred_at"])
    assert _ids(indexed) == _ids(full) == [str(e["event_id"]) for e in expected]
    assert indexed.complete and full.complete, indexed.problems
    assert all(event.status == VERIFIED for event in indexed.events)
    assert indexed.objects_read < full.objects_read == full.objects_total


def test_each_mid_chain_run_starts_on_a_batch_and_verifies(archive):
    """A query whose objects start mid-chain: each run is seeded from the manifests, every event verifies."""
    root, keyring, _ = archive
    for hour in range(0, 300, 37):
        query = TimelineQuery.of(since_micros=START + hour * HOUR, until_micros=START + (hour + 3) * HOUR)
        timeline = build_timeline(DirectorySource(root), query, keyring, proofs=True)
        assert timeline.complete, (hour, [str(p) for p in timeline.problems])
        assert len(timeline.events) == 6 and all(event.proof for event in timeline.events)


def test_an_altered_event_is_unverified_and_the_answer_incomplete(tmp_path):
    files, keyring, _ = _objects(events_per_chain=100, chains=1, alter=50)
    timeline = build_timeline(DirectorySource(_write(tmp_path, files)), TimelineQuery.of(action="document.shred"),
                              keyring)
    assert not timeline.complete
    assert [(event.seq, event.status) for event in timeline.events] == [(50, "UNVERIFIED")]
    assert "altered_record" in timeline.events[0].problem
    assert any(p.kind == "altered_record" and p.seq == 50 for p in timeline.problems)


def test_a_dropped_object_is_a_gap_next_to_the_results(tmp_path):
    files, keyring, _ = _objects(events_per_chain=200, chains=1)
    victim = sorted(n for n in files if n.endswith(".avro"))[2]
    del files[victim], files[victim + ".manifest.json"]
    timeline = build_timeline(DirectorySource(_write(tmp_path, files)), TimelineQuery.of(actor="alice"), keyring)
    assert not timeline.complete
    gap = next(p for p in timeline.problems if p.kind == "gap")
    assert gap.chain_id == "audit.raw/0" and gap.seq is not None


def test_the_bundle_verifies_and_a_swapped_proof_does_not(archive):
    root, keyring, _ = archive
    timeline = build_timeline(DirectorySource(root), TimelineQuery.of(actor="alice"), keyring, proofs=True)
    bundle = json.loads(json.dumps(make_bundle(timeline)))
    verdict = verify_bundle(bundle, keyring)
    assert verdict.valid and verdict.proven == len(timeline.events) == 24 and verdict.complete_claimed
    bundle["events"][0]["proof"], bundle["events"][1]["proof"] = bundle["events"][1]["proof"], bundle["events"][0]["proof"]
    assert not verify_bundle(bundle, keyring).valid
    other = json.loads(json.dumps(make_bundle(timeline)))
    other["events"][3]["proof"]["entry"]["seq"] += 1
    assert "altered" in verify_bundle(other, keyring).failures[0] or not verify_bundle(other, keyring).valid
    assert not verify_bundle(json.loads(json.dumps(make_bundle(timeline))), Keyring()).valid


def test_manifests_without_an_index_keep_their_bytes_and_are_always_read(tmp_path):
    """The v1 fixture archive (written before the index existed): every manifest round-trips byte for byte,
    the timeline reads every object, and its answer is complete and verified."""
    fixture = json.loads(FIXTURE.read_text())
    files = {name: base64.b64decode(data) for name, data in fixture["files"].items()}
    for name, data in files.items():
        if name.endswith(".manifest.json"):
            assert b'"index"' not in data and Manifest.from_bytes(data).to_bytes() == data
    (tmp_path / "keyring.json").write_text(fixture["keyring"])
    from pipeline.integrity.keyring import load_keyring

    timeline = build_timeline(DirectorySource(_write(tmp_path / "archive", files)), TimelineQuery.of(actor="nobody"),
                              load_keyring(tmp_path / "keyring.json"))
    assert timeline.complete and timeline.objects_read == timeline.objects_total > 0 and timeline.objects_indexed == 0


def test_a_manifest_whose_index_disagrees_with_its_counts_is_malformed():
    files, _, _ = _objects(events_per_chain=30, chains=1)
    manifest = Manifest.from_bytes(next(data for name, data in files.items() if name.endswith(".manifest.json")))
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest
    wrong = dataclasses.replace(manifest, index=dataclasses.replace(manifest.index, events=manifest.index.events + 1))
    with pytest.raises(ManifestError, match="index counts"):
        Manifest.from_bytes(wrong.to_bytes())


@pytest.mark.parametrize("options, message", [
    ({"outcome": "maybe"}, "--outcome"),
    ({"resource": ":x"}, "TYPE:ID"),
    ({"since_micros": 10, "until_micros": 5}, "--until"),
])
def test_bad_queries_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        TimelineQuery.of(**options)
