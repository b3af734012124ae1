"""Ed25519 witness cosignatures, C2SP tlog-cosignature v1 (https://c2sp.org/tlog-cosignature).

A cosignature is a note signature line on a tree head by a witness key of type 0x04 (key hash
= SHA-256(name || 0x0A || 0x04 || public key)[:4]). Its bytes after the key hash are

    timestamp (u64, big-endian, POSIX seconds) || Ed25519 signature (64 bytes)

and the Ed25519 signature covers

    "cosignature/v1\\n" || "time " || decimal(timestamp) || "\\n" || the head's whole note text

A v1 cosignature states that, at that time, this was the largest consistent tree head the
witness had seen for the origin: a witness never cosigns a head that does not extend one it has
cosigned before, which is what makes a rewritten history detectable by anyone holding a head.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.integrity.errors import MalformedNoteError
from pipeline.integrity.note import ALG_COSIGNATURE_V1, Note, NoteSignature, NoteVerifier, require_key_name

COSIGNATURE_HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1

_U64 = struct.Struct(">Q")
_SIGNATURE_BYTES = 8 + 64


def cosignature_message(head_text: str, timestamp: int) -> bytes:
    """The bytes an Ed25519 v1 cosignature signs (module docstring)."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise MalformedNoteError(f"a cosignature timestamp must be in [0, 2**63 - 1], found {timestamp}")
    if head_text.count("\n") < 3:
        raise MalformedNoteError("a cosigned note needs at least the 3 lines of a tree head")
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{head_text}".encode("utf-8")


def cosignature_timestamp(signature: NoteSignature) -> int:
    """The POSIX timestamp a v1 cosignature carries; MalformedNoteError if it is not one."""
    if len(signature.signature) != _SIGNATURE_BYTES:
        raise MalformedNoteError(
            f"cosignature of {signature.name!r}: expected {_SIGNATURE_BYTES} bytes after the key hash, "
            f"found {len(signature.signature)}"
        )
    return _U64.unpack(signature.signature[:8])[0]


def verify_cosignature_bytes(public_key: Ed25519PublicKey, head_text: bytes, signature: bytes) -> bool:
    """Whether `signature` (timestamp || Ed25519 signature) cosigns the note text `head_text`."""
    if len(signature) != _SIGNATURE_BYTES:
        return False
    timestamp = _U64.unpack(signature[:8])[0]
    if timestamp > MAX_TIMESTAMP:
        return False
    try:
        message = cosignature_message(head_text.decode("utf-8"), timestamp)
        public_key.verify(signature[8:], message)
    except (InvalidSignature, MalformedNoteError, UnicodeDecodeError):
        return False
    return True


@dataclass(frozen=True)
class Cosigner:
    """An Ed25519 cosignature/v1 signing key under a witness name (tests, and our own witness keys)."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        require_key_name(self.name)

    @property
    def verifier(self) -> NoteVerifier:
        """The witness's public key as a type 0x04 note verifier."""
        return NoteVerifier(self.name, ALG_COSIGNATURE_V1, self.private_key.public_key())

    def cosign(self, head_text: str, timestamp: int | None = None) -> NoteSignature:
        """The v1 cosignature of a tree head's note text, at `timestamp` (default: now)."""
        at = int(time.time()) if timestamp is None else timestamp
        signature = self.private_key.sign(cosignature_message(head_text, at))
        return NoteSignature(self.name, self.verifier.key_hash, _U64.pack(at) + signature)


def add_signatures(note: Note, extra: list[NoteSignature]) -> Note:
    """The note with `extra` signature lines appended, each line kept once."""
    seen = set(note.signatures)
    merged = list(note.signatures) + [line for line in extra if line not in seen]
    return Note(note.text, tuple(merged))
