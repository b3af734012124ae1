"""Which of the keys a sealer holds signs a checkpoint issued at a given instant.

The keyring is the one place that says which key signs when (its validity windows), and it is what
verifiers check against, so the sealer follows it: for each checkpoint it takes the key valid at the
checkpoint's time. ``auditseal keys rotate`` adds the new key to the keyring with a window opening a little
in the future; every running sealer re-reads the keyring when the file changes (a stat per checkpoint), so
at that instant each one switches, with no restart and no checkpoint signed by a key its time does not
allow. A keyring naming a key this sealer does not hold, or a compromised key, stops the sealer instead:
nothing is ever signed with a key verifiers would reject.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping

from pipeline.integrity.errors import KeyFileError
from pipeline.integrity.keyring import Keyring, Signer, load_keyring
from pipeline.keys.errors import NoSigningKeyError

# an unknown key id makes the schedule ask the key store again, at most this often
_REFRESH_INTERVAL_S = 1.0


class KeyringSchedule:
    """The signer for each instant, from the keyring file and the keys a key store holds.

    ``load_signers`` returns the signers the store holds, by key id; it is called again when the keyring
    names a key not seen yet (a rotation created it after this process started). Without a keyring file,
    the store must hold exactly one key, which then signs whatever the time.
    """

    def __init__(self, load_signers: Callable[[], Mapping[str, Signer]], keyring_path: str | None,
                 describe_store: str) -> None:
        self._load_signers = load_signers
        self._keyring_path = keyring_path
        self.describe_store = describe_store
        self._lock = threading.Lock()
        self._signers: dict[str, Signer] = dict(load_signers())
        self._refreshed_at = time.monotonic()
        self._keyring: Keyring | None = None
        self._keyring_stamp: tuple[int, int, int] | None = None
        if keyring_path is None and len(self._signers) != 1:
            raise NoSigningKeyError(f"{describe_store} holds {len(self._signers)} signing keys and no keyring says "
                                    "which one signs: set AUDITSEAL_KEYRING")

    @property
    def signers(self) -> dict[str, Signer]:
        """The signers known so far, by key id."""
        return dict(self._signers)

    def keyring(self) -> Keyring | None:
        """The keyring as the file holds it now (re-read when its size, mtime or inode changed)."""
        if self._keyring_path is None:
            return None
        try:
            status = os.stat(self._keyring_path)
        except OSError as exc:
            raise KeyFileError(self._keyring_path, f"cannot read the keyring: {exc.strerror}") from None
        stamp = (status.st_ino, status.st_size, status.st_mtime_ns)
        if stamp != self._keyring_stamp:
            # save_keyring replaces the file atomically, so a reader never sees half a keyring
            self._keyring = load_keyring(self._keyring_path)
            self._keyring_stamp = stamp
        return self._keyring

    def announced_at(self, at_micros: int) -> list[Signer]:
        """The signers of keys the keyring announces for later than ``at_micros`` (a rotation's next key, before
        its switch), that are not revoked and that the store holds: they co-sign tree heads during the
        change-over, so a witness already told of the new key and one still on the old key both verify each head.
        Checkpoints are never co-signed: their key id names the one key valid at their time."""
        with self._lock:
            keyring = self.keyring()
            if keyring is None:
                return []
            upcoming = [entry for entry in keyring
                        if entry.valid_from_micros > at_micros and entry.compromised_since_micros is None]
            if any(entry.key_id not in self._signers for entry in upcoming) \
                    and time.monotonic() - self._refreshed_at >= _REFRESH_INTERVAL_S:
                self._signers = dict(self._load_signers())
                self._refreshed_at = time.monotonic()
            return [self._signers[entry.key_id] for entry in upcoming if entry.key_id in self._signers]

    def signer_at(self, at_micros: int) -> Signer:
        """The signer of a checkpoint issued at ``at_micros``; NoSigningKeyError if there is none."""
        with self._lock:
            keyring = self.keyring()
            if keyring is None:
                return next(iter(self._signers.values()))
            entry = next((item for item in keyring if item.valid_at(at_micros)), None)
            if entry is None:
                raise NoSigningKeyError(f"the keyring {self._keyring_path} has no key valid at {at_micros}: "
                                        "nothing can be signed (rotate to a new key)")
            if entry.compromised_at(at_micros):
                raise NoSigningKeyError(f"key {entry.key_id} was revoked as compromised from "
                                        f"{entry.compromised_since_micros}: refusing to sign with it (rotate first)")
            signer = self._signers.get(entry.key_id)
            if signer is None and time.monotonic() - self._refreshed_at >= _REFRESH_INTERVAL_S:
                self._signers = dict(self._load_signers())
                self._refreshed_at = time.monotonic()
                signer = self._signers.get(entry.key_id)
            if signer is None:
                raise NoSigningKeyError(f"the keyring says key {entry.key_id} signs at {at_micros}, but "
                                        f"{self.describe_store} does not hold it (holds: "
                                        f"{', '.join(sorted(self._signers)) or 'none'})")
            return signer
