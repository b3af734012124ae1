"""The per-partition hash chain: every sealed record commits to its predecessor.

One chain per raw partition. Records are numbered from seq 0; record 0's prev_hash is
GENESIS_HASH (32 zero bytes), and record n's prev_hash is record n-1's hash. The hash is

    hash = SHA-256( b"auditseal/chain/v1\\x00"        19 bytes: domain tag, NUL-terminated
                  || prev_hash                       32 bytes
                  || seq                             8 bytes, unsigned big-endian
                  || len(payload)                    8 bytes, unsigned big-endian
                  || payload )                       the event bytes as sealed

The domain tag keeps a chain hash from ever colliding with another SHA-256 use in AuditSeal
(Merkle leaves start with 0x00, nodes with 0x01, checkpoints with their own tag); the fixed-size
fields and the length prefix make the encoding injective, so no two different
(prev_hash, seq, payload) triples hash the same input. Any edit, drop, insert, reorder or
duplicate therefore breaks the chain at an exact position, which the state machine in
`pipeline.integrity.chain_state` names.
"""

import hashlib
import struct
from dataclasses import dataclass

from pipeline.integrity.errors import MalformedInputError, short_hex
from pipeline.integrity.merkle import HASH_SIZE

CHAIN_DOMAIN_TAG = b"auditseal/chain/v1\x00"
GENESIS_HASH = bytes(HASH_SIZE)
MAX_SEQ = 2**64 - 1
# The seq of an empty chain's head: the first record's seq is GENESIS_SEQ + 1 == 0.
GENESIS_SEQ = -1

_U64_PAIR = struct.Struct(">QQ")


def chain_hash(prev_hash: bytes, seq: int, payload: bytes) -> bytes:
    """SHA-256 over the domain-separated encoding of (prev_hash, seq, payload) in the module doc.

    No RFC defines a record hash chain; this encoding is AuditSeal's own (the design's integrity
    model, after CloudTrail's chained digest files), with SHA-256 as in FIPS 180-4.
    Raises MalformedInputError if prev_hash is not 32 bytes or seq is not in [0, 2**64 - 1].
    """
    require_hash("prev_hash", prev_hash)
    require_seq("seq", seq)
    if not isinstance(payload, (bytes, bytearray)):
        raise MalformedInputError(f"payload must be bytes, found {type(payload).__name__}")
    return chain_hash_unchecked(prev_hash, seq, payload)


def chain_hash_unchecked(prev_hash: bytes, seq: int, payload: bytes) -> bytes:
    """chain_hash without its argument checks, for a verifier's hot loop only.

    The caller must already have established what chain_hash checks: prev_hash is 32 bytes,
    seq an int in [0, 2**64 - 1], payload bytes. Wrong arguments give a wrong hash, not an error.
    """
    return hashlib.sha256(CHAIN_DOMAIN_TAG + prev_hash + _U64_PAIR.pack(seq, len(payload)) + payload).digest()


def require_hash(name: str, value: object) -> bytes:
    """Return `value` if it is a 32-byte SHA-256 hash, else raise MalformedInputError naming it."""
    if not isinstance(value, bytes):
        raise MalformedInputError(f"{name} must be {HASH_SIZE} bytes, found {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise MalformedInputError(f"{name} must be {HASH_SIZE} bytes, found {len(value)} bytes")
    return value


def require_seq(name: str, value: object) -> int:
    """Return `value` if it is an int in [0, 2**64 - 1], else raise MalformedInputError."""
    # bool is an int subclass; True as a sequence number is a bug, not a 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedInputError(f"{name} must be an integer, found {type(value).__name__}")
    if not 0 <= value <= MAX_SEQ:
        raise MalformedInputError(f"{name} must be in [0, 2**64 - 1], found {value}")
    return value


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of a chain: its chain id, seq and hash.

    An empty chain's head is `ChainHead.genesis(chain_id)`: seq GENESIS_SEQ (-1) and hash
    GENESIS_HASH, so that `.next(payload)` yields record 0 whose prev_hash is GENESIS_HASH.
    """

    chain_id: str
    seq: int
    hash: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.chain_id, str) or not self.chain_id:
            raise MalformedInputError(
                f"chain_id must be a non-empty string, found {self.chain_id!r}"
            )
        if self.seq != GENESIS_SEQ:
            require_seq("seq", self.seq)
        require_hash("hash", self.hash)
        if self.seq == GENESIS_SEQ and self.hash != GENESIS_HASH:
            raise MalformedInputError(
                f"an empty chain's head hash must be GENESIS_HASH, found {short_hex(self.hash)}"
            )

    @classmethod
    def genesis(cls, chain_id: str) -> "ChainHead":
        """The head of an empty chain: the first record extends it with seq 0."""
        return cls(chain_id, GENESIS_SEQ, GENESIS_HASH)

    @property
    def is_genesis(self) -> bool:
        """Whether no record has been appended yet."""
        return self.seq == GENESIS_SEQ

    def next(self, payload: bytes) -> "ChainHead":
        """The head after appending `payload`: seq + 1, hashed by chain_hash from this head."""
        seq = self.seq + 1
        return ChainHead(self.chain_id, seq, chain_hash(self.hash, seq, payload))
