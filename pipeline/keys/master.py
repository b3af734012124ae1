"""Which master key ``--master-key SPEC`` means: a key file, or ``pkcs11:LABEL``, an AES key in the token of
the ``AUDITSEAL_PKCS11_*`` variables (see :mod:`pipeline.keys.pkcs11`) that never leaves it."""

from __future__ import annotations

from pathlib import Path

from pipeline.archive.encryption import KeyEncryptionKey, load_master_key
from pipeline.errors import ConfigError
from pipeline.keys.pkcs11 import MODULE_VARIABLE, Pkcs11Config, open_token

TOKEN_PREFIX = "pkcs11:"


def load_master_key_spec(spec: str) -> KeyEncryptionKey:
    """The master key ``spec`` names (``pkcs11:LABEL`` or a file path); ConfigError if it cannot be used."""
    if not spec.startswith(TOKEN_PREFIX):
        return load_master_key(Path(spec))
    label = spec[len(TOKEN_PREFIX):]
    if not label:
        raise ConfigError(f"master key {spec!r}: expected pkcs11:LABEL")
    config = Pkcs11Config.from_env()
    if config is None:
        raise ConfigError(f"master key {spec!r} is in a PKCS#11 token, but {MODULE_VARIABLE} is not set")
    return open_token(config).master_key(label)
