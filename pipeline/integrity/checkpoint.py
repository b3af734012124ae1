"""Signed batch checkpoints: one Ed25519 signature covers a batch of one chain.

A checkpoint says "records first_seq..last_seq of chain chain_id have this RFC 6962 Merkle root,
the last of them has this chain hash, and the checkpoint before this one had this hash", and
is signed with pure Ed25519 (RFC 8032 section 5.1.6). Checkpoints chain like records do: each
carries the hash of its predecessor, GENESIS_HASH for a chain's first one.

Canonical signed bytes (version 1), what the signature covers and what a SIEM in any language
recomputes to verify it:

    signed_bytes = b"auditseal/checkpoint/v1\\x00"       24 bytes: domain tag, NUL-terminated
                   || field(chain_id)                    UTF-8, 1..1024 bytes, no normalisation
                   || field(first_seq)                   u64
                   || field(last_seq)                    u64, >= first_seq
                   || field(merkle_root)                 32 bytes
                   || field(chain_head)                  32 bytes
                   || field(prev_checkpoint_hash)        32 bytes
                   || field(key_id)                      ASCII, 16 lowercase hex characters
                   || field(issued_at_micros)            u64, microseconds since the Unix epoch, UTC

    field(v) = u32_be(len(v)) || v      every field, fixed-size ones included, in this order
    u64      = the 8-byte unsigned big-endian encoding of the integer

    signature       = Ed25519(private key of key_id, signed_bytes)      64 bytes
    checkpoint_hash = SHA-256(signed_bytes || signature)                32 bytes

The tag keeps a checkpoint signature from being valid for any other message AuditSeal signs,
and names the version; the uniform length prefix makes the encoding injective and trivial to
reimplement. merkle_root is the RFC 9162 section 2.1.1 Merkle Tree Hash over the batch's
record leaves (leaf data = each record's 32-byte chain hash, see `merkle`); chain_head is the
chain hash of the record at last_seq. The tree size is last_seq - first_seq + 1.

Version 2 adds the log identity and the raw offsets the batch accounts for, inside the signed bytes:

    signed_bytes = b"auditseal/checkpoint/v2\\x00"       24 bytes
                   || field(origin)                      UTF-8 note key name: <log name>/<chain id>
                   || field(chain_id)
                   || field(first_seq) || field(last_seq)
                   || field(first_source_offset)         u64: first raw offset the batch accounts for
                   || field(last_source_offset)          u64, >= first_source_offset: the last one
                   || field(merkle_root) || field(chain_head) || field(prev_checkpoint_hash)
                   || field(key_id) || field(issued_at_micros)

Every raw offset in first_source_offset..last_source_offset is the source of exactly one entry of the
batch or inside the range of one of its gap entries, in order; the next v2 checkpoint of the chain
starts at last_source_offset + 1. A checkpoint is version 2 exactly when it has an origin; the
signature, checkpoint_hash and chaining are as in version 1 (the versions chain onto each other).
"""

import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidSignature

from pipeline.integrity.chain import require_hash, require_seq
from pipeline.integrity.errors import (
    BadSignatureError,
    CheckpointMismatchError,
    CompromisedKeyError,
    KeyNotValidError,
    MalformedInputError,
    MalformedNoteError,
    UnknownKeyError,
    short_hex,
)
from pipeline.integrity.keyring import SIGNATURE_SIZE, Keyring, KeyringEntry, Signer
from pipeline.integrity.merkle import record_tree_root
from pipeline.integrity.note import require_key_name

CHECKPOINT_DOMAIN_TAG = b"auditseal/checkpoint/v1\x00"
CHECKPOINT_V2_DOMAIN_TAG = b"auditseal/checkpoint/v2\x00"
MAX_CHAIN_ID_BYTES = 1024

_KEY_ID = re.compile(r"[0-9a-f]{16}")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed checkpoint; field meanings and encoding are in the module docstring.

    An unsigned checkpoint, as `build_checkpoint` returns it, has key_id "" and signature b"";
    `sign_checkpoint` fills both. Construction validates every field, so a malformed checkpoint
    read from an archive fails here with MalformedInputError naming the field.
    """

    chain_id: str
    first_seq: int
    last_seq: int
    merkle_root: bytes
    chain_head: bytes
    prev_checkpoint_hash: bytes
    key_id: str
    issued_at_micros: int
    signature: bytes = b""
    # version 2 only (None in a version 1 checkpoint): the log identity and the raw offsets covered
    origin: str | None = None
    first_source_offset: int | None = None
    last_source_offset: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.chain_id, str) or not self.chain_id:
            raise MalformedInputError(
                f"checkpoint chain_id must be a non-empty string, found {self.chain_id!r}"
            )
        try:
            encoded_length = len(self.chain_id.encode("utf-8"))
        except UnicodeEncodeError:
            raise MalformedInputError(
                f"checkpoint chain_id must be encodable as UTF-8, found {self.chain_id!r}"
            ) from None
        if encoded_length > MAX_CHAIN_ID_BYTES:
            raise MalformedInputError(
                f"checkpoint chain_id must be at most {MAX_CHAIN_ID_BYTES} UTF-8 bytes, "
                f"found {encoded_length}"
            )
        require_seq("checkpoint first_seq", self.first_seq)
        require_seq("checkpoint last_seq", self.last_seq)
        if self.last_seq < self.first_seq:
            raise MalformedInputError(
                f"checkpoint last_seq must be >= first_seq {self.first_seq}, found {self.last_seq}"
            )
        require_hash("checkpoint merkle_root", self.merkle_root)
        require_hash("checkpoint chain_head", self.chain_head)
        require_hash("checkpoint prev_checkpoint_hash", self.prev_checkpoint_hash)
        require_seq("checkpoint issued_at_micros", self.issued_at_micros)
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, SIGNATURE_SIZE):
            found = (
                f"{len(self.signature)} bytes"
                if isinstance(self.signature, bytes)
                else type(self.signature).__name__
            )
            raise MalformedInputError(
                f"checkpoint signature must be {SIGNATURE_SIZE} bytes, or empty if unsigned, "
                f"found {found}"
            )
        if not isinstance(self.key_id, str) or not (
            self.key_id == "" or _KEY_ID.fullmatch(self.key_id)
        ):
            raise MalformedInputError(
                f"checkpoint key_id must be 16 lowercase hex characters, found {self.key_id!r}"
            )
        if self.signature and not self.key_id:
            raise MalformedInputError("a signed checkpoint must name its key_id, found none")
        if self.origin is None:
            if self.first_source_offset is not None or self.last_source_offset is not None:
                raise MalformedInputError("a checkpoint with source offsets must name its origin (version 2), "
                                          "found none")
            return
        try:
            require_key_name(self.origin)
        except MalformedNoteError as exc:
            raise MalformedInputError(f"checkpoint origin: {exc}") from None
        if not self.origin.endswith("/" + self.chain_id):
            raise MalformedInputError(f"checkpoint origin must end with /{self.chain_id} (the chain id), "
                                      f"found {self.origin!r}")
        if self.first_source_offset is None or self.last_source_offset is None:
            raise MalformedInputError("a version 2 checkpoint must carry first_source_offset and "
                                      "last_source_offset, found none")
        require_seq("checkpoint first_source_offset", self.first_source_offset)
        require_seq("checkpoint last_source_offset", self.last_source_offset)
        if self.last_source_offset < self.first_source_offset:
            raise MalformedInputError(f"checkpoint last_source_offset must be >= first_source_offset "
                                      f"{self.first_source_offset}, found {self.last_source_offset}")

    @property
    def tree_size(self) -> int:
        """How many records, hence Merkle leaves, the checkpoint covers."""
        return self.last_seq - self.first_seq + 1

    @property
    def version(self) -> int:
        """1 or 2: which signed bytes the checkpoint has (version 2 names its origin)."""
        return 1 if self.origin is None else 2

    @property
    def is_signed(self) -> bool:
        """Whether the checkpoint carries a signature (not whether it verifies)."""
        return bool(self.signature)

    def describe(self) -> str:
        """The checkpoint as named in messages: chain id and seq range."""
        return f"checkpoint of chain {self.chain_id!r} seq {self.first_seq}..{self.last_seq}"


def checkpoint_signed_bytes(checkpoint: Checkpoint) -> bytes:
    """The canonical bytes the signature covers, of the checkpoint's version (module docstring; no RFC
    defines them)."""
    if checkpoint.origin is not None:
        return _v2_signed_bytes(checkpoint)
    fields = (
        checkpoint.chain_id.encode("utf-8"),
        _U64.pack(checkpoint.first_seq),
        _U64.pack(checkpoint.last_seq),
        checkpoint.merkle_root,
        checkpoint.chain_head,
        checkpoint.prev_checkpoint_hash,
        checkpoint.key_id.encode("ascii"),
        _U64.pack(checkpoint.issued_at_micros),
    )
    return CHECKPOINT_DOMAIN_TAG + b"".join(_U32.pack(len(value)) + value for value in fields)


def _v2_signed_bytes(checkpoint: Checkpoint) -> bytes:
    assert checkpoint.origin is not None and checkpoint.first_source_offset is not None
    assert checkpoint.last_source_offset is not None
    fields = (
        checkpoint.origin.encode("utf-8"),
        checkpoint.chain_id.encode("utf-8"),
        _U64.pack(checkpoint.first_seq),
        _U64.pack(checkpoint.last_seq),
        _U64.pack(checkpoint.first_source_offset),
        _U64.pack(checkpoint.last_source_offset),
        checkpoint.merkle_root,
        checkpoint.chain_head,
        checkpoint.prev_checkpoint_hash,
        checkpoint.key_id.encode("ascii"),
        _U64.pack(checkpoint.issued_at_micros),
    )
    return CHECKPOINT_V2_DOMAIN_TAG + b"".join(_U32.pack(len(value)) + value for value in fields)


def build_checkpoint(
    *,
    chain_id: str,
    first_seq: int,
    record_hashes: Sequence[bytes],
    prev_checkpoint_hash: bytes,
    issued_at_micros: int,
    origin: str | None = None,
    source_offsets: tuple[int, int] | None = None,
    batch_root: bytes | None = None,
) -> Checkpoint:
    """The unsigned checkpoint of a batch, given the chain hashes of its records in seq order.

    With an ``origin`` (and the batch's inclusive raw ``source_offsets`` range) it is a version 2
    checkpoint; without, version 1.

    Deriving last_seq, merkle_root (RFC 9162 section 2.1.1 over record leaves) and chain_head
    from the record hashes, rather than taking them as arguments, leaves the sealer no way to
    sign a root and a head that disagree with each other or with the seq range. ``batch_root``: the
    Merkle root of these same hashes' record leaves if the caller built it already, with the chain's
    history tree (`history_tree.extended_by_batch`).
    """
    if not record_hashes:
        raise MalformedInputError("a checkpoint covers at least one record, found an empty batch")
    root = record_tree_root(record_hashes) if batch_root is None else batch_root
    return Checkpoint(
        chain_id=chain_id,
        first_seq=first_seq,
        last_seq=first_seq + len(record_hashes) - 1,
        merkle_root=root,
        chain_head=record_hashes[-1],
        prev_checkpoint_hash=prev_checkpoint_hash,
        key_id="",
        issued_at_micros=issued_at_micros,
        origin=origin,
        first_source_offset=None if source_offsets is None else source_offsets[0],
        last_source_offset=None if source_offsets is None else source_offsets[1],
    )


def sign_checkpoint(checkpoint: Checkpoint, signing_key: Signer) -> Checkpoint:
    """The checkpoint with the signer's key_id and Ed25519 signature (RFC 8032 5.1.6).

    The key id is part of the signed bytes, so it is set before signing; any previous key id
    and signature are replaced.
    """
    with_key = replace(checkpoint, key_id=signing_key.key_id, signature=b"")
    return replace(with_key, signature=signing_key.sign(checkpoint_signed_bytes(with_key)))


def checkpoint_hash(checkpoint: Checkpoint) -> bytes:
    """SHA-256(signed_bytes || signature): what the next checkpoint's prev_checkpoint_hash holds.

    Raises MalformedInputError for an unsigned checkpoint, which nothing may chain onto.
    """
    if not checkpoint.is_signed:
        raise MalformedInputError(f"{checkpoint.describe()} is unsigned: it has no checkpoint hash")
    return hashlib.sha256(checkpoint_signed_bytes(checkpoint) + checkpoint.signature).digest()


def verify_checkpoint_signature(checkpoint: Checkpoint, keyring: Keyring) -> KeyringEntry:
    """Verify the checkpoint's Ed25519 signature (RFC 8032 section 5.1.7) and return the key used.

    Raises UnknownKeyError if the keyring lacks key_id, KeyNotValidError if issued_at_micros is
    outside that key's validity window, BadSignatureError if the checkpoint is unsigned or its
    signature does not verify over the canonical signed bytes.
    """
    if not checkpoint.is_signed:
        raise BadSignatureError(f"{checkpoint.describe()}: expected a signature, found none")
    entry = keyring.get(checkpoint.key_id)
    if entry is None:
        known = ", ".join(item.key_id for item in keyring) or "none"
        raise UnknownKeyError(
            f"{checkpoint.describe()}: signed by key {checkpoint.key_id}, "
            f"which the keyring does not hold (keys: {known})"
        )
    if not entry.valid_at(checkpoint.issued_at_micros):
        raise KeyNotValidError(
            f"{checkpoint.describe()}: expected issued_at_micros within key {entry.key_id}'s "
            f"validity window {entry.describe_window()}, found {checkpoint.issued_at_micros}"
        )
    try:
        entry.public_key.verify(checkpoint.signature, checkpoint_signed_bytes(checkpoint))
    except InvalidSignature:
        raise BadSignatureError(
            f"{checkpoint.describe()}: signature {short_hex(checkpoint.signature)} does not verify "
            f"under key {entry.key_id}: the checkpoint or its signature was altered"
        ) from None
    return entry


def check_key_not_compromised(checkpoint: Checkpoint, entry: KeyringEntry) -> None:
    """Raise CompromisedKeyError if `entry` was revoked as compromised at or before the checkpoint's time.

    Call after verify_checkpoint_signature: a valid signature by a stolen key proves nothing. The issue
    time is the signer's claim, so a thief can backdate it below the compromise time; only a witness
    cosignature made before that time can vouch for such a checkpoint (not checked here).
    """
    if entry.compromised_at(checkpoint.issued_at_micros):
        raise CompromisedKeyError(
            f"{checkpoint.describe()}: signed by key {entry.key_id} at {checkpoint.issued_at_micros}, "
            f"after its compromise at {entry.compromised_since_micros} (revoked): its signature proves nothing"
        )


def verify_checkpoint_batch(
    checkpoint: Checkpoint, chain_id: str, first_seq: int, record_hashes: Sequence[bytes],
    batch_root: bytes | None = None,
) -> None:
    """Check that the checkpoint covers exactly these records (the counterpart of build_checkpoint).

    `record_hashes` are the chain hashes of the records read back, in seq order from
    `first_seq`. Raises CheckpointMismatchError naming the first field that disagrees: chain,
    seq range, chain head or Merkle root (RFC 9162 section 2.1.1). ``batch_root`` as for
    `build_checkpoint`: the root over these same hashes, built already with the history tree.
    """
    last_seq = first_seq + len(record_hashes) - 1
    if chain_id != checkpoint.chain_id:
        raise CheckpointMismatchError(
            f"{checkpoint.describe()}: expected records of chain {checkpoint.chain_id!r}, "
            f"found chain {chain_id!r}"
        )
    if (first_seq, last_seq) != (checkpoint.first_seq, checkpoint.last_seq):
        found = f"seq {first_seq}..{last_seq}" if record_hashes else "no records"
        raise CheckpointMismatchError(
            f"{checkpoint.describe()}: expected records seq "
            f"{checkpoint.first_seq}..{checkpoint.last_seq}, found {found}"
        )
    if record_hashes[-1] != checkpoint.chain_head:
        raise CheckpointMismatchError(
            f"{checkpoint.describe()}: expected chain head {short_hex(checkpoint.chain_head)}, "
            f"found {short_hex(record_hashes[-1])} at seq {last_seq}"
        )
    root = record_tree_root(record_hashes) if batch_root is None else batch_root
    if root != checkpoint.merkle_root:
        raise CheckpointMismatchError(
            f"{checkpoint.describe()}: expected Merkle root {short_hex(checkpoint.merkle_root)}, "
            f"found {short_hex(root)} over the records read back"
        )

