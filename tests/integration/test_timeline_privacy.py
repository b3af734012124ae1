"""``auditseal timeline`` over protected personal data: ``actor.id`` holds the subject's pseudonym in the
archive (and in its query index), so an investigator finds a person's events by the pseudonym, or by name
with ``--pseudonymize`` (the pseudonym computed with the key store's pseudonym key), never by the plaintext
id, which the archive does not hold. The protected archive is test_privacy's own fixture (producer with a
Protector -> real sealer -> real sink -> bucket)."""

from __future__ import annotations

import json

import pytest

from pipeline.cli.main import main
from tests.integration.test_privacy import ALICE, _env, pipeline_run  # noqa: F401  (the fixture, reused)

pytestmark = pytest.mark.stack


@pytest.fixture(autouse=True)
def access_spool(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDITSEAL_ACCESS_SPOOL", str(tmp_path / "access.jsonl"))


def _ids(capsys, *args):
    capsys.readouterr()
    code = main(["timeline", "--json", *args])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return code, [line["event_id"] for line in lines if line["type"] == "event"], lines[-1]


def test_a_person_is_found_by_pseudonym_not_by_plaintext(stack, pipeline_run, capsys, monkeypatch):  # noqa: F811
    _env(monkeypatch, stack, "investigator")
    uri = f"s3://audit-archive/{pipeline_run['prefix']}"
    keyring = ["--keyring", str(stack.keyring_file), "--s3", uri]
    # alice's events in both encodings (v3's protected_subjects, and v2's protected_fields as archived before)
    wanted = sorted(str(event_id) for event_id in pipeline_run["ids"]["alice"] + pipeline_run["ids"]["alice_v2"])
    code, plain, summary = _ids(capsys, *keyring, "--actor", ALICE["id"])
    assert code == 0 and plain == [] and summary["complete"]  # the plaintext id is nowhere in the archive
    code, by_pseudonym, _ = _ids(capsys, *keyring, "--actor", pipeline_run["pseudonyms"]["alice"])
    assert code == 0 and sorted(by_pseudonym) == wanted
    code, by_name, summary = _ids(capsys, *keyring, "--actor", ALICE["id"], "--pseudonymize")
    assert code == 0 and sorted(by_name) == wanted
    assert summary["query"]["actor_pseudonym"] == pipeline_run["pseudonyms"]["alice"]
    # the index holds pseudonyms too: the pseudonymous query skips what cannot match, like any other
    assert summary["objects"]["with_index"] == summary["objects"]["total"]
