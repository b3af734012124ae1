"""Archives and proofs written by v1 code stay verifiable: a frozen v1 archive and proof, read by today's code.

tests/fixtures/v1_archive.json was written once by the v1 sealer, sink and prover (commit "integrity-v2:
v1 fixture"), before any v2 format change: two chains of `audit.raw`, checkpoints every 10 entries, a
rejection, objects of 15 records with their manifests, the public keyring, and a v1 JSON proof. Its bytes
are never regenerated: a change that stops today's verifier reading them breaks archives locked for years.
Regenerate only for a new fixture file: ``python -m tests.unit.test_v1_compatibility NEW_FILE``.
"""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from pipeline.archive.container import build_object
from pipeline.archive.retention import ComplianceProfile
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import Keyring, SigningKey, load_keyring, save_keyring
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.verifier.archive import ArchiveVerifier, DirectorySource
from pipeline.verifier.proofs import verify_proof
from pipeline.wire.codec import default_codec

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v1_archive.json"
START_MICROS = 1_767_225_600_000_000
PROOF_EVENT_INDEX = 17


def write_fixture(path: Path) -> None:
    """Seal, archive and prove with the current code, and store every byte (base64) in `path`."""
    import tempfile

    from pipeline.cli.prove import find_proof

    key = SigningKey.from_seed(bytes(range(100, 132)))
    keyring = Keyring().rotate(key.public_key, START_MICROS - 1)
    codec = default_codec()
    profile = ComplianceProfile("fixture", days=1)
    files: dict[str, bytes] = {}
    proof_event = None
    for partition in (0, 1):
        chain_id = f"audit.raw/{partition}"
        sealer = ChainSealer(chain_id, partition, key, ChainHead.genesis(chain_id))
        values = []
        start = datetime.fromtimestamp(START_MICROS / 1e6, UTC)
        for n, event in enumerate(synthetic_events(30, seed=partition, start=start)):
            raw = b"not an event" if n == 4 else codec.encode(event)
            values.append(sealer.seal(raw, n, START_MICROS + n).value)
            if partition == 0 and n == PROOF_EVENT_INDEX:
                proof_event = str(event["event_id"])
            if n % 10 == 9:
                values.append(sealer.checkpoint(START_MICROS + n).value)
        records = [(offset, START_MICROS // 1000, value) for offset, value in enumerate(values)]
        for first in range(0, len(records), 15):
            obj = build_object("audit.sealed", partition, records[first:first + 15], profile=profile)
            files[obj.key] = obj.body
            files[obj.manifest_key] = obj.manifest_bytes
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        proof = find_proof(DirectorySource(root), proof_event)
        save_keyring(keyring, root / "keyring.json")
        keyring_text = (root / "keyring.json").read_text()
    path.write_text(json.dumps({
        "files": {name: base64.b64encode(data).decode() for name, data in sorted(files.items())},
        "keyring": keyring_text,
        "proof": proof,
    }, indent=1, sort_keys=True) + "\n")


def _materialise(tmp_path: Path) -> tuple[Path, dict]:
    fixture = json.loads(FIXTURE.read_text())
    root = tmp_path / "archive"
    for name, data in fixture["files"].items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(base64.b64decode(data))
    (tmp_path / "keyring.json").write_text(fixture["keyring"])
    return root, fixture


def test_the_v1_archive_verifies_intact(tmp_path):
    root, _ = _materialise(tmp_path)
    report = ArchiveVerifier(load_keyring(tmp_path / "keyring.json")).verify(DirectorySource(root))
    assert report.intact, report.as_dict()["violations"]
    assert report.as_dict()["chains"] == {"audit.sealed:audit.raw/0": {"last_seq": 29},
                                          "audit.sealed:audit.raw/1": {"last_seq": 29}}
    assert report.checkpoints == report.checkpoints_valid == 6


def test_the_v1_archive_still_shows_tampering(tmp_path):
    root, _ = _materialise(tmp_path)
    victim = sorted(root.rglob("*.avro"))[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    report = ArchiveVerifier(load_keyring(tmp_path / "keyring.json")).verify(DirectorySource(root))
    assert not report.intact


def test_the_v1_proof_verifies(tmp_path):
    _, fixture = _materialise(tmp_path)
    verified = verify_proof(fixture["proof"], load_keyring(tmp_path / "keyring.json"))
    assert (verified.chain_id, verified.seq) == ("audit.raw/0", PROOF_EVENT_INDEX)


def _continue_in_v2(root: Path, *, skip_offset: int | None = None, gap_cause: str | None = None) -> None:
    """Seal 15 more raw records of each chain with today's sealer (version 2 checkpoints, resumed from the
    fixture's last v1 checkpoint) and archive them after the fixture's objects, as the sink would."""
    from pipeline.verifier.archive import archived_values
    from pipeline.wire.sealed import CHECKPOINT_KIND, sealed_codecs

    codecs = sealed_codecs()
    key = SigningKey.from_seed(bytes(range(100, 132)))
    profile = ComplianceProfile("fixture", days=1)
    for partition in (0, 1):
        chain_id = f"audit.raw/{partition}"
        values = [value for obj in sorted(root.glob(f"audit.sealed/{partition:03d}/*.avro"))
                  for _, value in archived_values(obj.read_bytes())]
        last = next(record for kind, record in map(codecs.decode, reversed(values)) if kind == CHECKPOINT_KIND)
        sealer = ChainSealer.resume(chain_id, partition, key, last, origin=f"auditseal/fixture/{chain_id}")
        codec = default_codec()
        start = datetime.fromtimestamp(START_MICROS / 1e6, UTC)
        new_values = []
        for n, event in enumerate(synthetic_events(15, seed=10 + partition, start=start)):
            offset = sealer.next_source_offset
            if offset == skip_offset:  # a raw record that never reached the sealer (deleted, expired)
                if gap_cause is not None:  # ... and the sealer said so
                    new_values.append(sealer.seal_gap(offset, gap_cause, "test", START_MICROS + 100 + n).value)
                offset += 1
            new_values.append(sealer.seal(codec.encode(event), offset, START_MICROS + 100 + n).value)
            if n % 5 == 4:
                new_values.append(sealer.checkpoint(START_MICROS + 100 + n).value)
        records = [(len(values) + n, START_MICROS // 1000, value) for n, value in enumerate(new_values)]
        for first in range(0, len(records), 9):
            obj = build_object("audit.sealed", partition, records[first:first + 9], profile=profile)
            (root / obj.key).write_bytes(obj.body)
            (root / obj.manifest_key).write_bytes(obj.manifest_bytes)


def test_a_chain_that_moves_from_v1_to_v2_checkpoints_verifies_across_the_change(tmp_path):
    root, _ = _materialise(tmp_path)
    _continue_in_v2(root)
    report = ArchiveVerifier(load_keyring(tmp_path / "keyring.json")).verify(DirectorySource(root))
    assert report.intact, report.as_dict()["violations"]
    assert report.as_dict()["chains"] == {"audit.sealed:audit.raw/0": {"last_seq": 44},
                                          "audit.sealed:audit.raw/1": {"last_seq": 44}}
    assert report.checkpoints == report.checkpoints_valid == 12


def test_a_raw_record_missing_after_the_change_to_v2_is_named_with_its_offset(tmp_path):
    root, _ = _materialise(tmp_path)
    _continue_in_v2(root, skip_offset=37)
    report = ArchiveVerifier(load_keyring(tmp_path / "keyring.json")).verify(DirectorySource(root))
    assert report.violation_counts == {"unaccounted_offsets": 2}, report.as_dict()["violations"]
    assert all("raw offsets 37..37 are accounted for by no entry" in v.detail for v in report.violations)


def test_a_gap_entry_accounts_for_the_missing_raw_offset_and_lost_records_are_named(tmp_path):
    root, _ = _materialise(tmp_path)
    _continue_in_v2(root, skip_offset=37, gap_cause="lost")
    report = ArchiveVerifier(load_keyring(tmp_path / "keyring.json")).verify(DirectorySource(root))
    assert report.violation_counts == {"lost_records": 2}, report.as_dict()["violations"]
    assert {(v.chain_id, v.seq) for v in report.violations} == {("audit.raw/0", 37), ("audit.raw/1", 37)}
    assert all("raw offsets 37..37 (1 offset) were lost before they were sealed" in v.detail for v in report.violations)


def test_offsets_the_broker_skipped_are_a_notice_not_a_violation(tmp_path):
    root, _ = _materialise(tmp_path)
    _continue_in_v2(root, skip_offset=37, gap_cause="skipped")
    report = ArchiveVerifier(load_keyring(tmp_path / "keyring.json")).verify(DirectorySource(root))
    assert report.intact, report.as_dict()["violations"]
    assert [n.kind for n in report.notices if n.kind == "skipped_offsets"] == ["skipped_offsets", "skipped_offsets"]
    # a chain resumed from v1 has no history tree yet, so no tree heads: said, not hidden
    assert [n.kind for n in report.notices if n.kind != "skipped_offsets"] == ["no_tree_heads", "no_tree_heads"]


if __name__ == "__main__":
    write_fixture(Path(sys.argv[1]))
