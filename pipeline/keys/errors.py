"""Exception types of key custody, one per failure an operator can act on."""

from pipeline.errors import AuditSealError, ConfigError


class KeyCustodyError(ConfigError):
    """The configured key store cannot be used (exit 2): nothing is signed until it is fixed."""


class Pkcs11ModuleError(KeyCustodyError):
    """The PKCS#11 module (a shared library) is missing or is not a PKCS#11 module."""


class TokenNotFoundError(KeyCustodyError):
    """No token with the configured label is present in the module's slots."""


class TokenPinError(KeyCustodyError):
    """The token refused the PIN, or no PIN was given."""


class KeyLabelError(KeyCustodyError):
    """The token holds no usable key with the configured label (or the key is unfit: extractable, wrong type)."""


class NoSigningKeyError(AuditSealError):
    """At a checkpoint's time the keyring names no key this sealer holds, or only a compromised one:
    the sealer stops rather than sign with a key verifiers would not accept."""
