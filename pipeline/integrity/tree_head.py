"""Tree heads as C2SP tlog-checkpoint notes (https://c2sp.org/tlog-checkpoint).

A tree head says "the log named origin has `size` entries and this RFC 6962 root hash". Its
body is the note text

    <origin>\\n                     the log's identity; also the log key's note key name
    <size>\\n                       decimal, no leading zeroes
    <base64(root hash)>\\n          standard base64 of the 32-byte Merkle Tree Hash
    [<extension line>\\n ...]       optional, opaque to witnesses

signed as a C2SP signed note by the log's Ed25519 key (note key name = origin), and cosigned by
witnesses (`pipeline.integrity.cosignature`). Any C2SP client (transparency-dev/formats'
log.ParseCheckpoint, for one) reads it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from pipeline.integrity.errors import MalformedNoteError
from pipeline.integrity.merkle import HASH_SIZE
from pipeline.integrity.note import (
    Note,
    NoteSigner,
    NoteVerifier,
    parse_note,
    require_key_name,
    require_signed_by,
    sign_note,
)

MAX_TREE_SIZE = 2**64 - 1


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A tlog-checkpoint body: origin, tree size, root hash and extension lines (without newlines)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        require_key_name(self.origin)
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise MalformedNoteError(f"tree head size must be an integer in [0, 2**64 - 1], found {self.size!r}")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise MalformedNoteError(f"tree head root hash must be {HASH_SIZE} bytes, found {self.root_hash!r}")
        for line in self.extensions:
            if not isinstance(line, str) or not line or "\n" in line:
                raise MalformedNoteError(f"a tree head extension line must be non-empty text, found {line!r}")

    def body(self) -> str:
        """The note text of this head (module docstring), final newline included."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return "".join(f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions))

    def describe(self) -> str:
        """The head as named in messages."""
        return f"tree head of {self.origin!r} size {self.size}"


def parse_tree_head(text: str) -> TreeHead:
    """Parse a tlog-checkpoint body; MalformedNoteError naming the line that is wrong."""
    if not text.endswith("\n"):
        raise MalformedNoteError("a tree head body must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise MalformedNoteError(f"a tree head body has at least 3 lines (origin, size, root hash), found {len(lines)}")
    origin, size_text, root_text, *extensions = lines
    if not size_text.isdigit() or not size_text.isascii() or (size_text != "0" and size_text.startswith("0")):
        raise MalformedNoteError(f"tree head size must be a decimal without leading zeroes, found {size_text!r}")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedNoteError(f"tree head root hash must be base64, found {root_text!r}") from None
    return TreeHead(origin, int(size_text), root, tuple(extensions))


def sign_tree_head(head: TreeHead, log_signer: NoteSigner, *co_signers: NoteSigner) -> bytes:
    """The head as a signed note under the log key, whose key name must be the origin (and under each of
    ``co_signers``, other keys of the same log: a key change-over, where the note carries both signatures)."""
    for signer in (log_signer, *co_signers):
        if signer.name != head.origin:
            raise MalformedNoteError(
                f"a tree head is signed by a key named after its origin {head.origin!r}, found key {signer.name!r}"
            )
    return sign_note(head.body(), [log_signer, *co_signers])


def open_tree_head(data: bytes, log_verifier: NoteVerifier) -> tuple[TreeHead, Note]:
    """Parse a signed tree head and check the log's signature; return the head and the note.

    Raises MalformedNoteError if it does not parse or names another origin than the log key,
    NoteVerificationError if the log's signature is missing or does not verify.
    """
    note = parse_note(data)
    head = parse_tree_head(note.text)
    if head.origin != log_verifier.name:
        raise MalformedNoteError(
            f"expected a tree head of origin {log_verifier.name!r}, found origin {head.origin!r}"
        )
    require_signed_by(note, log_verifier)
    return head, note
