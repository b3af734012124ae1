"""Offline proofs of logging, C2SP tlog-proof v1 (https://c2sp.org/tlog-proof).

    c2sp.org/tlog-proof@v1\\n
    [extra <base64(opaque data)>\\n]       not authenticated: a hint for rebuilding the leaf, never trusted
    index <decimal>\\n                     the entry's zero-based index in the tree
    <base64(hash)>\\n ...                  RFC 6962 inclusion proof, leaf's sibling first
    \\n
    <signed tree head note, verbatim>     tlog-checkpoint, with the log's signature and cosignatures

transparency-dev/formats' proof.TLogProof reads and writes exactly this.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from pipeline.integrity.errors import MalformedNoteError
from pipeline.integrity.merkle import HASH_SIZE

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"


@dataclass(frozen=True, slots=True)
class TlogProof:
    """A tlog-proof: entry index, inclusion path, the signed tree head note's bytes and optional extra data."""

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or isinstance(self.index, bool) or not 0 <= self.index < 2**64:
            raise MalformedNoteError(f"a tlog-proof index must be an integer in [0, 2**64), found {self.index!r}")
        for value in self.hashes:
            if not isinstance(value, bytes) or len(value) != HASH_SIZE:
                raise MalformedNoteError(f"a tlog-proof hash must be {HASH_SIZE} bytes, found {value!r}")
        if not self.checkpoint.endswith(b"\n"):
            raise MalformedNoteError("a tlog-proof's checkpoint must be a signed note ending in a newline")

    def to_bytes(self) -> bytes:
        """The proof file's bytes (module docstring)."""
        lines = [TLOG_PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode("ascii"))
        lines.append(f"index {self.index}")
        lines += [base64.b64encode(value).decode("ascii") for value in self.hashes]
        return ("\n".join(lines) + "\n\n").encode("ascii") + self.checkpoint


def parse_tlog_proof(data: bytes) -> TlogProof:
    """Parse a tlog-proof file; MalformedNoteError naming the line that is wrong."""
    header, separator, rest = data.partition(b"\n\n")
    if not separator:
        raise MalformedNoteError("a tlog-proof needs an empty line between the proof and the checkpoint")
    try:
        lines = header.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise MalformedNoteError("a tlog-proof's proof lines must be ASCII") from None
    if lines[0] != TLOG_PROOF_HEADER:
        raise MalformedNoteError(f"a tlog-proof starts with {TLOG_PROOF_HEADER!r}, found {lines[0][:60]!r}")
    position = 1
    extra = None
    if position < len(lines) and lines[position].startswith("extra "):
        extra = _b64(lines[position][len("extra ") :], "extra data")
        position += 1
    if position >= len(lines) or not lines[position].startswith("index "):
        raise MalformedNoteError("a tlog-proof needs an 'index <n>' line after its header")
    index_text = lines[position][len("index ") :]
    if not index_text.isdigit() or not index_text.isascii() or (index_text != "0" and index_text.startswith("0")):
        raise MalformedNoteError(f"a tlog-proof index is a decimal without leading zeroes, found {index_text!r}")
    hashes = tuple(_b64(line, f"proof line {number}") for number, line in enumerate(lines[position + 1 :], 1))
    for number, value in enumerate(hashes, 1):
        if len(value) != HASH_SIZE:
            raise MalformedNoteError(f"tlog-proof proof line {number}: expected a {HASH_SIZE}-byte hash, found {len(value)}")
    return TlogProof(int(index_text), hashes, rest, extra)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedNoteError(f"tlog-proof {what}: expected base64, found {text[:60]!r}") from None
