"""schemas/FORMAT.md's worked examples are regenerated here from the code, byte for byte.

Each example in the document is a fenced block preceded by ``<!-- example: NAME -->``; a test fails if the
document and the code disagree, so the specification a SIEM engineer implements from cannot drift.
Run ``python -m tests.unit.test_format_document`` to print every example (to update the document).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.archive.query_index import BloomFilter
from pipeline.integrity.chain import CHAIN_DOMAIN_TAG, GENESIS_HASH, chain_hash
from pipeline.integrity.checkpoint import (
    build_checkpoint,
    checkpoint_hash,
    checkpoint_signed_bytes,
    sign_checkpoint,
)
from pipeline.integrity.cosignature import Cosigner, cosignature_message
from pipeline.integrity.keyring import SigningKey
from pipeline.integrity.log_identity import chain_origin
from pipeline.integrity.merkle import consistency_proof, inclusion_proof, record_leaf_hash, record_tree_root
from pipeline.integrity.note import NoteSigner, format_note, parse_note
from pipeline.integrity.policy import PolicyWitness, format_policy
from pipeline.integrity.tlog_proof import TlogProof
from pipeline.integrity.tree_head import TreeHead, sign_tree_head
from pipeline.privacy.crypto import FieldCipher, PseudonymKey, SubjectKey, group_associated_data, pack_strings
from pipeline.wire.sealed import GAP_LOST, event_payload, gap_payload, sealed_codecs

DOCUMENT = Path(__file__).resolve().parents[2] / "schemas" / "FORMAT.md"
LOG_KEY = SigningKey.from_seed(bytes(range(32)))
WITNESS_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
ORIGIN = chain_origin("auditseal/EXAMPLEclusterid00000000", "audit.raw/0")
ISSUED_AT = 1_800_000_000_000_000
COSIGNED_AT = 1_800_000_060


def _hex_lines(data: bytes, width: int = 32) -> str:
    return "\n".join(data[i : i + width].hex() for i in range(0, len(data), width))


def examples() -> dict[str, str]:
    """Every worked example of the document, computed from the code."""
    found: dict[str, str] = {}
    events = [f"example event {n}".encode() for n in range(3)]
    payloads = [event_payload(0, 100 + n, ISSUED_AT + n, event) for n, event in enumerate(events)]
    hashes, prev = [], GENESIS_HASH
    for seq, payload in enumerate(payloads):
        prev = chain_hash(prev, seq, payload)
        hashes.append(prev)
    hash_input = CHAIN_DOMAIN_TAG + GENESIS_HASH + (0).to_bytes(8, "big") + len(payloads[0]).to_bytes(8, "big") + payloads[0]
    found["chain-hash"] = (
        f"payload of seq 0 ({len(payloads[0])} bytes):\n{_hex_lines(payloads[0])}\n"
        f"hash input:\n{_hex_lines(hash_input)}\n"
        + "".join(f"hash seq {seq}: {value.hex()}\n" for seq, value in enumerate(hashes))
    ).rstrip("\n")

    leaves = [record_leaf_hash(value) for value in hashes]
    found["merkle"] = (
        "".join(f"leaf {n}: {leaf.hex()}\n" for n, leaf in enumerate(leaves))
        + f"root of 3: {record_tree_root(hashes).hex()}\n"
        + f"root of 2: {record_tree_root(hashes[:2]).hex()}\n"
        + f"inclusion path of leaf 1 in 3: {' '.join(h.hex() for h in inclusion_proof(leaves, 1))}\n"
        + f"consistency proof 2 -> 3: {' '.join(h.hex() for h in consistency_proof(leaves, 2))}"
    )

    checkpoint = sign_checkpoint(
        build_checkpoint(chain_id="audit.raw/0", first_seq=0, record_hashes=hashes,
                         prev_checkpoint_hash=GENESIS_HASH, issued_at_micros=ISSUED_AT),
        LOG_KEY,
    )
    found["checkpoint-v1"] = (
        f"key_id: {LOG_KEY.key_id}\n"
        f"signed_bytes ({len(checkpoint_signed_bytes(checkpoint))} bytes):\n{_hex_lines(checkpoint_signed_bytes(checkpoint))}\n"
        f"signature:\n{_hex_lines(checkpoint.signature)}\n"
        f"checkpoint_hash: {checkpoint_hash(checkpoint).hex()}"
    )

    v2 = sign_checkpoint(
        build_checkpoint(chain_id="audit.raw/0", first_seq=0, record_hashes=hashes, prev_checkpoint_hash=GENESIS_HASH,
                         issued_at_micros=ISSUED_AT, origin=ORIGIN, source_offsets=(100, 102)),
        LOG_KEY,
    )
    found["checkpoint-v2"] = (
        f"signed_bytes ({len(checkpoint_signed_bytes(v2))} bytes):\n{_hex_lines(checkpoint_signed_bytes(v2))}\n"
        f"signature:\n{_hex_lines(v2.signature)}\n"
        f"checkpoint_hash: {checkpoint_hash(v2).hex()}"
    )
    gap = gap_payload(0, 103, ISSUED_AT + 3, 109, GAP_LOST, "below the low watermark 110")
    found["gap-entry"] = (
        f"payload of a gap entry at seq 3 ({len(gap)} bytes):\n{_hex_lines(gap)}\n"
        f"hash seq 3: {chain_hash(hashes[-1], 3, gap).hex()}"
    )

    log = NoteSigner(ORIGIN, LOG_KEY.private_key)
    heartbeat = sign_tree_head(TreeHead(ORIGIN, 3, record_tree_root(hashes), (f"auditseal-time {ISSUED_AT + 60_000_000}",)),
                               log)
    found["head-record"] = heartbeat.decode()
    witness = Cosigner("witness.example.com/w1", WITNESS_KEY)
    head = TreeHead(ORIGIN, 3, record_tree_root(hashes))
    signed = sign_tree_head(head, log)
    found["log-keys"] = f"vkey: {log.verifier.vkey}\nwitness vkey: {witness.verifier.vkey}"
    found["tree-head"] = signed.decode()
    found["cosignature-message"] = cosignature_message(head.body(), COSIGNED_AT).decode()
    note = parse_note(signed)
    cosigned = format_note(note.text, [*note.signatures, witness.cosign(head.body(), COSIGNED_AT)])
    found["cosigned-head"] = cosigned.decode()

    beat = parse_note(heartbeat)
    record = {"chain_id": "audit.raw/0", "tree_size": 3, "root_hash": record_tree_root(hashes),
              "received_at_micros": ISSUED_AT + 61_000_000,
              "note": format_note(beat.text, [*beat.signatures, witness.cosign(beat.text, COSIGNED_AT)])}
    encoded = sealed_codecs().cosignature.encode(record)
    found["cosignature-record"] = (
        f"note:\n{record['note'].decode()}\n"
        f"record (Avro single-object encoding, {len(encoded)} bytes):\n{_hex_lines(encoded)}"
    )

    old_head = sign_tree_head(TreeHead(ORIGIN, 2, record_tree_root(hashes[:2])), log)
    request = b"old 2\n" + b"".join(base64.b64encode(h) + b"\n" for h in consistency_proof(leaves, 2)) + b"\n" + signed
    found["add-checkpoint"] = f"(the witness holds)\n{old_head.decode()}\n(request body)\n{request.decode()}"

    found["policy"] = format_policy([log.verifier], [PolicyWitness("w1", witness.verifier, "https://witness.example.com/w1")], "w1").rstrip("\n")
    sealed_entry = b"<the SealedEvent of seq 1, as on audit.sealed>"
    proof = TlogProof(1, tuple(inclusion_proof(leaves, 1)), cosigned, extra=sealed_entry)
    found["tlog-proof"] = proof.to_bytes().decode()
    bloom = BloomFilter.of("actor.id", ["alice", "bob"])
    found["query-index"] = (f'BloomFilter.of("actor.id", ["alice", "bob"]): bits {bloom.bits}, hashes {bloom.hashes}, '
                            f"filter (hex) {bloom.data.hex()}")
    pseudonym_key, subject_key = PseudonymKey(1, bytes(range(32))), SubjectKey("00112233445566ff", bytes(range(64)))
    subject = pseudonym_key.subject_pseudonym("alice")
    names, values = ("actor.id", "actor.source_ip"), ("alice", "203.0.113.7")
    domain, subject_ad, key_ad, names_ad = group_associated_data(subject, subject_key.key_id, names)
    sealed = FieldCipher(subject, subject_key).seal_group(names, values)
    found["protected-subject"] = (
        f"subject pseudonym: {subject}\nkey id: {subject_key.key_id}\n"
        f"associated data: {domain.decode()!r} | {subject_ad.decode()!r} | {key_ad.decode()!r} | "
        f"{names_ad.hex()}\nplaintext: {pack_strings(values).hex()}\n"
        f"ciphertext (synthetic IV, then the encrypted plaintext):\n{_hex_lines(sealed)}"
    )
    return {name: text.rstrip("\n") for name, text in found.items()}


def document_examples() -> dict[str, str]:
    text = DOCUMENT.read_text(encoding="utf-8")
    pattern = re.compile(r"<!-- example: ([a-z0-9-]+) -->\n```[a-z]*\n(.*?)\n```", re.S)
    return {name: body for name, body in pattern.findall(text)}


def test_every_example_is_in_the_document():
    assert set(document_examples()) == set(examples())


@pytest.mark.parametrize("name", sorted(examples()))
def test_the_document_s_example_is_what_the_code_produces(name):
    assert document_examples()[name] == examples()[name]


if __name__ == "__main__":
    for name, text in examples().items():
        print(f"<!-- example: {name} -->\n```\n{text}\n```\n")
