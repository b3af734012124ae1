"""Exception types a caller can act on, one per kind of failure."""


class AuditSealError(Exception):
    """Base class of every error AuditSeal raises on purpose."""


class ConfigError(AuditSealError):
    """A required setting is missing or malformed (exit code 2 at the command line)."""
