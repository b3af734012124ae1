"""The PKCS#11 adapter: Ed25519 signing keys and AES master keys that never leave a token.

Configuration (read when a command runs, like every ``AUDITSEAL_*`` variable):

- ``AUDITSEAL_PKCS11_MODULE``: the module's shared library (SoftHSM2: ``/usr/lib/softhsm/libsofthsm2.so``);
  setting it is what selects the token over a key file.
- ``AUDITSEAL_PKCS11_TOKEN``: the token's label.
- ``AUDITSEAL_PKCS11_PIN_FILE`` (a file holding the user PIN) or ``AUDITSEAL_PKCS11_PIN``; exactly one.
- ``AUDITSEAL_SIGNING_KEY_LABEL``: the label the sealer's keys carry (default ``auditseal-sealer``).

Objects (PKCS#11 v2.40 / v3.0): a signing key is a CKK_EC_EDWARDS key pair on curve Ed25519
(CKA_EC_PARAMS = OID 1.3.101.112), made by CKM_EC_EDWARDS_KEY_PAIR_GEN inside the token with the private
half CKA_SENSITIVE=true, CKA_EXTRACTABLE=false, CKA_SIGN=true; both halves carry CKA_LABEL = the label and
CKA_ID = the 8 bytes of the AuditSeal key id (hex(SHA-256(raw public key))[:16]), so the sealer finds the
key the keyring names. Signing is CKM_EDDSA (pure Ed25519, RFC 8032), verifiable by anyone with the public
half. Several keys share a label across rotations; the key id tells them apart. A master key is a 256-bit
CKK_AES secret key, non-extractable, with CKA_ID = its key id (ASCII), used only for CKM_AES_KEY_WRAP
(RFC 3394) and CKM_AES_CMAC (the data-key derivation, :mod:`pipeline.archive.encryption`). The key store's
KEK (:mod:`pipeline.privacy.keystore`, ``AUDITSEAL_KEK=pkcs11:LABEL``) is such a key too, in its own token.

PKCS#11 logins belong to the process, not to a session, so one logged-in session per token is opened per
process and shared; operations on it are serialised by a lock (a C_SignInit/C_Sign pair must not
interleave with another thread's). One signature per checkpoint makes the lock's cost negligible.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pipeline.integrity.keyring import KEY_ID_HEX_CHARS, PUBLIC_KEY_SIZE, key_id_for
from pipeline.keys.errors import KeyLabelError, Pkcs11ModuleError, TokenNotFoundError, TokenPinError

MODULE_VARIABLE = "AUDITSEAL_PKCS11_MODULE"
TOKEN_VARIABLE = "AUDITSEAL_PKCS11_TOKEN"
PIN_VARIABLE = "AUDITSEAL_PKCS11_PIN"
PIN_FILE_VARIABLE = "AUDITSEAL_PKCS11_PIN_FILE"
SIGNING_LABEL_VARIABLE = "AUDITSEAL_SIGNING_KEY_LABEL"
DEFAULT_SIGNING_LABEL = "auditseal-sealer"
DEFAULT_MASTER_LABEL = "auditseal-master"
ED25519_OID = "1.3.101.112"
MASTER_KEY_BITS = 256


@dataclass(frozen=True)
class Pkcs11Config:
    """Which module, token and PIN; the PIN is never printed."""

    module: str
    token: str
    pin: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Pkcs11Config | None:
        """The token configured by the ``AUDITSEAL_PKCS11_*`` variables, or None if no module is set.
        Raises KeyCustodyError naming the variable if the token or the PIN is missing."""
        env = os.environ if env is None else env
        module = env.get(MODULE_VARIABLE)
        if not module:
            return None
        token = env.get(TOKEN_VARIABLE)
        if not token:
            raise TokenNotFoundError(f"{MODULE_VARIABLE} is set but {TOKEN_VARIABLE} (the token's label) is not")
        pin_file, pin = env.get(PIN_FILE_VARIABLE), env.get(PIN_VARIABLE)
        if pin_file and pin:
            raise TokenPinError(f"set one of {PIN_FILE_VARIABLE} and {PIN_VARIABLE}, not both")
        if pin_file:
            try:
                with open(pin_file, encoding="utf-8") as handle:
                    pin = handle.read().strip()
            except OSError as exc:
                raise TokenPinError(f"cannot read the PIN file {pin_file}: {exc.strerror}") from None
        if not pin:
            raise TokenPinError(f"no PIN for token {token!r}: set {PIN_FILE_VARIABLE} (a file) or {PIN_VARIABLE}")
        return cls(module, token, pin)


def signing_label(env: Mapping[str, str] | None = None) -> str:
    """The label of the sealer's keys: ``$AUDITSEAL_SIGNING_KEY_LABEL`` or ``auditseal-sealer``."""
    env = os.environ if env is None else env
    return env.get(SIGNING_LABEL_VARIABLE) or DEFAULT_SIGNING_LABEL


class Pkcs11Signer:
    """An Ed25519 private key inside a token: signs with CKM_EDDSA, cannot be read out."""

    def __init__(self, token: Token, private_key, public_key: Ed25519PublicKey) -> None:
        self._token = token
        self._private_key = private_key
        self.public_key = public_key
        self.key_id = key_id_for(public_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte pure Ed25519 signature of ``message``, computed by the token."""
        from pkcs11 import Mechanism

        with self._token.lock:
            return bytes(self._private_key.sign(message, mechanism=Mechanism.EDDSA))

    def signer_at(self, at_micros: int) -> Pkcs11Signer:
        """A single key is its own schedule (see :class:`pipeline.integrity.keyring.KeySchedule`)."""
        return self

    @property
    def private_key_object(self):
        """The token's private-key object (for attribute checks; its value cannot be read)."""
        return self._private_key

    def __repr__(self) -> str:
        return f"Pkcs11Signer(key_id={self.key_id!r}, token={self._token.config.token!r})"


class Pkcs11MasterKey:
    """An AES-256 key-encryption key inside a token (see :mod:`pipeline.archive.encryption`)."""

    def __init__(self, token: Token, secret_key, key_id: str) -> None:
        self._token = token
        self._key = secret_key
        self.key_id = key_id

    def cmac(self, message: bytes) -> bytes:
        """AES-CMAC (NIST SP 800-38B) of ``message`` under the master key, computed by the token."""
        from pkcs11 import Mechanism

        with self._token.lock:
            return bytes(self._key.sign(message, mechanism=Mechanism.AES_CMAC))

    def derive_data_key(self, object_key: str, plaintext: bytes) -> tuple[bytes, bytes]:
        """(data key, nonce) of one object: SP 800-108 counter mode over the token's AES-CMAC."""
        from pipeline.archive.encryption import kbkdf_cmac_data_key

        return kbkdf_cmac_data_key(self.cmac, object_key, plaintext)

    def wrap(self, data_key: bytes) -> bytes:
        """AES-KW (RFC 3394) of ``data_key`` by the token: the data key enters it as a session object
        (an AES key, or a generic secret for other lengths, such as the key store's 64-byte AES-SIV keys)."""
        from pkcs11 import Attribute, Mechanism, ObjectClass

        with self._token.lock:
            session = self._token.session
            temporary = session.create_object({
                Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: _secret_type(len(data_key)),
                Attribute.VALUE: data_key, Attribute.TOKEN: False, Attribute.SENSITIVE: False,
                Attribute.EXTRACTABLE: True,
            })
            try:
                return bytes(self._key.wrap_key(temporary, mechanism=Mechanism.AES_KEY_WRAP))
            finally:
                temporary.destroy()

    def unwrap(self, wrapped: bytes) -> bytes:
        """The data key inside ``wrapped`` (AES-KW, RFC 3394), unwrapped by the token; raises
        ValueError if it does not unwrap under this key."""
        from pkcs11 import Attribute, Mechanism, ObjectClass, PKCS11Error

        with self._token.lock:
            try:
                # AES-KW adds 8 bytes: the unwrapped key's length, hence its type, is known beforehand
                key = self._key.unwrap_key(ObjectClass.SECRET_KEY, _secret_type(len(wrapped) - 8), wrapped,
                                           mechanism=Mechanism.AES_KEY_WRAP, store=False,
                                           template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
            except PKCS11Error as exc:
                raise ValueError(f"the token refused to unwrap: {type(exc).__name__}") from None
            try:
                return bytes(key[Attribute.VALUE])
            finally:
                key.destroy()

    def __repr__(self) -> str:
        return f"Pkcs11MasterKey(key_id={self.key_id!r}, token={self._token.config.token!r})"


class Token:
    """One logged-in session on a token, shared by this process's threads (see the module docstring)."""

    def __init__(self, config: Pkcs11Config, session) -> None:
        self.config = config
        self.session = session
        self.lock = threading.RLock()

    # ---- signing keys -----------------------------------------------------------------------------
    def signing_keys(self, label: str) -> dict[str, Pkcs11Signer]:
        """Every Ed25519 key pair labelled ``label``, by key id. Raises KeyLabelError for a key that is
        extractable or not sensitive (a key that could leave the token is refused, not used), or whose
        CKA_ID does not match its public key."""
        from pkcs11 import Attribute, KeyType, ObjectClass

        with self.lock:
            publics = {bytes(obj[Attribute.ID]): obj for obj in self.session.get_objects({
                Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC_EDWARDS, Attribute.LABEL: label})}
            privates = list(self.session.get_objects({
                Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.EC_EDWARDS, Attribute.LABEL: label}))
            found: dict[str, Pkcs11Signer] = {}
            for private in privates:
                object_id = bytes(private[Attribute.ID])
                where = f"token {self.config.token!r}, key {label!r} id {object_id.hex() or '(none)'}"
                if private[Attribute.EXTRACTABLE] or not private[Attribute.SENSITIVE]:
                    raise KeyLabelError(f"{where}: the private key is extractable or not sensitive; "
                                        "expected CKA_EXTRACTABLE=false and CKA_SENSITIVE=true")
                public = publics.get(object_id)
                if public is None:
                    raise KeyLabelError(f"{where}: no public key with the same label and CKA_ID beside it")
                public_key = Ed25519PublicKey.from_public_bytes(_raw_ec_point(bytes(public[Attribute.EC_POINT])))
                signer = Pkcs11Signer(self, private, public_key)
                if bytes.fromhex(signer.key_id) != object_id:
                    raise KeyLabelError(f"{where}: CKA_ID does not match the key id {signer.key_id} of its public key")
                found[signer.key_id] = signer
            return found

    def generate_signing_key(self, label: str) -> Pkcs11Signer:
        """A new Ed25519 key pair made inside the token (non-extractable, sensitive), labelled ``label``."""
        from pkcs11 import Attribute, KeyType, Mechanism
        from pkcs11.util.ec import encode_named_curve_parameters

        with self.lock:
            parameters = self.session.create_domain_parameters(
                KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)}, local=True)
            # CKA_ID is only known once the public key exists: generate with a random one, then set it
            provisional = secrets.token_bytes(KEY_ID_HEX_CHARS // 2)
            public, private = parameters.generate_keypair(
                mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=True, label=label, id=provisional,
                public_template={Attribute.VERIFY: True},
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
                                  Attribute.PRIVATE: True})
            public_key = Ed25519PublicKey.from_public_bytes(_raw_ec_point(bytes(public[Attribute.EC_POINT])))
            object_id = bytes.fromhex(key_id_for(public_key))
            public[Attribute.ID] = object_id
            private[Attribute.ID] = object_id
            return Pkcs11Signer(self, private, public_key)

    def destroy_signing_key(self, label: str, key_id: str) -> bool:
        """Destroy the private half of key ``key_id`` (its public half stays); False if it is not here."""
        from pkcs11 import Attribute, ObjectClass

        with self.lock:
            objects = list(self.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label,
                                                     Attribute.ID: bytes.fromhex(key_id)}))
            for obj in objects:
                obj.destroy()
            return bool(objects)

    # ---- master keys ------------------------------------------------------------------------------
    def master_key(self, label: str) -> Pkcs11MasterKey:
        """The AES master key labelled ``label``; KeyLabelError if there is none, several, or it is extractable."""
        from pkcs11 import Attribute, KeyType, ObjectClass

        with self.lock:
            keys = list(self.session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                                  Attribute.KEY_TYPE: KeyType.AES, Attribute.LABEL: label}))
            if len(keys) != 1:
                raise KeyLabelError(f"token {self.config.token!r}: expected one AES master key labelled {label!r}, "
                                    f"found {len(keys)}")
            key = keys[0]
            if key[Attribute.EXTRACTABLE] or not key[Attribute.SENSITIVE]:
                raise KeyLabelError(f"token {self.config.token!r}: master key {label!r} is extractable or not "
                                    "sensitive; expected CKA_EXTRACTABLE=false and CKA_SENSITIVE=true")
            return Pkcs11MasterKey(self, key, bytes(key[Attribute.ID]).decode("ascii", "replace"))

    def generate_master_key(self, label: str, key_id: str) -> Pkcs11MasterKey:
        """A new AES-256 master key made inside the token (non-extractable), labelled ``label``, id ``key_id``."""
        from pkcs11 import Attribute, KeyType

        with self.lock:
            existing = self.master_key_count(label)
            if existing:
                raise KeyLabelError(f"token {self.config.token!r} already holds a master key labelled {label!r}; "
                                    "a master key is never replaced (archives encrypted under it need it)")
            key = self.session.generate_key(KeyType.AES, MASTER_KEY_BITS, label=label, id=key_id.encode("ascii"),
                                            store=True, template={
                                                Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                                                Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.SIGN: True,
                                                Attribute.VERIFY: True, Attribute.ENCRYPT: False,
                                                Attribute.DECRYPT: False, Attribute.PRIVATE: True})
            return Pkcs11MasterKey(self, key, key_id)

    def master_key_count(self, label: str) -> int:
        """How many AES keys labelled ``label`` the token holds."""
        from pkcs11 import Attribute, KeyType, ObjectClass

        with self.lock:
            return len(list(self.session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                                      Attribute.KEY_TYPE: KeyType.AES, Attribute.LABEL: label})))


_open_tokens: dict[tuple[str, str], Token] = {}
_open_lock = threading.Lock()


def open_token(config: Pkcs11Config) -> Token:
    """The process's logged-in session on the configured token (opened once, then shared).

    Raises Pkcs11ModuleError, TokenNotFoundError or TokenPinError, each naming what was configured.
    """
    try:
        import pkcs11
        from pkcs11.exceptions import NoSuchToken, PinIncorrect, PinInvalid, PinLenRange, PinLocked, PKCS11Error
    except ImportError as exc:  # the dependency is declared; this only happens in a broken install
        raise Pkcs11ModuleError(f"python-pkcs11 is not installed: {exc}") from None
    with _open_lock:
        token = _open_tokens.get((config.module, config.token))
        if token is not None:
            return token
        if not os.path.isfile(config.module):
            raise Pkcs11ModuleError(f"PKCS#11 module {config.module}: no such file ({MODULE_VARIABLE})")
        try:
            library = pkcs11.lib(config.module)
        except PKCS11Error as exc:
            raise Pkcs11ModuleError(f"PKCS#11 module {config.module} cannot be loaded: {exc}") from None
        try:
            found = library.get_token(token_label=config.token)
        except NoSuchToken:
            labels = sorted({slot.get_token().label for slot in library.get_slots(token_present=True)})
            raise TokenNotFoundError(f"module {config.module} has no token labelled {config.token!r} "
                                     f"(tokens: {', '.join(labels) or 'none'})") from None
        try:
            session = found.open(user_pin=config.pin, rw=True)
        except (PinIncorrect, PinInvalid, PinLenRange):
            raise TokenPinError(f"token {config.token!r} refused the PIN") from None
        except PinLocked:
            raise TokenPinError(f"token {config.token!r}: the user PIN is locked (too many wrong PINs)") from None
        token = _open_tokens[(config.module, config.token)] = Token(config, session)
        return token


def _secret_type(length: int):
    # what a session object of a key to wrap is: an AES key for AES lengths (the archive's data keys), a
    # generic secret for any other (HSMs refuse AES keys of other lengths)
    from pkcs11 import KeyType

    return KeyType.AES if length in (16, 24, 32) else KeyType.GENERIC_SECRET


def _raw_ec_point(point: bytes) -> bytes:
    # CKA_EC_POINT of an Edwards key: the DER OCTET STRING (04 20 || 32 bytes) per PKCS#11 v3.0; some
    # modules return the 32 raw bytes
    if len(point) == PUBLIC_KEY_SIZE + 2 and point[:2] == b"\x04\x20":
        return point[2:]
    if len(point) == PUBLIC_KEY_SIZE:
        return point
    raise KeyLabelError(f"unexpected CKA_EC_POINT of {len(point)} bytes for an Ed25519 key")
