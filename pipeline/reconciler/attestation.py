"""The reconciler's signed attestations: what it compared, and what it found, signed with its own key.

Pure. An attestation is the attribute map of an AuditEvent (``reconcile.attest`` for a round over a chain,
``reconcile.mismatch`` for each disagreement), written to ``audit.reconciliation`` (only the reconciler may
write it) and sealed from there like any other origin. Its ``signature`` is a pure Ed25519 signature (RFC
8032) by the reconciler's key over::

    b"auditseal/reconciler/attestation/v1\\n" || UTF-8 JSON of every other attribute, keys sorted, no spaces

so an attestation cannot be forged by whoever holds the sealer's key, and ``key_id`` names the key (the
SHA-256-based id of :func:`pipeline.integrity.keyring.key_id_for`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pipeline.integrity.keyring import Signer, key_id_for

DOMAIN = b"auditseal/reconciler/attestation/v1\n"
SIGNATURE, KEY_ID = "signature", "key_id"


def attestation_bytes(attributes: Mapping[str, str]) -> bytes:
    """The bytes an attestation's signature covers: every attribute but the signature itself."""
    body = {k: v for k, v in attributes.items() if k != SIGNATURE}
    return DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_attestation(attributes: Mapping[str, str], signer: Signer) -> dict[str, str]:
    """``attributes`` with ``key_id`` and ``signature`` (hex) added."""
    signed = {**attributes, KEY_ID: signer.key_id}
    return {**signed, SIGNATURE: signer.sign(attestation_bytes(signed)).hex()}


def attestation_is_valid(attributes: Mapping[str, str], public_key: Ed25519PublicKey) -> bool:
    """Whether ``attributes`` carry a valid signature of ``public_key`` naming its key id."""
    if attributes.get(KEY_ID) != key_id_for(public_key):
        return False
    try:
        public_key.verify(bytes.fromhex(attributes.get(SIGNATURE, "")), attestation_bytes(attributes))
    except (InvalidSignature, ValueError):
        return False
    return True
