"""Integrity failures, one type per failure a caller can act on.

The kinds of violation a verification reports are not exceptions: they are the one vocabulary of
the state machine, :class:`pipeline.integrity.chain_state.ViolationKind`.

Every message says what was expected and what was found, so a verification report can quote it
as is. Hashes are shown as their first 16 hex characters: enough to tell two apart in a report,
short enough to read.
"""

from pipeline.errors import AuditSealError, ConfigError


def short_hex(value: bytes) -> str:
    """Render a hash for a message: the first 16 hex characters, then an ellipsis."""
    text = value.hex()
    return text if len(text) <= 16 else text[:16] + "..."


class IntegrityError(AuditSealError):
    """Base of every integrity failure: the data does not prove what it claims to prove."""


class MalformedInputError(IntegrityError, ValueError):
    """A hash, sequence number or field has the wrong type, size or range to be encoded at all."""


class CheckpointError(IntegrityError):
    """Base of checkpoint failures: a signature that does not verify, a batch it does not cover."""


class UnknownKeyError(CheckpointError):
    """The checkpoint names a key id the keyring does not hold."""


class KeyNotValidError(CheckpointError):
    """The checkpoint's key exists but its validity window does not contain the issue time."""


class CompromisedKeyError(CheckpointError):
    """The checkpoint verifies, but under a key revoked as compromised at or before its issue time."""


class BadSignatureError(CheckpointError):
    """The checkpoint's signature does not verify under its key: the checkpoint was altered."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint disagrees with the records it claims to cover or with its predecessor."""


class KeyringError(ConfigError):
    """The keyring is inconsistent: duplicate key ids, overlapping windows, a bad rotation."""


class KeyFileError(KeyringError):
    """A signing key or keyring file is missing, unreadable, malformed or too widely readable."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class MalformedNoteError(IntegrityError, ValueError):
    """A C2SP signed note, checkpoint body, cosignature, proof file or key does not parse."""


class NoteVerificationError(IntegrityError):
    """A signed note carries no verifying signature of the key it must be signed by.

    Raised too when a signature line names a known key (name and key hash) and does not
    verify: per C2SP signed-note such a note is malformed, whatever the other lines say.
    """


class ConsistencyProofError(IntegrityError):
    """Two tree heads are not shown consistent: the later one does not extend the earlier."""


class InclusionProofError(IntegrityError):
    """An inclusion proof does not lead from its entry to the tree head's root hash."""


class QuorumError(IntegrityError):
    """A tree head lacks the cosignatures its witness policy's quorum requires."""


class PolicyError(ConfigError):
    """A C2SP tlog-policy file does not parse or is inconsistent (exit code 2)."""
