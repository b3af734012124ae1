"""C2SP tlog-proofs of sealed entries: cosigned by the real witness, checked by `auditseal verify-proof` and by Go.

Entries come from the real ChainSealer (pure); the head of the chain's whole-history tree is signed with the
log key under the chain's origin, cosigned by a real omniwitness, and the proof is checked three ways: our CLI,
transparency-dev's code (tests/support/c2spcheck), and tampered copies that must fail with exit 1.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import SigningKey
from pipeline.integrity.log_identity import chain_origin
from pipeline.integrity.merkle import record_leaf_hash, root_from_leaf_hashes
from pipeline.integrity.note import NoteSigner
from pipeline.integrity.policy import PolicyWitness, format_policy
from pipeline.integrity.tlog_proof import TlogProof
from pipeline.integrity.tree_head import TreeHead, sign_tree_head
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.verifier.tlog_proofs import build_tlog_proof
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import CHECKPOINT_KIND, sealed_codecs
from pipeline.witness.client import cosign_head
from tests.support.c2spcheck import run_c2spcheck
from tests.support.witness import start_test_witness

pytestmark = pytest.mark.stack
REPO = Path(__file__).resolve().parents[2]
LOG_NAME = "auditseal/dGxvZy1wcm9vZnM"
CHAIN = "audit.raw/4"
ORIGIN = chain_origin(LOG_NAME, CHAIN)
KEY = SigningKey.from_seed(bytes([3]) * 32)
ISSUED = 1_800_000_000_000_000


def sealed_entries(count: int) -> list[bytes]:
    """The encoded entries of one chain sealed by the real ChainSealer (one rejection among them)."""
    sealer = ChainSealer(CHAIN, 4, KEY, ChainHead.genesis(CHAIN))
    codec, values = default_codec(), []
    for offset, event in enumerate(synthetic_events(count, seed=5)):
        raw = b"not an event" if offset == 7 else codec.encode(event)
        values.append(sealer.seal(raw, offset, ISSUED + offset).value)
    assert sealed_codecs().decode(sealer.checkpoint(ISSUED + count).value)[0] == CHECKPOINT_KIND
    return values


@pytest.fixture(scope="module")
def cosigned(stack, tmp_path_factory):
    """(entries, hashes, cosigned head note bytes, policy file, witness) for a chain of 300 entries."""
    home = tmp_path_factory.mktemp("tlog-witness")
    log = NoteSigner(ORIGIN, KEY.private_key)
    running = start_test_witness(home, stack.ports()["kafka_client"], [], {ORIGIN: log})
    try:
        entries = sealed_entries(300)
        hashes = [sealed_codecs().decode(v)[1]["hash"] for v in entries]
        head = TreeHead(ORIGIN, len(hashes), root_from_leaf_hashes([record_leaf_hash(h) for h in hashes]))
        note, _ = cosign_head(running.client, sign_tree_head(head, log), 0, lambda old: [])
        policy = home / "policy.txt"
        policy.write_text(format_policy([log.verifier], [PolicyWitness("dev", running.verifier, running.client.url)], "dev"))
        yield entries, hashes, note.to_bytes(), policy
    finally:
        running.stop()


def verify_proof(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", "verify-proof", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("seq", [0, 7, 150, 299])
def test_a_cosigned_tlog_proof_verifies_with_our_cli_and_with_go(cosigned, tmp_path, seq):
    entries, hashes, note, policy = cosigned
    proof = build_tlog_proof(entries[seq], hashes, note)
    path = tmp_path / "entry.tlog-proof"
    path.write_bytes(proof.to_bytes())
    ours = verify_proof(path, "--policy", policy)
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert f"is entry seq {seq} of chain {CHAIN}, included in the tree head of {ORIGIN} size 300, cosigned by dev" in ours.stdout
    go = run_c2spcheck("proof", NoteSigner(ORIGIN, KEY.private_key).verifier.vkey, policy, path,
                       record_leaf_hash(hashes[seq]).hex())
    assert go.returncode == 0, go.stdout


def test_tampered_proofs_are_invalid_with_the_reason(cosigned, tmp_path):
    entries, hashes, note, policy = cosigned
    good = build_tlog_proof(entries[150], hashes, note)
    path = tmp_path / "p"

    def check(proof: TlogProof | bytes) -> subprocess.CompletedProcess:
        path.write_bytes(proof if isinstance(proof, bytes) else proof.to_bytes())
        return verify_proof(path, "--policy", policy)

    # an altered event inside the entry: its fields no longer hash to its hash
    altered = bytearray(entries[150])
    altered[-5] ^= 0x01
    result = check(TlogProof(good.index, good.hashes, good.checkpoint, bytes(altered)))
    assert result.returncode == 1 and "INVALID" in result.stdout

    # another entry's proof path
    other = build_tlog_proof(entries[151], hashes, note)
    result = check(TlogProof(good.index, other.hashes, good.checkpoint, good.extra))
    assert result.returncode == 1 and "inclusion path does not lead" in result.stdout

    # the head without the witness's cosignature: the policy's quorum is not met
    uncosigned = note.split(b"\n\n")[0] + b"\n\n" + note.split(b"\n\n")[1].split(b"\n")[0] + b"\n"
    result = check(TlogProof(good.index, good.hashes, uncosigned, good.extra))
    assert result.returncode == 1 and "quorum" in result.stdout

    # a proof of another origin (same key, another deployment's log name)
    other_origin = chain_origin("auditseal/c3RhZ2luZw", CHAIN)
    root = root_from_leaf_hashes([record_leaf_hash(h) for h in hashes])
    foreign = sign_tree_head(TreeHead(other_origin, 300, root), NoteSigner(other_origin, KEY.private_key))
    result = check(TlogProof(good.index, good.hashes, foreign, good.extra))
    assert result.returncode == 1 and "lists no log of that origin" in result.stdout

    # no extra line: the leaf cannot be rebuilt
    result = check(TlogProof(good.index, good.hashes, good.checkpoint))
    assert result.returncode == 1 and "no 'extra' line" in result.stdout

    # not a proof at all
    result = check(b"c2sp.org/tlog-proof@v1\nindex x\n\n" + note)
    assert result.returncode == 1 and "not a tlog-proof" in result.stdout


def test_bad_policies_and_missing_policy_are_usage_errors(cosigned, tmp_path):
    entries, hashes, note, _ = cosigned
    path = tmp_path / "p"
    path.write_bytes(build_tlog_proof(entries[0], hashes, note).to_bytes())
    (tmp_path / "bad").write_text("witness w1\nquorum w1\n")
    bad = verify_proof(path, "--policy", tmp_path / "bad")
    assert bad.returncode == 2 and "bad line 1" in bad.stderr and "Traceback" not in bad.stderr
    env = {k: v for k, v in os.environ.items() if k != "AUDITSEAL_WITNESS_POLICY"}
    missing = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "verify-proof", str(path)],
                             capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert missing.returncode == 2 and "witness policy" in missing.stderr
