"""``auditseal export`` from a local archive copy: one document per archived record, in chain order,
overlapping copies once, the time filter, and the exit codes for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.archive.container import build_object
from pipeline.archive.retention import load_profiles
from pipeline.siem import ocsf
from pipeline.siem.evidence import verify_record
from tests.unit.test_siem_ocsf import KEYRING, T0, _sealed_values

REPO = Path(__file__).resolve().parents[2]


def _write_archive(root: Path, values: list[bytes], per_object: int, overlap: int = 0) -> None:
    profile = load_profiles(None).get("soc2")
    records = [(offset, T0 // 1000, value) for offset, value in enumerate(values)]
    start = 0
    while start < len(records):
        chunk = records[max(0, start - overlap):start + per_object]
        archived = build_object("audit.sealed", 2, chunk, profile=profile)
        (root / archived.key).parent.mkdir(parents=True, exist_ok=True)
        (root / archived.key).write_bytes(archived.body)
        (root / archived.manifest_key).write_bytes(archived.manifest_bytes)
        start += per_object


def _export(*args: str, spool: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", "export", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={"AUDITSEAL_ACCESS_SPOOL": str(spool), "PATH": "/usr/bin:/bin"})


def test_export_from_dir_writes_each_record_once_in_order(tmp_path):
    values = _sealed_values(120, checkpoint_every=25)
    _write_archive(tmp_path / "bucket", values, per_object=40, overlap=3)  # a sink retry overlapped 3 records
    out = tmp_path / "out.jsonl"
    result = _export("--from", "dir", "--dir", str(tmp_path / "bucket"), "--out", str(out), spool=tmp_path / "s")
    assert result.returncode == 0, result.stderr
    documents = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["unmapped"]["auditseal"]["sealed"]["offset"] for d in documents] == list(range(len(values)))
    assert all(verify_record(d, KEYRING) for d in documents)
    assert f"read {len(values)} sealed records" in result.stderr and "overlapping copies skipped" in result.stderr
    access = json.loads((tmp_path / "s").read_text().splitlines()[-1])
    assert access["action"] == "archive.export"


def test_export_time_filter_and_json_format(tmp_path):
    values = _sealed_values(60, checkpoint_every=25)
    _write_archive(tmp_path / "bucket", values, per_object=1000)
    out = tmp_path / "all.jsonl"
    assert _export("--from", "dir", "--dir", str(tmp_path / "bucket"), "--out", str(out),
                   spool=tmp_path / "s").returncode == 0
    times = sorted(json.loads(line)["time"] for line in out.read_text().splitlines())
    middle = times[len(times) // 2]
    kept = tmp_path / "kept.jsonl"
    assert _export("--from", "dir", "--dir", str(tmp_path / "bucket"), "--since", str(middle), "--out", str(kept),
                   spool=tmp_path / "s").returncode == 0
    kept_times = [json.loads(line)["time"] for line in kept.read_text().splitlines()]
    assert kept_times and all(t >= middle for t in kept_times) and len(kept_times) == sum(t >= middle for t in times)
    plain = tmp_path / "plain.jsonl"
    assert _export("--from", "dir", "--dir", str(tmp_path / "bucket"), "--format", "json", "--out", str(plain),
                   spool=tmp_path / "s").returncode == 0
    kinds = {json.loads(line)["kind"] for line in plain.read_text().splitlines()}
    assert kinds == {"event", "rejection", "checkpoint"}


@pytest.mark.parametrize("args, code, message", [
    (["--from", "dir"], 2, "--from dir needs --dir"),
    (["--from", "dir", "--dir", "/nonexistent"], 2, "not a directory"),
    (["--from", "s3", "--dir", "x"], 2, "--from s3 takes --s3 only"),
    (["--from", "dir", "--dir", ".", "--since", "2026-12-02", "--until", "2026-12-01"], 2, "--until must be after"),
    (["--since", "yesterday"], 2, "expected an ISO 8601 time"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, code, message):
    result = _export(*args, spool=tmp_path / "s")
    assert result.returncode == code and message in result.stderr and "Traceback" not in result.stderr


def test_a_damaged_archive_object_exits_1_naming_it(tmp_path):
    values = _sealed_values(30, checkpoint_every=25)
    _write_archive(tmp_path / "bucket", values, per_object=1000)
    victim = next((tmp_path / "bucket").rglob("*.avro"))
    victim.write_bytes(victim.read_bytes()[:200])
    result = _export("--from", "dir", "--dir", str(tmp_path / "bucket"), "--out", str(tmp_path / "o"),
                     spool=tmp_path / "s")
    assert result.returncode == 1 and victim.name in result.stderr and "Traceback" not in result.stderr


def test_unmapped_records_are_exported_and_counted(tmp_path):
    values = _sealed_values(20, checkpoint_every=100)
    values.insert(3, b"\xc3\x01" + bytes(8) + b"junk")
    _write_archive(tmp_path / "bucket", values, per_object=1000)
    out = tmp_path / "o.jsonl"
    result = _export("--from", "dir", "--dir", str(tmp_path / "bucket"), "--out", str(out), spool=tmp_path / "s")
    assert result.returncode == 0 and "(1 unmapped" in result.stderr
    documents = [json.loads(line) for line in out.read_text().splitlines()]
    assert documents[3]["class_uid"] == ocsf.BASE_EVENT and len(documents) == len(values)
