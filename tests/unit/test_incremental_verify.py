"""Incremental verification (``verify --since-state`` / ``--state-out``) and ``verify --jobs N``.

The attacks first, on archives today's sealer and sink code write (v2 checkpoints, a tree head before each):
an object the state covers rewritten or deleted, a history forked after the verified head, a state file
corrupt, tampered or of another archive; then the clean case, which reads only the new objects and proves
with an RFC 6962 consistency proof that the new heads extend the verified ones. ``--jobs 2`` must give the
report one job gives, on clean and on damaged archives, full and incremental.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline.cli.main import main
from pipeline.integrity.keyring import save_keyring
from pipeline.verifier.archive import ArchiveVerifier, DirectorySource
from pipeline.verifier.incremental import (
    COVERED_CHANGED,
    COVERED_MISSING,
    NOT_EXTENDING,
    IncrementalVerifier,
    load_state,
    write_state,
)
from pipeline.verifier.parallel import verify_parallel
from tests.support.growing_archive import GrowingArchive


def _verifier(archive: GrowingArchive, since=None) -> IncrementalVerifier:
    return IncrementalVerifier(archive.keyring, as_of_micros=archive.now, head_tolerance_s=3600, since=since)


def _verified(archive: GrowingArchive, tmp_path: Path) -> Path:
    """A full run of the archive as it is, its state written; the state file."""
    verifier = _verifier(archive)
    report = verifier.verify(DirectorySource(archive.root))
    assert report.intact, report.as_dict()["violations"]
    state = tmp_path / "state.json"
    write_state(state, verifier.state(report))
    return state


def _incremental(archive: GrowingArchive, state: Path, jobs: int = 1):
    source = DirectorySource(archive.root)
    verifier = _verifier(archive, load_state(state, archive.keyring, source.description))
    return verifier, verify_parallel(verifier, source, jobs)


@pytest.fixture()
def archive(tmp_path) -> GrowingArchive:
    grown = GrowingArchive(tmp_path / "archive", partitions=2)
    grown.grow(6)
    return grown


def test_a_clean_increment_reads_only_the_new_objects_and_proves_consistency(archive, tmp_path):
    state = _verified(archive, tmp_path)
    before = len(archive.objects)
    new = archive.grow(2)
    _, report = _incremental(archive, state)
    assert report.intact, report.as_dict()["violations"]
    assert report.objects == len(new) and report.incremental["objects_covered"] == before
    assert report.records == sum(42 for _ in range(2 * 2))  # 2 batches x 2 chains of 40 entries + head + checkpoint
    assert report.incremental["consistency"] == {
        f"audit.sealed:audit.raw/{p}": "tree head 240 -> 280: consistent (RFC 6962 proof of 6 hashes)" for p in (0, 1)}
    full = _verifier(archive).verify(DirectorySource(archive.root))
    assert full.intact and report.last_seq == full.last_seq


def test_a_covered_object_rewritten_after_verification_is_reported(archive, tmp_path):
    state = _verified(archive, tmp_path)
    archive.grow(1)
    victim = archive.root / archive.objects[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    _, report = _incremental(archive, state)
    found = [v for v in report.violations if v.kind == COVERED_CHANGED]
    assert [v.location for v in found] == [archive.objects[1]], report.as_dict()["violations"]
    assert "rewritten after it was verified" in found[0].detail


def test_a_copied_archive_with_new_mtimes_is_read_again_and_stays_intact(archive, tmp_path):
    state = _verified(archive, tmp_path)
    for path in archive.root.rglob("*.avro"):
        path.write_bytes(path.read_bytes())  # same bytes, a new mtime: the listing changed, the content not
    _, report = _incremental(archive, state)
    assert report.intact, report.as_dict()["violations"]
    assert report.incremental["objects_covered_reread"] == len(archive.objects)


def test_covered_objects_deleted_after_verification_are_reported(archive, tmp_path):
    state = _verified(archive, tmp_path)
    archive.grow(1)
    for name in archive.objects[:2]:
        (archive.root / name).unlink()
        (archive.root / (name + ".manifest.json")).unlink()
    _, report = _incremental(archive, state)
    assert sorted(v.location for v in report.violations if v.kind == COVERED_MISSING) == sorted(archive.objects[:2])
    assert not report.intact


def test_a_history_forked_after_the_verified_head_does_not_extend_it(archive, tmp_path):
    state = _verified(archive, tmp_path)
    # whoever holds the sealer's key seals a second history of the same chains, as long and longer; its
    # objects past the verified offsets are added to the archive
    fork = GrowingArchive(tmp_path / "fork", partitions=2, key=archive.key)
    fork.events = list(reversed(fork.events))
    fork.grow(8)
    covered = set(archive.objects)
    added = [name for name in fork.objects if name not in covered]
    for name in added:
        for suffix in ("", ".manifest.json"):
            (archive.root / (name + suffix)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(fork.root / (name + suffix), archive.root / (name + suffix))
    archive.now = fork.now
    _, report = _incremental(archive, state)
    found = [v for v in report.violations if v.kind == NOT_EXTENDING]
    assert [(v.chain_id, v.seq) for v in found] == [("audit.raw/0", 240), ("audit.raw/1", 240)], \
        report.as_dict()["violations"]
    assert found[0].location.startswith(added[0]) and "not consistent with the verified head" in found[0].detail
    assert {"fork", "checkpoint_chain_broken"} <= set(report.violation_counts)


def _cli(archive: GrowingArchive, tmp_path: Path, *extra: str) -> int:
    keyring = tmp_path / "keyring.json"
    save_keyring(archive.keyring, keyring)
    return main(["verify", "--dir", str(archive.root), "--keyring", str(keyring), "--head-tolerance", "3600",
                 "--as-of", "2026-01-01T00:10:00Z", *extra])


def test_state_files_that_cannot_be_trusted_are_refused_in_one_line(archive, tmp_path, capsys):
    state = tmp_path / "state.json"
    assert _cli(archive, tmp_path, "--state-out", str(state)) == 0
    capsys.readouterr()
    data = json.loads(state.read_text())

    def refused(text: str, expected: str) -> None:
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        assert _cli(archive, tmp_path, "--since-state", str(bad)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err

    refused(state.read_text()[:-40], "corrupt, not JSON")
    edited = json.loads(state.read_text())
    edited["totals"]["records"] += 1
    refused(json.dumps(edited), "its sha256 does not match")
    other = dict(data, source="dir /elsewhere")
    other.pop("sha256")
    from pipeline.verifier.incremental import _body_digest
    refused(json.dumps({**other, "sha256": _body_digest(other)}), "written for dir /elsewhere")
    # a forged anchor with a recomputed sha256: the checkpoint's signature no longer verifies
    forged = json.loads(state.read_text())
    forged.pop("sha256")
    anchor = forged["archives"]["audit.sealed:"]["chains"]["audit.raw/0"]["checkpoint"]
    anchor["chain_head"] = {"hex": "00" * 32}
    refused(json.dumps({**forged, "sha256": _body_digest(forged)}), "corrupt or tampered")
    # a tree head moved to another root, the frontier to match: the note's signature does not cover it
    forged = json.loads(state.read_text())
    forged.pop("sha256")
    chain = forged["archives"]["audit.sealed:"]["chains"]["audit.raw/1"]
    chain["head"]["root_hash"] = {"hex": "11" * 32}
    refused(json.dumps({**forged, "sha256": _body_digest(forged)}), "corrupt or tampered")
    refused("[]", "expected a state file")
    refused(json.dumps({"format": "auditseal-verify-state/1"}), "its sha256 does not match")
    assert _cli(archive, tmp_path, "--since-state", str(tmp_path / "absent.json")) == 2
    assert "cannot read it" in capsys.readouterr().err


def test_the_cli_writes_the_state_only_for_an_intact_archive_and_starts_from_it(archive, tmp_path, capsys):
    state = tmp_path / "state.json"
    assert _cli(archive, tmp_path, "--state-out", str(state)) == 0
    archive.grow(1)
    capsys.readouterr()
    assert _cli(archive, tmp_path, "--since-state", str(state), "--state-out", str(state), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["objects"]["checked"] == 2 and report["incremental"]["objects_covered"] == 6
    archive.grow(1)
    assert _cli(archive, tmp_path, "--since-state", str(state)) == 0
    assert "2 new objects read; 8 objects verified before" in capsys.readouterr().out
    (archive.root / archive.objects[0]).unlink()
    before = state.read_text()
    assert _cli(archive, tmp_path, "--state-out", str(state)) == 1
    assert "not written" in capsys.readouterr().err and state.read_text() == before


def _damaged(archive: GrowingArchive) -> None:
    # a dropped object (a gap in chain 1), an altered byte (chain 0), a planted name
    (archive.root / archive.objects[4]).unlink()
    victim = archive.root / archive.objects[1]
    data = bytearray(victim.read_bytes())
    data[-30] ^= 4
    victim.write_bytes(bytes(data))
    (archive.root / "audit.sealed" / "000" / "planted.avro").write_bytes(b"x")


@pytest.mark.parametrize("damaged", [False, True])
def test_two_jobs_give_the_report_one_job_gives(tmp_path, damaged):
    archive = GrowingArchive(tmp_path / "archive", partitions=5)
    archive.grow(5)
    if damaged:
        _damaged(archive)
    source = DirectorySource(archive.root)
    one = ArchiveVerifier(archive.keyring, as_of_micros=archive.now).verify(source).as_dict()
    two = verify_parallel(ArchiveVerifier(archive.keyring, as_of_micros=archive.now),
                          DirectorySource(archive.root), 2).as_dict()
    assert two == one
    assert one["intact"] is not damaged


@pytest.mark.parametrize("damaged", [False, True])
def test_two_jobs_give_the_incremental_report_one_job_gives(tmp_path, damaged):
    archive = GrowingArchive(tmp_path / "archive", partitions=3)
    archive.grow(4)
    state = _verified(archive, tmp_path)
    archive.grow(4)
    if damaged:
        (archive.root / archive.objects[0]).unlink()
        victim = archive.root / archive.objects[-1]
        data = bytearray(victim.read_bytes())
        data[-30] ^= 4
        victim.write_bytes(bytes(data))
    one_verifier, one = _incremental(archive, state, jobs=1)
    two_verifier, two = _incremental(archive, state, jobs=2)
    assert two.as_dict() == one.as_dict()
    assert one.intact is not damaged
    if not damaged:
        from pipeline.verifier.incremental import state_to_json
        assert state_to_json(two_verifier.state(two)) == state_to_json(one_verifier.state(one))


def test_a_chain_found_in_two_partitions_is_verified_in_one_pass(tmp_path):
    archive = GrowingArchive(tmp_path / "archive", partitions=2)
    archive.grow(2)
    moved = archive.root / archive.objects[1]
    target = Path(str(moved).replace("/000/", "/001/").replace("00000000000000000042", "00000000000000099042")
                  .replace("00000000000000000083", "00000000000000099083"))
    moved.rename(target)
    (archive.root / (archive.objects[1] + ".manifest.json")).rename(Path(str(target) + ".manifest.json"))
    one = ArchiveVerifier(archive.keyring, as_of_micros=archive.now).verify(DirectorySource(archive.root)).as_dict()
    two = verify_parallel(ArchiveVerifier(archive.keyring, as_of_micros=archive.now),
                          DirectorySource(archive.root), 2).as_dict()
    assert two == one and not one["intact"]


def test_a_new_object_inside_the_verified_offsets_is_reported(archive, tmp_path):
    state = _verified(archive, tmp_path)
    archive.grow(1)
    source = archive.objects[1]
    first, last = (int(part) for part in Path(source).stem.split("-"))
    planted = source.replace(f"{first:020d}-{last:020d}", f"{first + 1:020d}-{last:020d}")
    for suffix in ("", ".manifest.json"):
        shutil.copy(archive.root / (source + suffix), archive.root / (planted + suffix))
    _, report = _incremental(archive, state)
    assert any(v.kind == "overlapping_objects" and v.location == planted for v in report.violations), \
        report.as_dict()["violations"]


def test_checks_that_follow_the_whole_archive_in_one_process_refuse_jobs(archive, tmp_path, capsys, monkeypatch):
    # the reconciler's attestations are observed in this process: forked workers would not report them back
    monkeypatch.delenv("AUDITSEAL_RECONCILER_KEYRING", raising=False)
    reconciler = tmp_path / "reconciler-keyring.json"
    save_keyring(archive.keyring, reconciler)
    assert _cli(archive, tmp_path, "--jobs", "2", "--reconciler-keyring", str(reconciler)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--jobs with a reconciler keyring" in err, err
    assert _cli(archive, tmp_path, "--jobs", "1", "--reconciler-keyring", str(reconciler)) in (0, 1)


class _ParentOnly:
    """Garbage left by the caller (a Kafka client of an earlier test, say): its finalizer is only safe in the
    process that made it, as a librdkafka handle's is only safe where its threads run."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.cycle = self  # collectable only by the cyclic collector

    def __del__(self) -> None:
        if os.getpid() != self.pid:
            os._exit(70)  # what a segfault in a worker looks like to the pool: the process is gone


def test_workers_never_run_finalizers_of_the_callers_garbage(tmp_path):
    # a fresh-clone make test: a --jobs worker forked from the test runner segfaulted while its garbage collector
    # ran a finalizer of an inherited object (a Kafka client an earlier test left in a cycle)
    archive = GrowingArchive(tmp_path / "archive", partitions=4)
    archive.grow(4)
    gc.collect()
    for _ in range(50):
        _ParentOnly()  # unreachable from here on, waiting for the cyclic collector
    two = verify_parallel(ArchiveVerifier(archive.keyring, as_of_micros=archive.now),
                          DirectorySource(archive.root), 2)
    assert two.intact, two.as_dict()["violations"]
