"""Where the sealer's signing keys live: a PKCS#11 token (production) or PEM files (laptops).

One configuration for the sealer and for ``auditseal keys``:

- ``AUDITSEAL_PKCS11_MODULE`` set: the token of :mod:`pipeline.keys.pkcs11`, keys labelled
  ``$AUDITSEAL_SIGNING_KEY_LABEL``;
- otherwise ``AUDITSEAL_SIGNING_KEY`` (or ``--signing-key``): a PKCS#8 PEM file, or a directory of them
  named ``<key id>.pem`` (what ``auditseal keys init|rotate`` writes, so a rotation needs no restart).

Setting both is refused: which key signs must never depend on a precedence rule.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.integrity.keyring import (
    generate_signing_key,
    load_signing_key,
    save_signing_key,
)
from pipeline.keys import pkcs11
from pipeline.keys.errors import KeyLabelError
from pipeline.keys.schedule import KeyringSchedule

SIGNING_KEY_VARIABLE = "AUDITSEAL_SIGNING_KEY"
KEYRING_VARIABLE = "AUDITSEAL_KEYRING"


class SigningKeyStore:
    """The keys of one store: list them by key id, make a new one, destroy a private half."""

    def __init__(self, env: Mapping[str, str] | None = None, signing_key: str | None = None) -> None:
        env = dict(os.environ if env is None else env)
        self.config = pkcs11.Pkcs11Config.from_env(env)
        path = signing_key or env.get(SIGNING_KEY_VARIABLE)
        if self.config is not None and path:
            raise ConfigError(f"both a PKCS#11 token ({pkcs11.MODULE_VARIABLE}) and a key file "
                              f"({SIGNING_KEY_VARIABLE} or --signing-key) are configured: set one")
        if self.config is None and not path:
            raise ConfigError(f"no signing key: set {pkcs11.MODULE_VARIABLE} and the token variables (production), "
                              f"or pass --signing-key / set {SIGNING_KEY_VARIABLE} "
                              "(`auditseal dev env --role sealer` sets them for the local stack)")
        self.path = Path(path) if path else None
        self.label = pkcs11.signing_label(env)

    @property
    def is_token(self) -> bool:
        """True for a PKCS#11 token, False for key files."""
        return self.config is not None

    def describe(self) -> str:
        """The store in words, for messages."""
        if self.config is not None:
            return f"token {self.config.token!r} (keys labelled {self.label!r})"
        return f"key {'directory' if self.path.is_dir() else 'file'} {self.path}"

    def token(self) -> pkcs11.Token:
        """The open token (only for a token store)."""
        assert self.config is not None
        return pkcs11.open_token(self.config)

    def signers(self) -> dict:
        """Every signing key the store holds, by key id."""
        if self.config is not None:
            return self.token().signing_keys(self.label)
        if self.path.is_dir():
            keys = [load_signing_key(item) for item in sorted(self.path.glob("*.pem"))]
            return {key.key_id: key for key in keys}
        key = load_signing_key(self.path)
        return {key.key_id: key}

    def require_signers(self) -> dict:
        """:meth:`signers`, or KeyLabelError if the store holds none."""
        found = self.signers()
        if not found:
            raise KeyLabelError(f"{self.describe()} holds no signing key")
        return found

    def generate(self):
        """A new signing key in the store (for a file store, ``<dir>/<key id>.pem``)."""
        if self.config is not None:
            return self.token().generate_signing_key(self.label)
        if not self.path.is_dir():
            raise ConfigError(f"{SIGNING_KEY_VARIABLE}={self.path} is one key file; to create keys, point it at a "
                              "directory (each key becomes <key id>.pem there)")
        key = generate_signing_key()
        save_signing_key(key, self.path / f"{key.key_id}.pem")
        return key

    def destroy(self, key_id: str) -> str:
        """Destroy the private half of ``key_id`` where that is possible; says what was done."""
        if self.config is not None:
            if self.token().destroy_signing_key(self.label, key_id):
                return f"private key {key_id} destroyed in {self.describe()}"
            return f"{self.describe()} holds no private key {key_id}"
        candidate = self.path / f"{key_id}.pem" if self.path.is_dir() else self.path
        if candidate.exists() and load_signing_key(candidate).key_id == key_id:
            candidate.unlink()
            return f"key file {candidate} deleted"
        return f"no key file of {key_id} in {self.path}"

    def schedule(self, keyring_path: str | None) -> KeyringSchedule:
        """The sealer's schedule over this store; checks now that some key here may sign now."""
        schedule = KeyringSchedule(self.require_signers, keyring_path, self.describe())
        schedule.signer_at(time.time_ns() // 1000)
        return schedule


def sealer_key_schedule(signing_key: str | None = None, env: Mapping[str, str] | None = None) -> KeyringSchedule:
    """The sealer's keys from its configuration (module docstring), following ``$AUDITSEAL_KEYRING`` when set.

    Raises a KeyCustodyError (exit 2) for a missing module or token, a wrong PIN or no key under the label,
    and NoSigningKeyError (exit 2 too, as a ConfigError below) when no key held here may sign now.
    """
    from pipeline.keys.errors import NoSigningKeyError

    env = os.environ if env is None else env
    store = SigningKeyStore(env, signing_key)
    try:
        return store.schedule(env.get(KEYRING_VARIABLE) or None)
    except NoSigningKeyError as exc:
        raise ConfigError(str(exc)) from None
