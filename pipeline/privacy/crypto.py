"""The cryptography of personal-data protection: pure functions, no I/O.

Three primitives, each from a standard and from ``cryptography`` (never hand-written):

- **Pseudonyms**: HMAC-SHA-256 (RFC 2104) under the versioned pseudonym key, over a domain-separated
  ``field || value``, truncated to 128 bits and written ``p<version>.<22 base64url>``. Equal values of one
  field give equal pseudonyms, so a SIEM and the detector correlate "the same actor" without plaintext;
  without the key nobody can compute one, with it anybody can test a guess (see README, "Personal data").
  The data subject's own pseudonym is the pseudonym of its id in the field ``subject``, which is also
  what ``actor.id`` holds, so an erasure record names what the SIEM sees.
- **Field encryption**: AES-SIV (RFC 5297) with a 512-bit key per data subject. Its associated data
  binds the domain, the subject's pseudonym, the field name and the key id, so a ciphertext neither
  decrypts under another subject's key nor passes for another field. AES-SIV is deterministic: one value
  of one field of one subject always gives the same ciphertext. That leaks equality, which the
  pseudonym beside it already shows, and lets a producer cache ciphertexts (see :mod:`.protector`).
- **Subject groups** (the encoding producers write since ``audit_event.v3``): all the protected values of
  one subject in one event are encrypted together, one AES-SIV operation under that subject's key, whose
  associated data binds the domain, the subject's pseudonym, the key id and the list of field names; the
  plaintext is the values in the order of the names. One synthetic IV (16 bytes) per subject instead of
  one per value, the subject and key id written once, and the ciphertext as bytes rather than base64:
  a protected event of the synthetic mix is 438 bytes instead of 607 in the per-field encoding above, which stays readable (schemas/FORMAT.md,
  section 11).
- **Key wrapping**: each subject key is stored wrapped with the key-encryption key (KEK) by AES key
  wrap (RFC 3394), which also authenticates: a wrong KEK is detected, never a wrong key returned.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from pipeline.errors import AuditSealError

SUBJECT_KEY_BYTES = 64  # AES-SIV-256: two 256-bit halves (RFC 5297 section 2.2)
KEK_BYTES = 32  # AES-256 key wrap
PSEUDONYM_KEY_BYTES = 32
PSEUDONYM_BYTES = 16  # 128 bits: no collision expected below ~2^64 distinct values
SUBJECT_FIELD = "subject"

_PSEUDONYM_DOMAIN = b"auditseal/pseudonym/v1\x00"
_FIELD_DOMAIN = b"auditseal/protected-field/v1"
_GROUP_DOMAIN = b"auditseal/protected-subject/v1"
_PSEUDONYM = re.compile(r"p([1-9][0-9]*)\.([A-Za-z0-9_-]{22})")
_KEY_ID = re.compile(r"[0-9a-f]{16}")


class PrivacyError(AuditSealError):
    """Base of the personal-data protection errors."""


class WrongKekError(PrivacyError):
    """A wrapped key does not unwrap with the KEK given: another KEK (or a damaged record) wrapped it."""


class CorruptCiphertextError(PrivacyError):
    """A protected field does not decrypt: truncated, altered, or moved to another subject or field."""


@dataclass(frozen=True)
class PseudonymKey:
    """One version of the HMAC key pseudonyms are computed under."""

    version: int
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.version < 1 or len(self.material) != PSEUDONYM_KEY_BYTES:
            raise ValueError(f"a pseudonym key is a version >= 1 and {PSEUDONYM_KEY_BYTES} bytes")

    def pseudonym(self, field_name: str, value: str) -> str:
        """``p<version>.<base64url>``: the keyed pseudonym of ``value`` in ``field_name``."""
        message = _PSEUDONYM_DOMAIN + field_name.encode() + b"\x00" + value.encode()
        digest = hmac.digest(self.material, message, "sha256")[:PSEUDONYM_BYTES]
        # base64url rather than hex: 22 characters instead of 32, in every event, four times
        return f"p{self.version}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode('ascii')}"

    def subject_pseudonym(self, subject_id: str) -> str:
        """The pseudonym of a data subject (what ``actor.id`` holds for a protected actor)."""
        return self.pseudonym(SUBJECT_FIELD, subject_id)


def is_pseudonym(text: str) -> bool:
    """True if ``text`` has the form of a pseudonym (``p<version>.<22 base64url characters>``)."""
    return _PSEUDONYM.fullmatch(text) is not None


@dataclass(frozen=True)
class SubjectKey:
    """A data subject's key: its id in the key store and the AES-SIV key material."""

    key_id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if _KEY_ID.fullmatch(self.key_id) is None or len(self.material) != SUBJECT_KEY_BYTES:
            raise ValueError(f"a subject key is a 16-hex-digit id and {SUBJECT_KEY_BYTES} bytes")


def new_subject_key() -> SubjectKey:
    """A fresh random subject key (``os.urandom``)."""
    return SubjectKey(os.urandom(8).hex(), os.urandom(SUBJECT_KEY_BYTES))


def associated_data(subject: str, field_name: str, key_id: str) -> list[bytes]:
    """The AES-SIV associated data of one protected field (RFC 5297 takes a vector of strings)."""
    return [_FIELD_DOMAIN, subject.encode(), field_name.encode(), key_id.encode()]


def pack_strings(values: list[str] | tuple[str, ...]) -> bytes:
    """``values`` one after the other, each as an Avro ``string`` (zig-zag varint byte length, UTF-8 bytes):
    the plaintext of a subject group and the field-name list in its associated data."""
    out = bytearray()
    for value in values:
        data = value.encode()
        n = len(data) << 1  # zig-zag of a non-negative length
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        out += data
    return bytes(out)


def unpack_strings(data: bytes, count: int) -> list[str]:
    """The ``count`` strings :func:`pack_strings` wrote; ValueError unless ``data`` is exactly that."""
    values, position = [], 0
    for _ in range(count):
        n = shift = 0
        while True:
            if position >= len(data) or shift > 35:
                raise ValueError("truncated length")
            byte = data[position]
            position += 1
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if n & 1:
            raise ValueError("negative length")
        end = position + (n >> 1)
        if end > len(data):
            raise ValueError("truncated value")
        values.append(data[position:end].decode("utf-8"))
        position = end
    if position != len(data):
        raise ValueError("bytes after the last value")
    return values


def group_associated_data(subject: str, key_id: str, field_names: list[str] | tuple[str, ...]) -> list[bytes]:
    """The AES-SIV associated data of one subject group: domain, subject, key id, the packed field names."""
    return [_GROUP_DOMAIN, subject.encode(), key_id.encode(), pack_strings(field_names)]


class FieldCipher:
    """Encrypts and decrypts the fields of one subject under one key (the AES-SIV object built once)."""

    __slots__ = ("subject", "key_id", "_siv")

    def __init__(self, subject: str, key: SubjectKey) -> None:
        self.subject = subject
        self.key_id = key.key_id
        self._siv = AESSIV(key.material)

    def encrypt(self, field_name: str, value: str) -> str:
        """The unpadded base64url AES-SIV ciphertext of ``value`` as ``field_name`` of this subject."""
        sealed = self._siv.encrypt(value.encode(), associated_data(self.subject, field_name, self.key_id))
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def seal_group(self, field_names: tuple[str, ...], values: tuple[str, ...]) -> bytes:
        """The AES-SIV ciphertext (synthetic IV + encrypted packed values) of this subject's ``values``
        as ``field_names`` of one event (the ``audit_event.v3`` subject-group encoding)."""
        return self._siv.encrypt(pack_strings(values), group_associated_data(self.subject, self.key_id, field_names))

    def open_group(self, field_names: tuple[str, ...] | list[str], ciphertext: bytes) -> list[str]:
        """The values of a subject group, in the order of ``field_names``; CorruptCiphertextError naming the
        fields if it does not decrypt and authenticate, or does not hold one value per name."""
        try:
            plain = self._siv.decrypt(ciphertext, group_associated_data(self.subject, self.key_id, field_names))
            return unpack_strings(plain, len(field_names))
        except (ValueError, InvalidTag, UnicodeDecodeError) as exc:
            raise CorruptCiphertextError(
                f"{', '.join(field_names)} of subject {self.subject} (key {self.key_id}) do not decrypt: the "
                f"ciphertext is truncated, altered or not this subject's ({len(ciphertext)} bytes, "
                f"{type(exc).__name__})"
            ) from None

    def decrypt(self, field_name: str, ciphertext: str) -> str:
        """The value; CorruptCiphertextError naming the field if it does not decrypt and authenticate."""
        try:
            # validate: the lenient decoder would skip stray characters instead of refusing them
            sealed = base64.b64decode(ciphertext + "=" * (-len(ciphertext) % 4), altchars=b"-_", validate=True)
            plain = self._siv.decrypt(sealed, associated_data(self.subject, field_name, self.key_id))
            return plain.decode("utf-8")
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError) as exc:
            # ValueError: shorter than the 16-byte synthetic IV; InvalidTag: altered, truncated, moved
            raise CorruptCiphertextError(
                f"{field_name} of subject {self.subject} (key {self.key_id}) does not decrypt: the ciphertext "
                f"is truncated, altered or not this subject's ({len(ciphertext)} characters, {type(exc).__name__})"
            ) from None


def wrap_key(kek: bytes, material: bytes) -> bytes:
    """``material`` wrapped with ``kek`` (AES key wrap, RFC 3394): 8 bytes longer, authenticated."""
    return aes_key_wrap(kek, material)


def unwrap_key(kek: bytes, wrapped: bytes, what: str, kek_id: str) -> bytes:
    """The key material of ``wrapped``; WrongKekError naming ``what`` if ``kek`` did not wrap it."""
    try:
        return aes_key_unwrap(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        raise WrongKekError(
            f"{what} does not unwrap with KEK {kek_id!r}: the key store was written under another KEK, or the "
            "record is damaged; give the KEK that wrapped it (AUDITSEAL_KEK_FILE)"
        ) from None
