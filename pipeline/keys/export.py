"""Publishing the public half of the sealer's keys: the keyring and C2SP verifier keys.

A C2SP signed-note verifier key (https://c2sp.org/signed-note, golang.org/x/mod/sumdb/note) for an
Ed25519 key is ``<name>+<key hash>+<base64(0x01 || public key)>``, where the key hash is the first four
bytes of SHA-256(name || "\\n" || 0x01 || public key), in lowercase hex. Witnesses and note verifiers
are configured with that string.
"""

from __future__ import annotations

import base64
import hashlib
import re

from pipeline.integrity.errors import MalformedInputError
from pipeline.integrity.keyring import PUBLIC_KEY_SIZE, Keyring

ED25519_ALGORITHM = b"\x01"
# a key name is a non-empty string of printable, non-space Unicode without '+' (C2SP signed-note)
_KEY_NAME = re.compile(r"[^\s+]+")


def c2sp_verifier_key(name: str, public_key: bytes) -> str:
    """The C2SP signed-note verifier key of an Ed25519 ``public_key`` (32 raw bytes) named ``name``."""
    if not _KEY_NAME.fullmatch(name) or not name.isprintable():
        raise MalformedInputError(f"a note key name must be printable with no spaces or '+', found {name!r}")
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise MalformedInputError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, found {len(public_key)}")
    key_hash = hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519_ALGORITHM + public_key).digest()[:4]
    return f"{name}+{key_hash.hex()}+{base64.b64encode(ED25519_ALGORITHM + public_key).decode('ascii')}"


def keyring_export(keyring: Keyring, name: str) -> dict:
    """The public keyring with each key's window, compromise time and C2SP verifier key, as JSON data."""
    return {
        "keys": [
            {
                "key_id": entry.key_id,
                "public_key": base64.b64encode(entry.public_key_bytes).decode("ascii"),
                "valid_from_micros": entry.valid_from_micros,
                "valid_until_micros": entry.valid_until_micros,
                "compromised_since_micros": entry.compromised_since_micros,
                "verifier_key": c2sp_verifier_key(name, entry.public_key_bytes),
            }
            for entry in keyring
        ],
    }
