"""Reading a size-rotated log exactly once across restarts and rotations, from a durable position.

log4j2's ``DefaultRolloverStrategy`` renames ``name`` to ``name.1`` (shifting ``name.1`` to
``name.2`` and so on, dropping the oldest) and starts a new ``name``. A rename keeps the inode and
the bytes, so a :class:`Position` is (inode, byte offset, hash and length of the last line read):
after a restart the reader finds its file again wherever rotation moved it, checks that the bytes
before the offset are the line it last read (so a reused inode or a rewritten file is not mistaken
for ours), finishes that file, and continues with the next newer one. Only complete lines are
read; a line still being written waits for its newline (except in a rotated file, which is final).

If the file being read is gone (rotated out before it was read to the end, or replaced), entries
may have been lost; :class:`Batch` then carries a ``gap`` description and reading restarts from the
oldest file still there. The caller records the gap: it must not pass unnoticed.

The caller persists ``Batch.position`` only after the batch's events are delivered, with
:func:`save_positions` (atomic replace + fsync).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Position:
    """Where reading stopped: file (inode), byte offset after the last line read, and that line's
    SHA-256 and length (empty/0 at the start of a file)."""

    inode: int
    offset: int
    last_line_sha256: str = ""
    last_line_length: int = 0


@dataclass(frozen=True)
class Line:
    """One complete log line (without its newline), where it starts, and the id of its file."""

    text: bytes
    offset: int
    source_id: str  # SHA-256 of the file's first line: names the file wherever rotation moves it


@dataclass(frozen=True)
class Batch:
    """Lines read, the position after them, and a description of entries possibly lost (or None)."""

    lines: list[Line]
    position: Position | None
    gap: str | None = None


class RotatingLog:
    """A log file ``path`` and its rotated predecessors ``path.1`` (newest) .. ``path.N`` (oldest)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def files(self) -> list[tuple[Path, os.stat_result]]:
        """Existing files, oldest first, with their stat."""
        pattern = re.compile(re.escape(self.path.name) + r"\.(\d+)$")
        rotated = []
        if self.path.parent.is_dir():
            for candidate in self.path.parent.iterdir():
                match = pattern.match(candidate.name)
                if match:
                    rotated.append((int(match.group(1)), candidate))
        ordered = [p for _i, p in sorted(rotated, reverse=True)] + [self.path]
        found = []
        for path in ordered:
            try:
                found.append((path, path.stat()))
            except FileNotFoundError:  # rotated away between listing and stat
                continue
        return found

    def end_position(self) -> Position | None:
        """The position after the last complete line of the active file (None if there is none yet)."""
        try:
            with open(self.path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                data = handle.read()
        except FileNotFoundError:
            return None
        end = data.rfind(b"\n") + 1
        if end == 0:
            return Position(stat.st_ino, 0)
        start = data.rfind(b"\n", 0, end - 1) + 1
        line = data[start:end]
        return Position(stat.st_ino, end, hashlib.sha256(line).hexdigest(), len(line))

    def read(self, position: Position | None, max_lines: int = 1000) -> Batch:
        """Up to ``max_lines`` complete lines after ``position`` (None: from the oldest file's start)."""
        files = self.files()
        if not files:
            return Batch([], position)
        gap = None
        index = None
        if position is not None:
            index = next((i for i, (_p, st) in enumerate(files) if st.st_ino == position.inode), None)
            if index is None or not _verified(files[index][0], position):
                gap = (f"the file last read (inode {position.inode}, offset {position.offset}) is no longer "
                       f"{'there' if index is None else 'the same'}; entries after that offset may be lost, "
                       f"reading resumes at the oldest file present ({files[0][0].name})")
                index, position = None, None
        if index is None:
            index = 0
            position = Position(files[0][1].st_ino, 0)
        lines: list[Line] = []
        while len(lines) < max_lines:
            path, stat = files[index]
            is_newest = index == len(files) - 1
            got, position = _read_file(path, position, max_lines - len(lines), final=not is_newest)
            if got is None:  # renamed or replaced while we looked: list the files again next time
                break
            lines.extend(got)
            if len(lines) >= max_lines or is_newest or not _at_end(path, position):
                break
            # a rotated file read to its end: continue with the next newer one (by inode, as listed)
            index += 1
            position = Position(files[index][1].st_ino, 0)
        return Batch(lines, position, gap)


def _verified(path: Path, position: Position) -> bool:
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_ino != position.inode:
                return False
            size = os.fstat(handle.fileno()).st_size
            if size < position.offset:
                return False
            if position.last_line_length == 0:
                return position.offset == 0
            handle.seek(position.offset - position.last_line_length)
            line = handle.read(position.last_line_length)
    except FileNotFoundError:
        return False
    return hashlib.sha256(line).hexdigest() == position.last_line_sha256


def _read_file(path: Path, position: Position, limit: int, *, final: bool) -> tuple[list[Line] | None, Position]:
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return None, position
    with handle:
        if os.fstat(handle.fileno()).st_ino != position.inode:
            return None, position
        first = handle.readline()
        source_id = hashlib.sha256(first).hexdigest()
        handle.seek(position.offset)
        lines: list[Line] = []
        offset = position.offset
        while len(lines) < limit:
            text = handle.readline()
            if not text:
                break
            if not text.endswith(b"\n") and not final:
                break  # still being written
            lines.append(Line(text.rstrip(b"\r\n"), offset, source_id))
            offset += len(text)
            position = Position(position.inode, offset, hashlib.sha256(text).hexdigest(), len(text))
        return lines, position


def _at_end(path: Path, position: Position) -> bool:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return True
    return stat.st_ino != position.inode or stat.st_size <= position.offset


def load_positions(path: Path) -> dict[str, Position]:
    """Saved positions by source name (empty if the state file does not exist yet)."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {name: Position(**value) for name, value in document.get("positions", {}).items()}


def save_positions(path: Path, positions: dict[str, Position]) -> None:
    """Write the positions atomically (:func:`save_json_atomically`)."""
    save_json_atomically(path, {"version": 1, "positions": {k: asdict(v) for k, v in positions.items()}})


def save_json_atomically(path: Path, document: object) -> None:
    """Write ``document`` as JSON to ``path`` atomically (temporary file, fsync, rename, fsync of the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    data = json.dumps(document, indent=2)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
