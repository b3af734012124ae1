"""C2SP signed notes with Ed25519 keys (https://c2sp.org/signed-note).

A note is UTF-8 text, a blank line, then one signature line per signer:

    <text, every line ending in U+000A>
    U+000A
    U+2014 U+0020 <key name> U+0020 base64(key hash || signature) U+000A      one per signature

The key hash is the first 4 bytes (big-endian u32) of SHA-256(key name || 0x0A || type || public
key), where type is 0x01 for an Ed25519 note key and 0x04 for an Ed25519 cosignature/v1 key
(https://c2sp.org/tlog-cosignature). A verifier key ("vkey") is written
``<name>+<key hash, 8 lowercase hex>+base64(type || public key)``, a signer key ("skey")
``PRIVATE+KEY+<name>+<key hash>+base64(type || 32-byte seed)`` (the form omniwitness reads).

For type 0x01 the signature is pure Ed25519 (RFC 8032) over the note text, final newline included.
Type 0x04 signatures are cosignatures; `pipeline.integrity.cosignature` defines their message.
Verification follows the spec: lines of unknown keys are ignored, a line that names a known key
and does not verify makes the note malformed (NoteVerificationError).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.integrity.errors import MalformedNoteError, NoteVerificationError

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
SIGNATURE_DASH = "\u2014"
MAX_SIGNATURES = 100

_U32 = struct.Struct(">I")
_KEY_TYPES = {ALG_ED25519: "Ed25519 note key", ALG_COSIGNATURE_V1: "Ed25519 cosignature/v1 key"}
# what note text and key names may not hold, as one search each (a per-character Python loop was most of the
# cost of signing and opening a tree head): controls other than newline, and DEL; whitespace (str.isspace's,
# which \s matches for str patterns) and '+'
_CONTROL_CHARACTER = re.compile("[\x00-\x09\x0b-\x1f\x7f]")
_NOT_IN_KEY_NAME = re.compile(r"[\s+]")


def key_hash(name: str, key_type: int, public_key: bytes) -> int:
    """The 32-bit key hash of a note key: SHA-256(name || 0x0A || type || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([key_type]) + public_key).digest()
    key_hash_value: int = _U32.unpack(digest[:4])[0]
    return key_hash_value


def require_key_name(name: object) -> str:
    """Return `name` if it is a valid note key name (non-empty UTF-8, no whitespace, no '+')."""
    if not isinstance(name, str) or not name:
        raise MalformedNoteError(f"a note key name must be a non-empty string, found {name!r}")
    if _NOT_IN_KEY_NAME.search(name):
        raise MalformedNoteError(f"a note key name must hold no whitespace and no '+', found {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedNoteError(f"a note key name must be UTF-8, found {name!r}") from None
    return name


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: the signer's key name, its 32-bit key hash and the signature bytes."""

    name: str
    key_hash: int
    signature: bytes

    def line(self) -> str:
        """The signature line as written in a note, final newline included."""
        blob = _U32.pack(self.key_hash) + self.signature
        return f"{SIGNATURE_DASH} {self.name} {base64.b64encode(blob).decode('ascii')}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed signed note: its text (final newline included) and its signature lines in order."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def to_bytes(self) -> bytes:
        """The note as written: text, a blank line, the signature lines."""
        return format_note(self.text, self.signatures)


@dataclass(frozen=True)
class NoteVerifier:
    """A public note key: name, key type (0x01 or 0x04) and Ed25519 public key.

    `verify(message, signature)` checks a signature's bytes (after the key hash) over the note
    text; for a cosignature key it first rebuilds the cosignature/v1 message (the signature
    holds its timestamp), so one note-verification routine serves both kinds.
    """

    name: str
    key_type: int
    public_key: Ed25519PublicKey

    def __post_init__(self) -> None:
        require_key_name(self.name)
        if self.key_type not in _KEY_TYPES:
            raise MalformedNoteError(
                f"note key {self.name!r}: expected type 0x01 or 0x04, found 0x{self.key_type:02x}"
            )

    @property
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte Ed25519 public key (RFC 8032 section 5.1.5)."""
        return self.public_key.public_bytes_raw()

    @cached_property
    def key_hash(self) -> int:
        """The key's 32-bit key hash (module docstring)."""
        return key_hash(self.name, self.key_type, self.public_key_bytes)

    @property
    def vkey(self) -> str:
        """The verifier key string ``name+hash+base64(type || key)``."""
        blob = bytes([self.key_type]) + self.public_key_bytes
        return f"{self.name}+{self.key_hash:08x}+{base64.b64encode(blob).decode('ascii')}"

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key string; MalformedNoteError naming what is wrong."""
        if not isinstance(vkey, str):
            raise MalformedNoteError(f"a verifier key must be a string, found {type(vkey).__name__}")
        # base64 may itself hold '+': only the first two separate fields, as in Go's strings.Cut
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise MalformedNoteError(
                f"a verifier key is name+hash+key (3 parts joined by '+'), found {len(parts)} parts in {vkey!r}"
            )
        name, hash_hex, key_b64 = parts
        key_type, key = _decode_key_blob(vkey, key_b64)
        verifier = cls(name, key_type, Ed25519PublicKey.from_public_bytes(key))
        if hash_hex != f"{verifier.key_hash:08x}":
            raise MalformedNoteError(
                f"verifier key {vkey!r}: expected key hash {verifier.key_hash:08x}, found {hash_hex!r}"
            )
        return verifier

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` (the bytes after the key hash) signs the note text `message`."""
        if self.key_type == ALG_COSIGNATURE_V1:
            # Imported here: cosignature builds on this module.
            from pipeline.integrity.cosignature import verify_cosignature_bytes

            return verify_cosignature_bytes(self.public_key, message, signature)
        if len(signature) != 64:
            return False
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 note signing key (type 0x01) under a key name."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        require_key_name(self.name)

    @cached_property
    def verifier(self) -> NoteVerifier:
        """The matching public note key."""
        return NoteVerifier(self.name, ALG_ED25519, self.private_key.public_key())

    @property
    def skey(self) -> str:
        """The signer key string ``PRIVATE+KEY+name+hash+base64(0x01 || seed)``."""
        seed = self.private_key.private_bytes_raw()
        blob = base64.b64encode(bytes([ALG_ED25519]) + seed).decode("ascii")
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_hash:08x}+{blob}"

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Parse a signer key string of type 0x01; MalformedNoteError naming what is wrong."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise MalformedNoteError("a signer key is PRIVATE+KEY+name+hash+key, found something else")
        _, _, name, hash_hex, key_b64 = parts
        key_type, seed = _decode_key_blob("signer key", key_b64)
        if key_type != ALG_ED25519:
            raise MalformedNoteError(f"signer key {name!r}: expected type 0x01, found 0x{key_type:02x}")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if hash_hex != f"{signer.verifier.key_hash:08x}":
            raise MalformedNoteError(f"signer key {name!r}: key hash {hash_hex!r} does not match the key")
        return signer

    def sign(self, text: str) -> NoteSignature:
        """The note signature of `text` (pure Ed25519 over its UTF-8 bytes)."""
        require_note_text(text)
        signature = self.private_key.sign(text.encode("utf-8"))
        return NoteSignature(self.name, self.verifier.key_hash, signature)


def require_note_text(text: object) -> str:
    """Return `text` if it is valid note text: non-empty, ending in a newline, no other control character."""
    if not isinstance(text, str) or not text:
        raise MalformedNoteError("note text must be a non-empty string")
    if not text.endswith("\n"):
        raise MalformedNoteError("note text must end with a newline")
    found = _CONTROL_CHARACTER.search(text)
    if found:
        raise MalformedNoteError(f"note text must hold no control character, found {found.group()!r}")
    return text


def format_note(text: str, signatures: Iterable[NoteSignature]) -> bytes:
    """The bytes of a note: text, a blank line, one line per signature (at least one)."""
    require_note_text(text)
    lines = [signature.line() for signature in signatures]
    if not lines:
        raise MalformedNoteError("a signed note needs at least one signature")
    return (text + "\n" + "".join(lines)).encode("utf-8")


def sign_note(text: str, signers: Sequence[NoteSigner]) -> bytes:
    """The note `text` signed by each of `signers`, as bytes."""
    return format_note(text, [signer.sign(text) for signer in signers])


def parse_note(data: bytes) -> Note:
    """Split a signed note into text and signature lines, checking only the syntax.

    Raises MalformedNoteError for invalid UTF-8, a missing blank line or signature, a malformed
    signature line, or more than MAX_SIGNATURES signatures.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise MalformedNoteError(f"a note must be bytes, found {type(data).__name__}")
    try:
        whole = bytes(data).decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedNoteError(f"a note must be UTF-8: {error}") from None
    split = whole.rfind("\n\n")
    if split < 0 or not whole.endswith("\n"):
        raise MalformedNoteError("a note needs its text, a blank line and signature lines, each ending in a newline")
    text, block = whole[: split + 1], whole[split + 2 :]
    require_note_text(text)
    signatures = [_parse_signature_line(line) for line in block[:-1].split("\n")]
    if len(signatures) > MAX_SIGNATURES:
        raise MalformedNoteError(f"a note may carry at most {MAX_SIGNATURES} signatures, found {len(signatures)}")
    return Note(text, tuple(signatures))


def open_note(
    data: bytes, verifiers: Sequence[NoteVerifier]
) -> tuple[Note, list[tuple[NoteVerifier, NoteSignature]]]:
    """Parse a note and verify the signatures of known keys; return it and those that verified.

    Lines whose (name, key hash) match no verifier are ignored (signed-note: unknown keys). A
    line that matches a verifier and does not verify raises NoteVerificationError. The list may
    be empty: callers that need a given key call `require_signed_by`.
    """
    note = parse_note(data)
    return note, verified_signatures(note, verifiers)


def verified_signatures(
    note: Note, verifiers: Sequence[NoteVerifier]
) -> list[tuple[NoteVerifier, NoteSignature]]:
    """The (verifier, signature) pairs of `note` made by known keys; raise if one of them is bad."""
    by_id: dict[tuple[str, int], NoteVerifier] = {(v.name, v.key_hash): v for v in verifiers}
    message = note.text.encode("utf-8")
    verified = []
    for signature in note.signatures:
        verifier = by_id.get((signature.name, signature.key_hash))
        if verifier is None:
            continue
        if not verifier.verify(message, signature.signature):
            raise NoteVerificationError(
                f"note signature of {signature.name!r} (key hash {signature.key_hash:08x}) "
                f"does not verify: the note or its signature was altered"
            )
        verified.append((verifier, signature))
    return verified


def require_signed_by(note: Note, verifier: NoteVerifier) -> NoteSignature:
    """The signature of `verifier` on `note`; NoteVerificationError if it is absent or bad."""
    for _, signature in verified_signatures(note, [verifier]):
        return signature
    names = ", ".join(sorted({s.name for s in note.signatures})) or "none"
    raise NoteVerificationError(
        f"expected a signature of {verifier.name!r} (key hash {verifier.key_hash:08x}), "
        f"found signatures of: {names}"
    )


def _parse_signature_line(line: str) -> NoteSignature:
    prefix = SIGNATURE_DASH + " "
    if not line.startswith(prefix):
        raise MalformedNoteError(f"a note signature line starts with '{SIGNATURE_DASH} ', found {line[:40]!r}")
    fields = line[len(prefix) :].split(" ")
    if len(fields) != 2:
        raise MalformedNoteError(f"a note signature line is '{SIGNATURE_DASH} <name> <base64>', found {line[:80]!r}")
    name, blob_b64 = fields
    require_key_name(name)
    blob = _b64decode(blob_b64, f"signature of {name!r}")
    if len(blob) < 5:
        raise MalformedNoteError(f"signature of {name!r}: expected a key hash and a signature, found {len(blob)} bytes")
    return NoteSignature(name, _U32.unpack(blob[:4])[0], blob[4:])


def _decode_key_blob(what: str, key_b64: str) -> tuple[int, bytes]:
    blob = _b64decode(key_b64, what)
    if len(blob) != 33:
        raise MalformedNoteError(f"{what}: expected a type byte and a 32-byte Ed25519 key, found {len(blob)} bytes")
    if blob[0] not in _KEY_TYPES:
        raise MalformedNoteError(f"{what}: expected key type 0x01 or 0x04, found 0x{blob[0]:02x}")
    return blob[0], blob[1:]


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedNoteError(f"{what}: expected standard base64, found {text[:60]!r}") from None

