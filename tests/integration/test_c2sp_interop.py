"""AuditSeal's signed heads, cosignatures, policies and proofs checked by an implementation nobody here wrote.

tests/support/c2spcheck is a small Go program over github.com/transparency-dev/formats v0.1.1 (note, log,
proof, witness policy) and github.com/transparency-dev/merkle v0.0.2 (RFC 6962 proofs). It needs no stack,
only Go and the Go module proxy (once).
"""

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.integrity.cosignature import Cosigner
from pipeline.integrity.merkle import consistency_proof, inclusion_proof, leaf_hash, root_from_leaf_hashes
from pipeline.integrity.note import NoteSigner, parse_note, sign_note
from pipeline.integrity.policy import PolicyGroup, PolicyWitness, format_policy
from pipeline.integrity.tlog_proof import TlogProof
from pipeline.integrity.tree_head import TreeHead, sign_tree_head
from tests.support.c2spcheck import run_c2spcheck
from tests.unit.test_c2sp_notes import GO_NOTE, GO_SKEY, GO_VKEY, NAME, SEED

ORIGIN = "auditseal/dGVzdC1jbHVzdGVyLWlk/audit.raw/0"
LEAVES = [leaf_hash(n.to_bytes(8, "big")) for n in range(1000)]


def log_key() -> NoteSigner:
    return NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32))


def witnesses() -> list[Cosigner]:
    return [Cosigner(f"w{n}.witness.example", Ed25519PrivateKey.from_private_bytes(bytes([40 + n]) * 32))
            for n in range(3)]


def head_note(size: int, cosigners: list[Cosigner], leaves=LEAVES) -> bytes:
    head = TreeHead(ORIGIN, size, root_from_leaf_hashes(leaves[:size]))
    note = parse_note(sign_tree_head(head, log_key()))
    lines = [c.cosign(head.body()) for c in cosigners]
    return type(note)(note.text, note.signatures + tuple(lines)).to_bytes()


def policy(tmp_path, threshold: int):
    entries = [PolicyWitness(f"w{n}", c.verifier, f"http://127.0.0.1:9/w{n}") for n, c in enumerate(witnesses())]
    path = tmp_path / "policy.txt"
    path.write_text(format_policy([log_key().verifier], entries, "witnesses",
                                  [PolicyGroup("witnesses", threshold, tuple(e.name for e in entries))]))
    return path


def test_key_encodings_and_note_signature_agree_with_go(tmp_path):
    text = tmp_path / "text"
    text.write_bytes(GO_NOTE.split(b"\n\n")[0] + b"\n")
    result = run_c2spcheck("vectors", SEED.hex(), NAME, text)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    signer = NoteSigner(NAME, Ed25519PrivateKey.from_private_bytes(SEED))
    assert lines["skey"] == signer.skey == GO_SKEY
    assert lines["vkey"] == signer.verifier.vkey == GO_VKEY
    assert base64.b64decode(lines["note"]) == sign_note(text.read_text(), [signer]) == GO_NOTE


@pytest.mark.parametrize("index, size", [(0, 1), (5, 6), (511, 512), (700, 1000), (999, 1000)])
def test_go_verifies_our_tlog_proof_with_a_witness_quorum(tmp_path, index, size):
    proof = TlogProof(index, tuple(inclusion_proof(LEAVES[:size], index)), head_note(size, witnesses()[:2]))
    (tmp_path / "entry.tlog-proof").write_bytes(proof.to_bytes())
    result = run_c2spcheck("proof", log_key().verifier.vkey, policy(tmp_path, 2), tmp_path / "entry.tlog-proof",
                           LEAVES[index].hex())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"ok proof origin={ORIGIN} index={index} size={size}"


def test_go_refuses_a_proof_short_of_quorum_a_wrong_leaf_or_an_altered_head(tmp_path):
    path = tmp_path / "entry.tlog-proof"
    vkey = log_key().verifier.vkey

    path.write_bytes(TlogProof(3, tuple(inclusion_proof(LEAVES[:10], 3)), head_note(10, witnesses()[:1])).to_bytes())
    short = run_c2spcheck("proof", vkey, policy(tmp_path, 2), path, LEAVES[3].hex())
    assert short.returncode == 1 and "quorum" in short.stdout

    path.write_bytes(TlogProof(3, tuple(inclusion_proof(LEAVES[:10], 3)), head_note(10, witnesses())).to_bytes())
    wrong_leaf = run_c2spcheck("proof", vkey, policy(tmp_path, 2), path, LEAVES[4].hex())
    assert wrong_leaf.returncode == 1 and "inclusion" in wrong_leaf.stdout

    altered = head_note(10, witnesses()).replace(b"\n10\n", b"\n11\n", 1)
    path.write_bytes(TlogProof(3, tuple(inclusion_proof(LEAVES[:10], 3)), altered).to_bytes())
    forged = run_c2spcheck("proof", vkey, policy(tmp_path, 2), path, LEAVES[3].hex())
    assert forged.returncode == 1 and "checkpoint" in forged.stdout


@pytest.mark.parametrize("old, new", [(1, 2), (3, 7), (8, 9), (100, 1000), (511, 513)])
def test_go_verifies_our_consistency_proofs_and_refuses_a_rewritten_history(tmp_path, old, new):
    (tmp_path / "old").write_bytes(head_note(old, []))
    (tmp_path / "new").write_bytes(head_note(new, []))
    (tmp_path / "proof").write_text("".join(base64.b64encode(h).decode() + "\n" for h in consistency_proof(LEAVES[:new], old)))
    vkey = log_key().verifier.vkey
    result = run_c2spcheck("consistency", vkey, tmp_path / "old", tmp_path / "new", tmp_path / "proof")
    assert result.returncode == 0, result.stdout + result.stderr

    rewritten = list(LEAVES)
    rewritten[0] = leaf_hash(b"rewritten")
    (tmp_path / "new").write_bytes(head_note(new, [], rewritten))
    (tmp_path / "proof").write_text("".join(base64.b64encode(h).decode() + "\n" for h in consistency_proof(rewritten[:new], old)))
    refused = run_c2spcheck("consistency", vkey, tmp_path / "old", tmp_path / "new", tmp_path / "proof")
    assert refused.returncode == 1 and "consistency" in refused.stdout
