"""Client-side envelope encryption of archived objects: AES-256-GCM, data key wrapped by a master key.

Pure (no I/O but reading and writing the master key file). For an object with key ``K`` and
plaintext ``P`` (the OCF bytes)::

    data_key || nonce = HKDF-SHA256(master_key, salt=none,
                                    info = "auditseal/sink/data-key/v1" 0x00 || K || 0x00 || SHA-256(P),
                                    length = 32 + 12)                          (RFC 5869)
    stored bytes      = AES-256-GCM(data_key, nonce, P, associated data = K)  (ciphertext || 16-byte tag)
    wrapped_key       = AES-KW(master_key, data_key)                          (RFC 3394, 40 bytes)

and the manifest carries ``master_key_id``, ``wrapped_key`` and ``nonce``. A verifier holding the
master key unwraps the data key and decrypts (:func:`decrypt_object`); GCM's tag and the key as
associated data make any change, or moving the bytes to another key, fail to decrypt.

Why a derived data key and nonce instead of random ones: a retry after a crash must rewrite the
same key with byte-identical content. GCM is only broken if one (key, nonce) pair encrypts two
*different* plaintexts. Here the pair is a function of the master key, the object key and the
plaintext's hash, so different plaintexts always get different data keys (even if a topic were
recreated and its offsets reused), and the only repetition is the same plaintext encrypted again
under the same key, which yields the same ciphertext and reveals nothing but "this is a retry"
(which the equal manifest already says). This is the deterministic-AEAD argument of SIV (RFC 5297).

Where the master key lives: a file (:class:`MasterKey`, the derivation above) or a non-extractable AES key
in a PKCS#11 token (``pipeline.keys.pkcs11.Pkcs11MasterKey``), which no process can read. A token cannot
run HKDF over a key it will not reveal, so a token-held master key derives the same 44 bytes with the NIST
SP 800-108 counter-mode KDF whose PRF is AES-CMAC, computed by the token (:func:`kbkdf_cmac_data_key`)::

    data_key || nonce = first 44 bytes of  CMAC(master, u32(i) || "auditseal/sink/data-key/kbkdf-cmac/v1"
                                                 || 0x00 || K || 0x00 || SHA-256(P) || u32(352)),  i = 1, 2, 3

and wraps and unwraps with CKM_AES_KEY_WRAP (the same RFC 3394 AES-KW as above). The manifest format does not
change: a reader only ever unwraps, it never re-derives, so archives written either way read the same way.
The derivation matters for retries only, and a retry uses the same key in the same place. (A master key
moved from a file into a token would derive other data keys: write objects after the move under a new key id.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from pipeline.archive.layout import AAD_OBJECT_KEY, ENCRYPTION_ALGORITHM, KEY_WRAP_ALGORITHM, Encryption
from pipeline.errors import AuditSealError, ConfigError

MASTER_KEY_VARIABLE = "AUDITSEAL_MASTER_KEY"
KEY_SIZE = 32
NONCE_SIZE = 12
_DATA_KEY_INFO = b"auditseal/sink/data-key/v1\x00"
_KBKDF_LABEL = b"auditseal/sink/data-key/kbkdf-cmac/v1"
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class DecryptionError(AuditSealError):
    """An encrypted object that cannot be decrypted: wrong or unknown master key, or altered bytes."""


class KeyEncryptionKey(Protocol):
    """A master key wherever it lives: its id, the data-key derivation, and AES-KW wrap/unwrap."""

    key_id: str

    def derive_data_key(self, object_key: str, plaintext: bytes) -> tuple[bytes, bytes]:
        """(data key, nonce) of one object, deterministic (module docstring)."""
        ...

    def wrap(self, data_key: bytes) -> bytes:
        """AES-KW (RFC 3394) of ``data_key``."""
        ...

    def unwrap(self, wrapped: bytes) -> bytes:
        """The data key inside ``wrapped``; ValueError if it does not unwrap under this key."""
        ...


@dataclass(frozen=True)
class MasterKey:
    """A 256-bit key-encryption key read from a file, and its id (the id is what manifests name)."""

    key_id: str
    key: bytes = field(repr=False)

    def derive_data_key(self, object_key: str, plaintext: bytes) -> tuple[bytes, bytes]:
        """(data key, nonce) by HKDF-SHA256 (module docstring)."""
        info = _DATA_KEY_INFO + object_key.encode("utf-8") + b"\x00" + hashlib.sha256(plaintext).digest()
        material = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE + NONCE_SIZE, salt=None, info=info).derive(self.key)
        return material[:KEY_SIZE], material[KEY_SIZE:]

    def wrap(self, data_key: bytes) -> bytes:
        """AES-KW (RFC 3394) of ``data_key`` under this key."""
        return aes_key_wrap(self.key, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        """The data key inside ``wrapped``; ValueError if it does not unwrap under this key."""
        try:
            return aes_key_unwrap(self.key, wrapped)
        except InvalidUnwrap:
            raise ValueError("AES-KW integrity check failed") from None


def kbkdf_cmac_data_key(cmac: Callable[[bytes], bytes], object_key: str, plaintext: bytes) -> tuple[bytes, bytes]:
    """(data key, nonce) by NIST SP 800-108 counter mode over ``cmac`` (AES-CMAC under the master key, run
    wherever the key is: in a token for a token-held key); the construction is in the module docstring."""
    context = object_key.encode("utf-8") + b"\x00" + hashlib.sha256(plaintext).digest()
    length = KEY_SIZE + NONCE_SIZE
    fixed = _KBKDF_LABEL + b"\x00" + context + (length * 8).to_bytes(4, "big")
    blocks = b"".join(cmac(counter.to_bytes(4, "big") + fixed) for counter in range(1, -(-length // 16) + 1))
    return blocks[:KEY_SIZE], blocks[KEY_SIZE:length]


def default_key_id(key: bytes) -> str:
    """An id for ``key`` that reveals nothing about it: ``mk-`` + 16 hex digits of a tagged SHA-256."""
    return "mk-" + hashlib.sha256(b"auditseal/master-key-id/v1\x00" + key).hexdigest()[:16]


def load_master_key(path: Path) -> MasterKey:
    """Read a master key file ``{"version": 1, "key_id": ..., "key": base64}``; ConfigError if it is
    missing, malformed, or readable by anyone but its owner."""
    try:
        mode = path.stat().st_mode
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read master key {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: a master key file is JSON {{version, key_id, key}}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: a master key must be readable by its owner only (chmod 600), "
                          f"found mode {stat.S_IMODE(mode):o}")
    if not isinstance(raw, dict) or raw.get("version") != 1:
        raise ConfigError(f"{path}: expected a JSON object with version 1")
    key_id = raw.get("key_id")
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise ConfigError(f"{path}: key_id must be 1-64 characters of letters, digits, '.', '_' or '-'")
    try:
        key = base64.b64decode(str(raw.get("key", "")), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != KEY_SIZE:
        raise ConfigError(f"{path}: key must be {KEY_SIZE} bytes in base64")
    return MasterKey(key_id, key)


def generate_master_key(path: Path, key_id: str | None = None) -> MasterKey:
    """Write a new random master key file (mode 0600); ConfigError if ``path`` exists."""
    key = os.urandom(KEY_SIZE)
    master = MasterKey(key_id or default_key_id(key), key)
    if not _KEY_ID.fullmatch(master.key_id):
        raise ConfigError(f"key id {master.key_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
    text = json.dumps({"version": 1, "key_id": master.key_id, "key": base64.b64encode(key).decode()}, indent=2) + "\n"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; a master key is never overwritten (objects sealed with it need it)") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    return master


def encrypt_object(plaintext: bytes, object_key: str, master: KeyEncryptionKey) -> tuple[bytes, Encryption]:
    """The stored bytes of an encrypted object and the manifest's ``encryption`` entry (deterministic)."""
    data_key, nonce = master.derive_data_key(object_key, plaintext)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, object_key.encode("utf-8"))
    return ciphertext, Encryption(master_key_id=master.key_id, wrapped_key=master.wrap(data_key), nonce=nonce)


def decrypt_object(ciphertext: bytes, object_key: str, encryption: Encryption,
                   master_keys: KeyEncryptionKey | Mapping[str, KeyEncryptionKey]) -> bytes:
    """The plaintext (OCF bytes) of an encrypted object; DecryptionError naming the object and why."""
    if not isinstance(master_keys, Mapping):
        master_keys = {master_keys.key_id: master_keys}
    if (encryption.algorithm, encryption.key_wrap, encryption.aad) != (ENCRYPTION_ALGORITHM, KEY_WRAP_ALGORITHM,
                                                                       AAD_OBJECT_KEY):
        raise DecryptionError(f"{object_key}: unsupported encryption {encryption.algorithm}/{encryption.key_wrap}/"
                              f"{encryption.aad}")
    master = master_keys.get(encryption.master_key_id)
    if master is None:
        raise DecryptionError(f"{object_key}: encrypted with master key {encryption.master_key_id!r}, "
                              f"which was not given (have: {', '.join(sorted(master_keys)) or 'none'})")
    try:
        data_key = master.unwrap(encryption.wrapped_key)
    except ValueError:
        raise DecryptionError(f"{object_key}: the wrapped data key does not unwrap with master key "
                              f"{master.key_id!r} (wrong key, or the manifest was altered)") from None
    try:
        return AESGCM(data_key).decrypt(encryption.nonce, ciphertext, object_key.encode("utf-8"))
    except (InvalidTag, ValueError):
        raise DecryptionError(f"{object_key}: authentication failed: the object's bytes, nonce or key were "
                              "altered, or it was moved from another key") from None
