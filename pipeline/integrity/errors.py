"""Integrity failures, one type per violation a verifier reports or a caller can act on.

Every message says what was expected and what was found, so a verification report can quote it
as is. Hashes are shown as their first 16 hex characters: enough to tell two apart in a report,
short enough to read.
"""

from enum import StrEnum
from typing import ClassVar

from pipeline.errors import AuditSealError, ConfigError


def short_hex(value: bytes) -> str:
    """Render a hash for a message: the first 16 hex characters, then an ellipsis."""
    text = value.hex()
    return text if len(text) <= 16 else text[:16] + "..."


class IntegrityError(AuditSealError):
    """Base of every integrity failure: the data does not prove what it claims to prove."""


class MalformedInputError(IntegrityError, ValueError):
    """A hash, sequence number or field has the wrong type, size or range to be encoded at all."""


class ChainViolation(StrEnum):
    """The kinds of chain break a verifier reports; the values are stable strings for JSON."""

    GAP = "gap"
    DUPLICATE = "duplicate"
    REORDER = "reorder"
    HASH_MISMATCH = "hash_mismatch"
    FORK = "fork"
    WRONG_CHAIN = "wrong_chain"


class ChainError(IntegrityError):
    """A record does not extend the chain head it was checked against.

    `chain_id` is the chain the record was checked against, `seq` the sequence number the record
    carries and `expected_seq` the one that should have come next; `kind` says which violation.
    """

    kind: ClassVar[ChainViolation]

    def __init__(self, chain_id: str, seq: int, expected_seq: int, detail: str) -> None:
        self.chain_id = chain_id
        self.seq = seq
        self.expected_seq = expected_seq
        super().__init__(f"chain {chain_id!r} seq {seq}: {self.kind.value}: {detail}")


class ChainGapError(ChainError):
    """Records are missing: the record's seq is beyond the next expected one."""

    kind = ChainViolation.GAP


class ChainDuplicateError(ChainError):
    """The record repeats the chain head: same seq, same hash."""

    kind = ChainViolation.DUPLICATE


class ChainReorderError(ChainError):
    """The record's seq precedes the chain head: it arrived out of order or was replayed."""

    kind = ChainViolation.REORDER


class ChainHashMismatchError(ChainError):
    """The record's hash is not the hash of its own prev_hash, seq and payload: it was altered."""

    kind = ChainViolation.HASH_MISMATCH


class ChainForkError(ChainError):
    """A self-consistent record extends a different history than the one verified so far."""

    kind = ChainViolation.FORK


class ChainMismatchError(ChainError):
    """The record belongs to another chain than the head it was checked against."""

    kind = ChainViolation.WRONG_CHAIN


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
