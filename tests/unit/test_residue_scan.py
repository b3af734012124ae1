"""The residue scan searches files while the stack writes them: a container file caught half written is read
again until it decodes or is renamed away, and one that never decodes fails the scan, naming the file."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import fastavro
import pytest

from pipeline.privacy import residue

SCHEMA = fastavro.parse_schema({"type": "record", "name": "R", "fields": [{"name": "v", "type": "string"}]})
SECRET = "alice@example.org"


def _container(value: str) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, SCHEMA, [{"v": value}] * 50, codec="deflate")
    return out.getvalue()


def _later(seconds: float, action) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        action()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_deflated_value_is_found_that_a_byte_search_misses(tmp_path: Path):
    (tmp_path / "object").write_bytes(_container(SECRET))
    assert SECRET.encode() not in (tmp_path / "object").read_bytes()
    assert residue.scan([tmp_path], [SECRET.encode()]) == {SECRET.encode(): [str(tmp_path / "object")]}


def test_a_container_still_being_written_is_read_again_once_it_is_whole(tmp_path: Path):
    whole = _container(SECRET)
    target = tmp_path / "object"
    target.write_bytes(whole[: len(whole) // 2])
    writer = _later(0.5, lambda: target.write_bytes(whole))
    found = residue.scan([tmp_path], [SECRET.encode()])
    writer.join()
    assert found == {SECRET.encode(): [str(target)]}


def test_a_temporary_file_renamed_into_place_is_searched_under_its_final_name(tmp_path: Path):
    whole = _container(SECRET)
    temporary, final = tmp_path / ".tmp-upload", tmp_path / "object"
    temporary.write_bytes(whole[:40])

    def finish() -> None:
        temporary.write_bytes(whole)
        temporary.rename(final)
    (tmp_path / "other").write_bytes(b"nothing here")
    mover = _later(0.5, finish)
    found = residue.scan([tmp_path], [SECRET.encode()])
    mover.join()
    assert found == {SECRET.encode(): [str(final)]}


def test_a_container_that_never_decodes_fails_the_scan_naming_the_file(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(residue, "_SETTLE_SECONDS", 0.5)
    whole = _container(SECRET)
    (tmp_path / "torn").write_bytes(whole[: len(whole) - 7])
    with pytest.raises(residue.TornContainer, match=r"torn: an Avro container that does not decode"):
        residue.scan([tmp_path], [SECRET.encode()])


def test_an_empty_folder_is_an_error_not_a_clean_result(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nothing to scan"):
        residue.scan([tmp_path], [SECRET.encode()])
