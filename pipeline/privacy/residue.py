"""Residue: search every byte of data folders for given values, through the compression on disk.

What proves an erasure physically happened: the erased subject's values and its destroyed key must be
in no file of the stack (Kafka log segments, the S3 server's data, the key store), in any form.

A plain byte search would miss a value inside a compressed Kafka batch (producers send lz4) or a
deflate block of an archived container file, so each file is searched three ways: its raw bytes;
for a Kafka segment (``*.log``, ``*.log.*``), each record batch's records decompressed (Kafka's record
batch v2 layout, compression in the low 3 bits of the attributes); for an Avro container file
(``Obj\\x01``), each block inflated (Avro's binary encoding writes strings and bytes as they are, so a
value is found in its block's bytes as it is in the decoded record).

A container is read block by block, not through a decoder that stops at the first damage: a block
that does not inflate is inflated as far as it goes, and the blocks after it are found again by the
file's sync marker, so a damaged object (a tamper test's, a torn upload) is still searched wherever
it can be read. Whether it could be read in full is part of the answer: :func:`scan` raises
``TornContainer`` for a container it could not read whole, or lists it in ``damaged`` when the caller
asks so — a file the search could not see into entirely proves nothing either way about what it held.

The stack keeps running while it is scanned: the S3 server writes an object into a temporary file
before it renames it into place, and Kafka appends to active segments. A container file that does
not read whole yet is read again until it does or is gone (renamed: its final name is picked up when
the folders are listed again, until a listing finds nothing new).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cramjam

from pipeline.wire.varint import VarintError, read_long

_BATCH_HEADER = 61  # record batch v2: offset 8, length 4, epoch 4, magic 1, crc 4, attributes 2, ... count 4
_SETTLE_SECONDS = 5.0  # how long a container file may take to be written out
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


_MAGIC = b"Obj\x01"
_SYNC_SIZE = 16


def _inflate_raw(data: bytes) -> tuple[bytes, bool]:
    # a raw deflate stream (Avro's "deflate" codec) inflated as far as it goes, and whether all of it did
    inflater, out = zlib.decompressobj(-15), []
    for position in range(0, len(data), 4096):
        try:
            out.append(inflater.decompress(data[position:position + 4096]))
        except zlib.error:
            return b"".join(out), False
    # complete once the stream's last block is read (fastavro leaves 3 bytes of zlib's checksum after it)
    return b"".join(out), inflater.eof


def _whole(decode: Callable[[bytes], bytes]) -> Callable[[bytes], tuple[bytes, bool]]:
    # a codec with no partial output: all or nothing
    def run(data: bytes) -> tuple[bytes, bool]:
        try:
            return bytes(decode(data)), True
        except Exception:  # each codec library signals damage its own way
            return b"", False
    return run


# the codecs fastavro writes here (the sink uses deflate); a container under another one does not read whole
_CODECS: dict[bytes, Callable[[bytes], tuple[bytes, bool]]] = {
    b"null": lambda data: (data, True),
    b"deflate": _inflate_raw,
    b"bzip2": _whole(bz2.decompress),
    b"xz": _whole(lzma.decompress),
}


def _header(data: bytes) -> tuple[bytes, bytes, int]:
    # (codec name, sync marker, position of the first block) of an Avro object container file's header
    # (magic, then the metadata map of bytes values, then the sync marker); VarintError or ValueError if damaged
    position, end, codec = len(_MAGIC), len(data), b"null"
    while True:
        count, position = read_long(data, position, end)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, position = read_long(data, position, end)  # the block's size in bytes
        for _ in range(count):
            key_size, position = read_long(data, position, end)
            key = data[position:position + key_size]
            position += key_size
            value_size, position = read_long(data, position, end)
            if key_size < 0 or value_size < 0 or position + value_size > end:
                raise ValueError("a metadata entry runs past the end")
            if key == b"avro.codec":
                codec = data[position:position + value_size]
            position += value_size
    if position + _SYNC_SIZE > end:
        raise ValueError("the header ends before its sync marker")
    return codec, data[position:position + _SYNC_SIZE], position + _SYNC_SIZE


def container_blocks(data: bytes) -> tuple[list[bytes], bool]:
    """The bytes of every block of an Avro object container file, decompressed as far as each goes, and
    whether the whole file read so (every block complete, framed by the sync marker, and decompressed)."""
    try:
        codec_name, sync, position = _header(data)
    except (VarintError, ValueError):
        return [], False
    codec = _CODECS.get(codec_name)
    if codec is None:
        return [], False
    blocks, whole, end = [], True, len(data)
    while position < end:
        try:
            _, start = read_long(data, position, end)  # the block's record count
            size, start = read_long(data, start, end)
            if size < 0:
                raise ValueError("a negative block size")
        except (VarintError, ValueError):
            start, size = position, -1
        if size >= 0 and start + size + _SYNC_SIZE <= end and data[start + size:start + size + _SYNC_SIZE] == sync:
            block, complete = codec(data[start:start + size])
            blocks.append(block)
            whole = whole and complete
            position = start + size + _SYNC_SIZE
            continue
        # a damaged or cut-short block: what of it inflates, then on from the next sync marker
        whole = False
        following = data.find(sync, position)
        if size >= 0:
            blocks.append(codec(data[start:following if following >= 0 else end])[0])
        if following < 0:
            break
        position = following + _SYNC_SIZE
    return blocks, whole


class TornContainer(ValueError):
    """A file that starts like an Avro container but does not read whole (yet)."""


def views(path: Path) -> tuple[list[bytes], bool]:
    """The ways one file's content is searched (see the module doc), and whether it read whole."""
    data = path.read_bytes()
    found, whole = [data], True
    if ".log" in path.name:
        found.extend(kafka_batches(data))
    if data[:4] == _MAGIC:
        blocks, whole = container_blocks(data)
        found.extend(blocks)
    return found, whole


def settled_views(path: Path) -> tuple[list[bytes], bool] | None:
    """``views(path)``, read again while it does not read whole (a file still being written), for at most
    ``_SETTLE_SECONDS``; None once the file is gone."""
    deadline = time.monotonic() + _SETTLE_SECONDS
    while True:
        try:
            found, whole = views(path)
        except FileNotFoundError:  # a segment the cleaner unlinked, or a temporary file renamed into place
            return None
        if whole or time.monotonic() >= deadline:
            return found, whole
        time.sleep(0.2)


def _files(roots: Iterable[Path]) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


def scan(roots: Iterable[Path], needles: Iterable[bytes],
         damaged: list[str] | None = None) -> dict[bytes, list[str]]:
    """``{needle: [files it is in]}`` for every needle found under ``roots``; files read as they are now.

    A container file that does not read whole (after ``_SETTLE_SECONDS``) is searched as far as it reads,
    then raises ``TornContainer`` naming it, or, if ``damaged`` is given, is added to it: a caller that
    expects damaged objects (a stack other tests tampered with) decides which of them matter.
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
            settled = settled_views(path)
            if settled is None:
                continue
            contents, whole = settled
            files += 1
            for needle in needles:
                if any(needle in view for view in contents):
                    found.setdefault(needle, []).append(str(path))
            if not whole:
                if damaged is None:
                    raise TornContainer(f"{path}: an Avro container that does not read whole (searched as far as "
                                        "it reads): the scan cannot tell what the rest held")
                damaged.append(str(path))
    if not files:
        raise FileNotFoundError(f"nothing to scan under {', '.join(map(str, roots))}")
    return found
