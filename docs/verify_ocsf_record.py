"""Check one AuditSeal OCSF record's integrity fields by hand: Python's standard library and `cryptography` only.

    python docs/verify_ocsf_record.py KEYRING.json < one-record.json

Nothing of AuditSeal is imported: this is the recipe of docs/SIEM.md, runnable, for a SIEM team to port.
It checks (1) the chain hash over the entry bytes, (2) that the attestation shows that hash, (3) the
RFC 9162 inclusion of the hash in the checkpoint's Merkle root, (4) the checkpoint's Ed25519 signature
and hash. Exit 0 and one line if it all holds, 1 naming the first check that fails.
"""

import base64
import hashlib
import json
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def field(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def chain_hash(prev_hash: bytes, seq: int, entry: bytes) -> bytes:
    return hashlib.sha256(b"auditseal/chain/v1\x00" + prev_hash + u64(seq) + u64(len(entry)) + entry).digest()


def root_from_path(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2: the root an inclusion proof leads to (None if the proof is malformed)."""
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def checkpoint_signed_bytes(cp: dict) -> bytes:
    return (b"auditseal/checkpoint/v1\x00" + field(cp["chain_id"].encode()) + field(u64(cp["first_seq"]))
            + field(u64(cp["last_seq"])) + field(bytes.fromhex(cp["merkle_root"]))
            + field(bytes.fromhex(cp["chain_head"])) + field(bytes.fromhex(cp["prev_checkpoint_hash"]))
            + field(cp["key_id"].encode()) + field(u64(cp["issued_at_micros"])))


def check(document: dict, keyring: dict) -> str:
    evidence = document["unmapped"]["auditseal"]
    attestation = document["attestation_list"][0]
    cp = evidence["checkpoint"]
    if evidence["kind"] in ("event", "rejection"):
        entry = base64.b64decode(evidence["entry"])
        digest = chain_hash(bytes.fromhex(evidence["prev_hash"]), evidence["seq"], entry)
        if digest.hex() != evidence["hash"]:
            return "FAIL: the entry bytes do not hash to the record's hash"
        if attestation["fingerprint"]["value"] != digest.hex():
            return "FAIL: the attestation fingerprint is not the entry's hash"
        inclusion = evidence["inclusion"]
        leaf = hashlib.sha256(b"\x00" + digest).digest()
        root = root_from_path(leaf, inclusion["leaf_index"], inclusion["tree_size"],
                              [bytes.fromhex(node) for node in inclusion["audit_path"]])
        if (root is None or root.hex() != cp["merkle_root"] or inclusion["leaf_index"] != evidence["seq"] - cp["first_seq"]
                or inclusion["tree_size"] != cp["last_seq"] - cp["first_seq"] + 1):
            return "FAIL: the inclusion proof does not lead to the checkpoint's Merkle root"
    key = next((k for k in keyring["keys"] if k["key_id"] == cp["key_id"]), None)
    if key is None or not (key["valid_from_micros"] <= cp["issued_at_micros"]
                           and (key["valid_until_micros"] is None or cp["issued_at_micros"] < key["valid_until_micros"])):
        return f"FAIL: key {cp['key_id']} is not in the keyring or not valid when the checkpoint was signed"
    signed, signature = checkpoint_signed_bytes(cp), bytes.fromhex(cp["signature"])
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"])).verify(signature, signed)
    except InvalidSignature:
        return "FAIL: the checkpoint signature does not verify"
    if hashlib.sha256(signed + signature).hexdigest() != cp["checkpoint_hash"]:
        return "FAIL: checkpoint_hash does not recompute"
    return (f"OK: {document['metadata']['uid']} is in checkpoint {cp['chain_id']} {cp['first_seq']}..{cp['last_seq']} "
            f"signed by {cp['key_id']}")


if __name__ == "__main__":
    with open(sys.argv[1]) as keyring_file:
        verdict = check(json.load(sys.stdin), json.load(keyring_file))
    print(verdict)
    sys.exit(0 if verdict.startswith("OK") else 1)
