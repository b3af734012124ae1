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
    with pytest.raises(residue.TornContainer, match=r"torn: an Avro container that does not read whole"):
        residue.scan([tmp_path], [SECRET.encode()])


def _blocks(values: list[str]) -> bytes:
    # one deflate block per value (a sync marker between each)
    out = io.BytesIO()
    writer = fastavro.write.Writer(out, SCHEMA, codec="deflate")
    for value in values:
        writer.write({"v": value})
        writer.flush()
    writer.flush()
    return out.getvalue()


def test_a_damaged_block_is_searched_as_far_as_it_reads_and_the_blocks_after_it_too(tmp_path: Path, monkeypatch):
    # a tamper test's object in the S3 server's data: one byte flipped inside its middle block
    monkeypatch.setattr(residue, "_SETTLE_SECONDS", 0.2)
    before, after = "before@example.org", "after@example.org"
    whole = _blocks([before, "x" * 2000, after])
    blocks, complete = residue.container_blocks(whole)
    assert complete and len(blocks) == 3
    _, sync, first_block = residue._header(whole)
    second_block = whole.index(sync, first_block) + len(sync)
    third_block = whole.index(sync, second_block) + len(sync)
    damaged_bytes = bytearray(whole)
    damaged_bytes[(second_block + third_block) // 2] ^= 0xFF  # inside the middle block's deflate stream
    (tmp_path / "tampered").write_bytes(bytes(damaged_bytes))
    damaged: list[str] = []
    found = residue.scan([tmp_path], [before.encode(), after.encode()], damaged)
    assert damaged == [str(tmp_path / "tampered")]
    assert set(found) == {before.encode(), after.encode()}  # the blocks on either side of the damage
    with pytest.raises(residue.TornContainer, match="tampered"):
        residue.scan([tmp_path], [before.encode()])


def test_every_codec_the_sink_could_use_is_read(tmp_path: Path):
    for codec in ("null", "deflate", "bzip2", "xz"):
        out = io.BytesIO()
        fastavro.writer(out, SCHEMA, [{"v": SECRET}], codec=codec)
        blocks, complete = residue.container_blocks(out.getvalue())
        assert complete and any(SECRET.encode() in block for block in blocks), codec


def test_a_container_under_a_codec_it_cannot_read_is_not_whole():
    out = io.BytesIO()
    fastavro.writer(out, SCHEMA, [{"v": SECRET}], codec="null")
    data = out.getvalue().replace(b"\x08null", b"\x08zzzz", 1)  # the codec's name in the header
    assert residue.container_blocks(data) == ([], False)


def test_an_empty_folder_is_an_error_not_a_clean_result(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nothing to scan"):
        residue.scan([tmp_path], [SECRET.encode()])
