"""Tree heads and heartbeats: the sealer signs C2SP heads over each chain's whole history; offline, the
verifier checks them against the entries and reports stale_head (a truncated tail) and logging_gap."""

from __future__ import annotations

from pathlib import Path

from pipeline.archive.container import build_object
from pipeline.archive.retention import ComplianceProfile
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.chain_state import ViolationKind
from pipeline.integrity.history_tree import history_tree_of
from pipeline.integrity.keyring import Keyring, SigningKey
from pipeline.integrity.merkle import record_leaf_hash
from pipeline.integrity.note import NoteVerifier
from pipeline.integrity.tree_head import open_tree_head
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer, history_of_head
from pipeline.verifier.archive import ArchiveVerifier, DirectorySource
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import HEAD_KIND, sealed_codecs

KEY = SigningKey.from_seed(bytes(range(32)))
START = 1_767_225_600_000_000  # 2026-01-01
CHAIN = "audit.raw/0"
ORIGIN = f"auditseal/test/{CHAIN}"
SECOND = 1_000_000


def _keyring() -> Keyring:
    return Keyring().rotate(KEY.public_key, START - 1)


def _seal(batches: list[tuple[int, int]], heartbeats: tuple[int, ...] = (), sealer: ChainSealer | None = None):
    """(values, sealer): batches of (event count, time offset in s), heartbeats at these times (s) after them."""
    sealer = sealer or ChainSealer(CHAIN, 0, KEY, ChainHead.genesis(CHAIN), origin=ORIGIN)
    codec = default_codec()
    values = []
    for count, at in batches:
        for event in synthetic_events(count, seed=at):
            values.append(sealer.seal(codec.encode(event), sealer.next_source_offset or 0, START + at * SECOND).value)
        values.append(sealer.tree_head(START + at * SECOND).value)
        values.append(sealer.checkpoint(START + at * SECOND).value)
    for at in heartbeats:
        values.append(sealer.tree_head(START + at * SECOND, heartbeat=True).value)
    return values, sealer


def _archive(root: Path, values: list[bytes], per_object: int = 12) -> list[Path]:
    profile = ComplianceProfile("test", days=1)
    records = [(offset, START // 1000, value) for offset, value in enumerate(values)]
    written = []
    for first in range(0, len(records), per_object):
        obj = build_object("audit.sealed", 0, records[first:first + per_object], profile=profile)
        for key, data in ((obj.key, obj.body), (obj.manifest_key, obj.manifest_bytes)):
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)
        written.append(root / obj.key)
    return written


def _verify(root: Path, as_of_s: int, tolerance_s: float = 300):
    return ArchiveVerifier(_keyring(), as_of_micros=START + as_of_s * SECOND,
                           head_tolerance_s=tolerance_s).verify(DirectorySource(root))


def test_a_head_is_a_c2sp_checkpoint_over_the_chain_s_whole_history():
    values, sealer = _seal([(5, 0), (3, 1)])
    codecs = sealed_codecs()
    heads = [record for kind, record in map(codecs.decode, values) if kind == HEAD_KIND]
    hashes = [record["hash"] for kind, record in map(codecs.decode, values) if kind == b"event"]
    assert [h["tree_size"] for h in heads] == [5, 8]
    expected = history_tree_of([record_leaf_hash(h) for h in hashes])
    head, _ = open_tree_head(heads[-1]["note"], NoteVerifier(ORIGIN, 1, KEY.public_key))
    assert (head.size, head.root_hash) == (8, expected.root) == (heads[-1]["tree_size"], heads[-1]["root_hash"])
    assert head.extensions == (f"auditseal-time {START + SECOND}",)
    assert history_of_head(heads[-1], 8) == expected and history_of_head(heads[-1], 9) is None


def test_an_archive_with_fresh_heads_verifies_intact(tmp_path):
    values, _ = _seal([(5, 0), (4, 30), (3, 60)], heartbeats=(120, 180))
    _archive(tmp_path, values)
    report = _verify(tmp_path, as_of_s=200)
    assert report.intact, report.as_dict()["violations"]


def test_an_export_with_its_newest_objects_removed_is_a_stale_head(tmp_path):
    values, _ = _seal([(5, 0), (4, 30), (3, 60)], heartbeats=(120, 180, 240, 300, 360))
    objects = _archive(tmp_path, values, per_object=18)  # the three batches, then the heartbeats
    assert _verify(tmp_path, as_of_s=400).intact
    for newest in objects[-1:]:  # root on the archive host deletes the tail, manifests and all
        newest.unlink()
        Path(f"{newest}.manifest.json").unlink()
    report = _verify(tmp_path, as_of_s=400)
    assert set(report.violation_counts) == {ViolationKind.STALE_HEAD}, report.as_dict()["violations"]
    assert "older than the as-of time" in report.violations[0].detail


def test_a_silence_longer_than_the_tolerance_is_a_logging_gap(tmp_path):
    values, _ = _seal([(5, 0), (4, 30), (3, 1000)])
    _archive(tmp_path, values)
    report = _verify(tmp_path, as_of_s=1010)
    assert set(report.violation_counts) == {ViolationKind.LOGGING_GAP}, report.as_dict()["violations"]
    assert "no tree head for 970 s" in report.violations[0].detail


def test_a_head_over_another_history_is_a_head_mismatch(tmp_path):
    # the key holder signs a head over a rewritten history: the archive's entries do not give its root
    values, _ = _seal([(5, 0), (4, 30)])
    forger = ChainSealer(CHAIN, 0, KEY, ChainHead.genesis(CHAIN), origin=ORIGIN)
    forged, _ = _seal([(9, 31)], sealer=forger)
    forged_head = next(v for v in forged if sealed_codecs().decode(v)[0] == HEAD_KIND)
    _archive(tmp_path, [*values, forged_head])
    report = _verify(tmp_path, as_of_s=40)
    assert set(report.violation_counts) == {ViolationKind.HEAD_MISMATCH}, report.as_dict()["violations"]
    assert "its root is not that of the 9 entries read" in report.violations[0].detail


def test_a_head_under_a_key_the_keyring_does_not_hold_is_refused(tmp_path):
    other = SigningKey.from_seed(bytes(range(1, 33)))
    values, _ = _seal([(3, 0)])
    sealer = ChainSealer(CHAIN, 0, other, ChainHead.genesis(CHAIN), origin=ORIGIN)
    foreign, _ = _seal([(3, 0)], sealer=sealer)
    heads = [v for v in foreign if sealed_codecs().decode(v)[0] == HEAD_KIND]
    _archive(tmp_path, [*values, *heads])
    report = _verify(tmp_path, as_of_s=10)
    assert ViolationKind.UNKNOWN_KEY in report.violation_counts


def test_the_sealer_resumes_its_history_tree_from_its_last_head():
    values, sealer = _seal([(5, 0)])
    codecs = sealed_codecs()
    head = next(r for k, r in map(codecs.decode, values) if k == HEAD_KIND)
    checkpoint = next(r for k, r in map(codecs.decode, values) if k == b"checkpoint")
    resumed = ChainSealer.resume(CHAIN, 0, KEY, checkpoint, origin=ORIGIN, last_head=head)
    assert resumed.history == sealer.history
    without = ChainSealer.resume(CHAIN, 0, KEY, checkpoint, origin=ORIGIN)
    assert without.history is None and without.tree_head(START) is None
