"""Residue: search every byte of data folders for given values, through the compression on disk.

What proves an erasure physically happened: the erased subject's values and its destroyed key must be
in no file of the stack (Kafka log segments, the S3 server's data, the key store), in any form.

A plain byte search would miss a value inside a compressed Kafka batch (producers send lz4) or a
deflate block of an archived container file, so each file is searched three ways: its raw bytes;
for a Kafka segment (``*.log``, ``*.log.*``), each record batch's records decompressed (Kafka's record
batch v2 layout, compression in the low 3 bits of the attributes); for an Avro container file
(``Obj\\x01``), every record's value bytes decoded.

The stack keeps running while it is scanned: the S3 server writes an object into a temporary file
before it renames it into place, and Kafka appends to active segments. A container file that does
not decode yet is read again until it does or is gone (renamed: its final name is picked up when the
folders are listed again, until a listing finds nothing new); one that still does not decode after
that is an error naming the file, never a file left out of the search.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import cramjam
import fastavro

_BATCH_HEADER = 61  # record batch v2: offset 8, length 4, epoch 4, magic 1, crc 4, attributes 2, ... count 4
_SETTLE_SECONDS = 10.0  # how long a container file may take to be written out
_RELIST_PASSES = 5      # listings after the first, for files that appeared during the scan
_DECOMPRESS = {1: cramjam.gzip.decompress, 3: cramjam.lz4.decompress, 4: cramjam.zstd.decompress}


def kafka_batches(data: bytes) -> Iterator[bytes]:
    """The (decompressed) records region of every v2 record batch of a Kafka log segment."""
    position = 0
    while position + 12 <= len(data):
        length = struct.unpack_from(">i", data, position + 8)[0]
        if length <= 0 or position + 12 + length > len(data):
            return  # preallocated zeros at the end of an active segment, or a torn tail
        batch = data[position:position + 12 + length]
        position += 12 + length
        if batch[16] != 2:
            continue
        compression = struct.unpack_from(">h", batch, 21)[0] & 0x7
        records = batch[_BATCH_HEADER:]
        # snappy (2) is not used by our clients; its batches are searched as stored, like uncompressed ones
        yield bytes(_DECOMPRESS[compression](records)) if compression in _DECOMPRESS else records


def container_values(data: bytes) -> Iterator[bytes]:
    """Every field of every record of an Avro object container file, as bytes."""
    for record in fastavro.reader(io.BytesIO(data)):
        for value in record.values():
            yield value if isinstance(value, bytes) else str(value).encode()


class TornContainer(ValueError):
    """A file that starts like an Avro container but does not decode (yet)."""


def views(path: Path) -> Iterator[bytes]:
    """The ways one file's content is searched (see the module doc)."""
    data = path.read_bytes()
    yield data
    if ".log" in path.name:
        yield from kafka_batches(data)
    if data[:4] == b"Obj\x01":
        try:
            values = list(container_values(data))
        except (ValueError, EOFError, StopIteration) as exc:
            raise TornContainer(f"{path}: an Avro container that does not decode ({exc})") from exc
        yield from values


def settled_views(path: Path) -> list[bytes] | None:
    """``views(path)``, read again while the file is still being written; None once it is gone."""
    deadline = time.monotonic() + _SETTLE_SECONDS
    while True:
        try:
            return list(views(path))
        except FileNotFoundError:  # a segment the cleaner unlinked, or a temporary file renamed into place
            return None
        except TornContainer:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _files(roots: Iterable[Path]) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


def scan(roots: Iterable[Path], needles: Iterable[bytes]) -> dict[bytes, list[str]]:
    """``{needle: [files it is in]}`` for every needle found under ``roots``; files read as they are now.

    Raises ``TornContainer`` for a container file that still does not decode after ``_SETTLE_SECONDS``:
    a file the search could not see into proves nothing either way.
    """
    roots, needles = list(roots), [n for n in needles if n]
    found: dict[bytes, list[str]] = {}
    seen: set[Path] = set()
    files = 0
    for _ in range(1 + _RELIST_PASSES):
        new = [path for path in _files(roots) if path not in seen]
        if not new:
            break
        for path in new:
            seen.add(path)
            contents = settled_views(path)
            if contents is None:
                continue
            files += 1
            for needle in needles:
                if any(needle in view for view in contents):
                    found.setdefault(needle, []).append(str(path))
    if not files:
        raise FileNotFoundError(f"nothing to scan under {', '.join(map(str, roots))}")
    return found
