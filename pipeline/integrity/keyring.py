"""Ed25519 signing keys (RFC 8032) and the public keyring a verifier is given.

Key id: the first 16 hex characters (64 bits, lowercase) of SHA-256 over the raw 32-byte
Ed25519 public key (RFC 8032 section 5.1.5 encoding). It is derived, never chosen, so a keyring
entry cannot claim a key id that is not its key's.

Validity: each keyring entry is valid on the half-open window
[valid_from_micros, valid_until_micros), in microseconds since the Unix epoch (UTC);
valid_until_micros None means "still active". Windows never overlap, so at any instant at most
one key may sign. Rotating at time T closes the active key's window at T and opens the new
key's at T: a checkpoint issued at T must carry the new key, and checkpoints issued before T
stay verifiable under the old key for ever.

Files (the only I/O of the integrity core):

- signing key: PKCS#8 PEM, unencrypted, created with mode 0600 and never overwritten; loading
  refuses a file that group or others may read or write, as ssh does.
- keyring: JSON, {"version": 1, "keys": [{"key_id": str, "public_key": base64 of the raw
  32 bytes, "valid_from_micros": int, "valid_until_micros": int or null}, ...]}, ordered by
  valid_from_micros, replaced atomically on save. Version 2 adds one optional field per entry,
  "compromised_since_micros" (int or null): the key was revoked, and whatever it signed from that
  instant on is suspect. A keyring without a revoked key is still written as version 1, so
  verifiers that predate revocation keep reading it.

Signers: whatever signs checkpoints is a `Signer` (a key id and `sign(bytes) -> bytes`), so the
sealer does not care whether the private key is a file here or a non-extractable key in an HSM
(pipeline/keys/pkcs11.py). A `KeySchedule` picks the signer for a checkpoint's issue time, which is
how a running sealer switches keys at a rotation instant without a restart; a single key is the
trivial schedule.
"""

import base64
import binascii
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Protocol, runtime_checkable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from pipeline.integrity.errors import KeyFileError, KeyringError, MalformedInputError

KEYRING_VERSION = 1
KEYRING_VERSION_REVOCATION = 2
KEY_ID_HEX_CHARS = 16
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

_KEYRING_FIELDS = ("key_id", "public_key", "valid_from_micros", "valid_until_micros")
_KEYRING_OPTIONAL_FIELDS = {KEYRING_VERSION: (), KEYRING_VERSION_REVOCATION: ("compromised_since_micros",)}
_PRIVATE_KEY_MODE = 0o600
_KEYRING_MODE = 0o644


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """The key id of an Ed25519 public key: hex(SHA-256(raw key))[:16] (raw key: RFC 8032 5.1.5)."""
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:KEY_ID_HEX_CHARS]


@runtime_checkable
class Signer(Protocol):
    """Anything that signs checkpoints: the key id it signs as and a pure Ed25519 signature."""

    @property
    def key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message` (RFC 8032 section 5.1.6)."""
        ...


@runtime_checkable
class KeySchedule(Protocol):
    """Which signer signs a checkpoint issued at a given instant."""

    def signer_at(self, at_micros: int) -> Signer:
        """The signer whose key is valid at `at_micros`; raises if this schedule holds none."""
        ...


@dataclass(frozen=True, eq=False)
class SigningKey:
    """An Ed25519 private key that signs checkpoints (RFC 8032 section 5.1.6).

    Its validity window lives in the keyring, the one place a verifier reads it from; a PKCS#8
    file has no room for it, and keeping it in two places would let them disagree.
    """

    private_key: Ed25519PrivateKey = field(repr=False)
    public_key: Ed25519PublicKey = field(init=False, repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise MalformedInputError(
                f"a signing key must be Ed25519, found {type(self.private_key).__name__}"
            )
        public_key = self.private_key.public_key()
        # Frozen dataclass: the derived fields are set once, here, and never again.
        object.__setattr__(self, "public_key", public_key)
        object.__setattr__(self, "key_id", key_id_for(public_key))

    @classmethod
    def from_seed(cls, seed: bytes) -> "SigningKey":
        """The key whose RFC 8032 section 5.1.5 32-byte secret is `seed`."""
        if len(seed) != 32:
            raise MalformedInputError(f"an Ed25519 seed must be 32 bytes, found {len(seed)} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte pure Ed25519 signature of `message` (RFC 8032 section 5.1.6)."""
        return self.private_key.sign(message)

    def signer_at(self, at_micros: int) -> "SigningKey":
        """A single key is its own schedule: it signs whatever the time (the keyring judges it)."""
        return self


def generate_signing_key() -> SigningKey:
    """A new random Ed25519 signing key (RFC 8032 section 5.1.5), from the OS CSPRNG."""
    return SigningKey(Ed25519PrivateKey.generate())


@dataclass(frozen=True, eq=False)
class KeyringEntry:
    """A public key and the half-open window [valid_from_micros, valid_until_micros) it signs in."""

    key_id: str
    public_key: Ed25519PublicKey = field(repr=False)
    valid_from_micros: int
    valid_until_micros: int | None = None
    compromised_since_micros: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, Ed25519PublicKey):
            raise KeyringError(
                f"key {self.key_id}: expected an Ed25519 public key, "
                f"found {type(self.public_key).__name__}"
            )
        derived = key_id_for(self.public_key)
        if self.key_id != derived:
            raise KeyringError(
                f"key id {self.key_id!r} does not match its public key, whose key id is {derived!r}"
            )
        _require_micros(f"key {self.key_id}: valid_from_micros", self.valid_from_micros)
        if self.valid_until_micros is not None:
            _require_micros(f"key {self.key_id}: valid_until_micros", self.valid_until_micros)
            if self.valid_until_micros <= self.valid_from_micros:
                raise KeyringError(
                    f"key {self.key_id}: expected valid_until_micros after valid_from_micros "
                    f"{self.valid_from_micros}, found {self.valid_until_micros}"
                )
        if self.compromised_since_micros is not None:
            _require_micros(f"key {self.key_id}: compromised_since_micros", self.compromised_since_micros)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyringEntry):
            return NotImplemented
        return (
            self.key_id == other.key_id
            and self.public_key_bytes == other.public_key_bytes
            and self.valid_from_micros == other.valid_from_micros
            and self.valid_until_micros == other.valid_until_micros
            and self.compromised_since_micros == other.compromised_since_micros
        )

    def __hash__(self) -> int:
        return hash((self.key_id, self.valid_from_micros, self.valid_until_micros))

    def compromised_at(self, at_micros: int) -> bool:
        """Whether the key was revoked as compromised at or before `at_micros`."""
        return self.compromised_since_micros is not None and at_micros >= self.compromised_since_micros

    @property
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte public key (RFC 8032 section 5.1.5)."""
        return self.public_key.public_bytes_raw()

    def valid_at(self, at_micros: int) -> bool:
        """Whether the key may sign at `at_micros`: valid_from <= at < valid_until."""
        if at_micros < self.valid_from_micros:
            return False
        return self.valid_until_micros is None or at_micros < self.valid_until_micros

    def describe_window(self) -> str:
        """The validity window as text for error messages, e.g. "[100, 200)" or "[100, open)"."""
        until = "open" if self.valid_until_micros is None else str(self.valid_until_micros)
        return f"[{self.valid_from_micros}, {until})"


@dataclass(frozen=True)
class Keyring:
    """The public keys a verifier trusts, with their validity windows, ordered by valid_from.

    Immutable: `rotate` returns a new keyring. Construction rejects duplicate key ids,
    overlapping windows and more than one open-ended (active) key.
    """

    entries: tuple[KeyringEntry, ...] = ()

    def __post_init__(self) -> None:
        entries = tuple(sorted(self.entries, key=lambda entry: entry.valid_from_micros))
        object.__setattr__(self, "entries", entries)
        seen: set[str] = set()
        for entry in entries:
            if entry.key_id in seen:
                raise KeyringError(f"key id {entry.key_id} appears more than once in the keyring")
            seen.add(entry.key_id)
        for earlier, later in pairwise(entries):
            if (
                earlier.valid_until_micros is None
                or earlier.valid_until_micros > later.valid_from_micros
            ):
                raise KeyringError(
                    f"key {earlier.key_id} valid {earlier.describe_window()} overlaps key "
                    f"{later.key_id} valid {later.describe_window()}: expected at most one key "
                    f"valid at any instant"
                )

    def __iter__(self) -> Iterator[KeyringEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key_id: object) -> bool:
        return any(entry.key_id == key_id for entry in self.entries)

    def get(self, key_id: str) -> KeyringEntry | None:
        """The entry for `key_id`, or None if the keyring does not hold it."""
        for entry in self.entries:
            if entry.key_id == key_id:
                return entry
        return None

    @property
    def active(self) -> KeyringEntry | None:
        """The open-ended entry, the key currently allowed to sign, if any."""
        if self.entries and self.entries[-1].valid_until_micros is None:
            return self.entries[-1]
        return None

    def rotate(self, public_key: Ed25519PublicKey, at_micros: int) -> "Keyring":
        """A keyring where `public_key` signs from `at_micros` on and the active key stops then.

        On an empty keyring this adds the first key. The previous active key's window is closed
        at `at_micros` (exclusive), so everything it signed before stays verifiable. Raises
        KeyringError if the key is already known or `at_micros` does not come after the start
        of the active key's window (or after the end of the last closed one).
        """
        _require_micros("rotation time", at_micros)
        new_entry = KeyringEntry(key_id_for(public_key), public_key, at_micros, None)
        if new_entry.key_id in self:
            raise KeyringError(
                f"key {new_entry.key_id} is already in the keyring: expected a new key to rotate to"
            )
        entries = list(self.entries)
        current = self.active
        if current is not None:
            if at_micros <= current.valid_from_micros:
                raise KeyringError(
                    f"expected a rotation time after {current.valid_from_micros}, when active key "
                    f"{current.key_id} became valid, found {at_micros}"
                )
            entries[-1] = replace(current, valid_until_micros=at_micros)
        return Keyring((*entries, new_entry))

    def retire(self, key_id: str, at_micros: int) -> "Keyring":
        """A keyring where `key_id` signs nothing from `at_micros` on (its window closes there).

        A key whose window already closed earlier stays as it is (retiring is idempotent); a key
        may not be retired before its window opens. Raises KeyringError for an unknown key.
        """
        _require_micros("retirement time", at_micros)
        entry = self._entry(key_id)
        if entry.valid_until_micros is not None and entry.valid_until_micros <= at_micros:
            return self
        if at_micros <= entry.valid_from_micros:
            raise KeyringError(
                f"key {key_id} becomes valid at {entry.valid_from_micros}: expected a retirement "
                f"time after that, found {at_micros}"
            )
        return self._replaced(replace(entry, valid_until_micros=at_micros))

    def revoke(self, key_id: str, compromised_since_micros: int) -> "Keyring":
        """A keyring recording that `key_id` was compromised from `compromised_since_micros` on.

        The validity window is left as it was, so the verifier can tell "signed after its window"
        from "signed after its compromise" and report the latter as such; a sealer refuses to sign
        with a compromised key whatever its window says. Revoking again can only move the
        compromise earlier, never later. Raises KeyringError for an unknown key.
        """
        _require_micros("compromise time", compromised_since_micros)
        entry = self._entry(key_id)
        since = compromised_since_micros
        if entry.compromised_since_micros is not None:
            since = min(since, entry.compromised_since_micros)
        return self._replaced(replace(entry, compromised_since_micros=since))

    def _entry(self, key_id: str) -> KeyringEntry:
        entry = self.get(key_id)
        if entry is None:
            known = ", ".join(item.key_id for item in self.entries) or "none"
            raise KeyringError(f"key {key_id} is not in the keyring (keys: {known})")
        return entry

    def _replaced(self, new_entry: KeyringEntry) -> "Keyring":
        return Keyring(tuple(new_entry if entry.key_id == new_entry.key_id else entry for entry in self.entries))


def save_signing_key(key: SigningKey, path: str | os.PathLike[str]) -> None:
    """Write `key` as unencrypted PKCS#8 PEM (RFC 8410 section 7), mode 0600, refusing to overwrite.

    A signing key is never replaced in place: losing one would leave its checkpoints signed by
    a key nobody holds, so rotation writes a new file instead.
    """
    name = os.fspath(path)
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        # Created 0600 from the first byte: a chmod after writing would leave a readable window.
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_KEY_MODE)
    except FileExistsError:
        raise KeyFileError(
            name, "a file already exists there; refusing to overwrite a signing key"
        ) from None
    except OSError as exc:
        raise KeyFileError(name, f"cannot create the signing key file: {exc.strerror}") from exc
    try:
        # The umask can only remove bits; this makes the mode exactly 0600 whatever it was.
        os.fchmod(fd, _PRIVATE_KEY_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(name)
        raise


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read an unencrypted PKCS#8 PEM Ed25519 private key (RFC 8410 section 7).

    Raises KeyFileError naming the file if it is missing, readable or writable by group or
    others, not PEM, encrypted, or not an Ed25519 key.
    """
    name = os.fspath(path)
    data = _read_file(name, "signing key")
    mode = stat.S_IMODE(os.stat(name).st_mode)
    if mode & 0o077:
        raise KeyFileError(
            name,
            f"expected mode 0600 (owner only) for a signing key, found {mode:04o}; run chmod 600",
        )
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(
            name, "the private key is encrypted; expected an unencrypted PKCS#8 PEM key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(
            name, "expected a PKCS#8 PEM private key, found something else"
        ) from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise KeyFileError(
            name, f"expected an Ed25519 private key, found {type(private_key).__name__}"
        )
    return SigningKey(private_key)


def load_keyring(path: str | os.PathLike[str]) -> Keyring:
    """Read a version 1 JSON keyring (format in the module docstring).

    Raises KeyFileError naming the file, and the entry and field where relevant, if the file
    is missing, not JSON, of another version, or holds a malformed or inconsistent entry.
    """
    name = os.fspath(path)
    data = _read_file(name, "keyring")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileError(name, f"expected a JSON keyring, found invalid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise KeyFileError(
            name, f"expected a JSON object at top level, found {type(document).__name__}"
        )
    version = document.get("version")
    if version not in _KEYRING_OPTIONAL_FIELDS or isinstance(version, bool):
        raise KeyFileError(
            name,
            f"expected keyring version {KEYRING_VERSION} or {KEYRING_VERSION_REVOCATION}, "
            f"found {version!r}",
        )
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise KeyFileError(name, f'expected "keys" to be a list, found {type(keys).__name__}')
    entries = [_entry_from_json(name, position, item, _KEYRING_OPTIONAL_FIELDS[version])
               for position, item in enumerate(keys)]
    try:
        return Keyring(tuple(entries))
    except KeyringError as exc:
        raise KeyFileError(name, str(exc)) from None


def save_keyring(keyring: Keyring, path: str | os.PathLike[str]) -> None:
    """Write `keyring` as JSON, replacing the file atomically (mode 0644: it is public).

    Version 1 unless a key is revoked (version 2 then). Atomic so that a crash mid-write never
    leaves a verifier a truncated keyring.
    """
    name = os.fspath(path)
    revoked = any(entry.compromised_since_micros is not None for entry in keyring)
    keys = []
    for entry in keyring:
        item: dict[str, object] = {
            "key_id": entry.key_id,
            "public_key": base64.b64encode(entry.public_key_bytes).decode("ascii"),
            "valid_from_micros": entry.valid_from_micros,
            "valid_until_micros": entry.valid_until_micros,
        }
        if revoked:
            item["compromised_since_micros"] = entry.compromised_since_micros
        keys.append(item)
    document = {"version": KEYRING_VERSION_REVOCATION if revoked else KEYRING_VERSION, "keys": keys}
    text = json.dumps(document, indent=2) + "\n"
    directory = os.path.dirname(os.path.abspath(name))
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".keyring-", suffix=".tmp")
    except OSError as exc:
        raise KeyFileError(name, f"cannot write the keyring: {exc.strerror}") from exc
    try:
        os.fchmod(fd, _KEYRING_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, name)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _read_file(name: str, what: str) -> bytes:
    try:
        with open(name, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise KeyFileError(name, f"no such {what} file") from None
    except IsADirectoryError:
        raise KeyFileError(name, f"expected a {what} file, found a directory") from None
    except OSError as exc:
        raise KeyFileError(name, f"cannot read the {what} file: {exc.strerror}") from None


def _entry_from_json(
    name: str, position: int, item: object, optional: tuple[str, ...]
) -> KeyringEntry:
    where = f"keys[{position}]"
    if not isinstance(item, dict):
        raise KeyFileError(name, f"{where}: expected an object, found {type(item).__name__}")
    missing = [key for key in _KEYRING_FIELDS if key not in item]
    unknown = sorted(set(item) - set(_KEYRING_FIELDS) - set(optional))
    if missing:
        raise KeyFileError(name, f"{where}: missing field(s) {', '.join(missing)}")
    if unknown:
        raise KeyFileError(name, f"{where}: unknown field(s) {', '.join(unknown)}")
    key_id = item["key_id"]
    if not isinstance(key_id, str):
        raise KeyFileError(
            name, f"{where}.key_id: expected a string, found {type(key_id).__name__}"
        )
    encoded = item["public_key"]
    if not isinstance(encoded, str):
        raise KeyFileError(
            name, f"{where}.public_key: expected base64 text, found {type(encoded).__name__}"
        )
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise KeyFileError(
            name, f"{where}.public_key: expected base64, found {encoded!r}"
        ) from None
    if len(raw) != PUBLIC_KEY_SIZE:
        raise KeyFileError(
            name,
            f"{where}.public_key: expected {PUBLIC_KEY_SIZE} raw bytes, found {len(raw)} bytes",
        )
    for field_name in ("valid_from_micros", "valid_until_micros", "compromised_since_micros"):
        value = item.get(field_name)
        if field_name != "valid_from_micros" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise KeyFileError(
                name, f"{where}.{field_name}: expected an integer, found {json.dumps(value)}"
            )
    try:
        public_key = Ed25519PublicKey.from_public_bytes(raw)
        return KeyringEntry(
            key_id, public_key, item["valid_from_micros"], item["valid_until_micros"],
            item.get("compromised_since_micros"),
        )
    except (KeyringError, MalformedInputError, ValueError) as exc:
        raise KeyFileError(name, f"{where}: {exc}") from None


def _require_micros(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise KeyringError(f"{name}: expected an integer of microseconds, found {value!r}")
    if value < 0:
        raise KeyringError(
            f"{name}: expected microseconds since the Unix epoch (>= 0), found {value}"
        )
