"""Log identity: the origin every chain's tree heads name inside their signed bytes.

Each chain is one transparency log. Its origin (the tlog-checkpoint origin line, and the log key's
note key name) is ``<log name>/<chain id>``, e.g. ``auditseal/MkU3OEVBNTcwNTJENDM2Qg/audit.raw/3``.
The log name is deployment-unique: by default ``auditseal/<Kafka cluster id>``, so staging and
production (different clusters) can never issue interchangeable heads; operators may set their own
(a schema-less URL they control, such as ``audit.example.com/prod``).

The log key is the sealer's Ed25519 checkpoint key under that name. Reusing it is safe: a v1
checkpoint's signed bytes start with ``auditseal/checkpoint/v1\\x00`` and note text may hold no NUL,
so no signature is valid as both.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.integrity.errors import MalformedNoteError
from pipeline.integrity.note import ALG_ED25519, NoteSigner, NoteVerifier, require_key_name

DEFAULT_LOG_NAME_PREFIX = "auditseal"


def default_log_name(cluster_id: str) -> str:
    """The default log name of a deployment: ``auditseal/<cluster id>``."""
    if not cluster_id or any(character.isspace() or character == "+" for character in cluster_id):
        raise MalformedNoteError(f"a Kafka cluster id must be non-empty, without spaces or '+', found {cluster_id!r}")
    return f"{DEFAULT_LOG_NAME_PREFIX}/{cluster_id}"


def chain_origin(log_name: str, chain_id: str) -> str:
    """The origin of one chain's heads: ``<log name>/<chain id>``; MalformedNoteError if not a valid key name."""
    return require_key_name(f"{require_key_name(log_name).rstrip('/')}/{chain_id}")


def log_signer(private_key: Ed25519PrivateKey, origin: str) -> NoteSigner:
    """The note signer of a chain's heads: the sealer's key under the chain's origin."""
    return NoteSigner(origin, private_key)


def log_verifier(public_key: Ed25519PublicKey, origin: str) -> NoteVerifier:
    """The note verifier of a chain's heads (type 0x01, key name = origin)."""
    return NoteVerifier(origin, ALG_ED25519, public_key)
