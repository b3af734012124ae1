"""Every object under the prefix accounted for, and no INTACT for an archive that proves nothing.

The attacks first: a planted object with a name the layout does not use, an empty or mistyped prefix, and
objects holding no chain; each is a violation with its kind and location, while the untouched archive
(with `s3 check`'s conformance probes beside it) stays INTACT.
"""

from pathlib import Path

import pytest

from pipeline.verifier.archive import FOREIGN_OBJECT, NO_ARCHIVE, NO_CHAIN, ArchiveVerifier, DirectorySource
from pipeline.cli.main import main
from pipeline.integrity.keyring import Keyring, generate_signing_key, save_keyring
from tests.unit.test_native_reader import START_MICROS, _sealed_partition, _write


@pytest.fixture(scope="module")
def signing():
    key = generate_signing_key()
    return key, Keyring().rotate(key.public_key, START_MICROS - 1)


def _archive(root: Path, signing) -> None:
    key, _ = signing
    _write(root, 1, _sealed_partition(key, 1, 150, every=50), per_object=100)


def test_the_untouched_archive_with_conformance_probes_is_intact(tmp_path, signing):
    _archive(tmp_path, signing)
    probe = tmp_path / "_auditseal" / "conformance" / "probe-1"
    probe.parent.mkdir(parents=True)
    probe.write_bytes(b"probe")
    report = ArchiveVerifier(signing[1]).verify(DirectorySource(tmp_path))
    assert report.intact, report.as_dict()["violations"]


def test_a_planted_object_is_reported_by_name(tmp_path, signing):
    _archive(tmp_path, signing)
    planted = tmp_path / "audit.sealed" / "001" / "00000000000000000000-backdated.avro"
    planted.write_bytes(b"whatever")
    (tmp_path / "notes.txt").write_text("hello")
    report = ArchiveVerifier(signing[1]).verify(DirectorySource(tmp_path))
    found = {v.location for v in report.violations if v.kind == FOREIGN_OBJECT}
    assert found == {"audit.sealed/001/00000000000000000000-backdated.avro", "notes.txt"}
    assert not report.intact


def test_an_empty_or_mistyped_prefix_is_a_failure(tmp_path, signing, capsys):
    _archive(tmp_path, signing)
    report = ArchiveVerifier(signing[1]).verify(DirectorySource(tmp_path, prefix="archvie/"))
    assert [v.kind for v in report.violations] == [NO_ARCHIVE]
    empty = tmp_path / "empty"
    empty.mkdir()
    keyring = tmp_path / "keyring.json"
    save_keyring(signing[1], keyring)
    assert main(["verify", "--dir", str(empty), "--keyring", str(keyring)]) == 1
    out = capsys.readouterr().out
    assert "no_archive" in out and "INTACT" not in out


def test_objects_without_any_chain_are_a_failure(tmp_path, signing):
    _archive(tmp_path, signing)
    for path in tmp_path.rglob("*.avro"):
        # keep the layout's names but no records: what a wiped or substituted export looks like
        path.unlink()
    report = ArchiveVerifier(signing[1]).verify(DirectorySource(tmp_path))
    assert NO_CHAIN in report.violation_counts
