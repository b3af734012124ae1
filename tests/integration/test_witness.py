"""The C2SP tlog-witness protocol against a real omniwitness: cosigning, 409, and every refusal.

Attack first: a history rewritten and re-signed with the real log key, a truncated history, a head under
another key, a head of an unknown origin; each is refused by the witness and surfaces as its own error.
"""

import base64
import http.server
import threading

import pytest

from pipeline.integrity.merkle import consistency_proof, leaf_hash, root_from_leaf_hashes
from pipeline.integrity.note import NoteSigner, parse_note
from pipeline.integrity.policy import PolicyWitness, format_policy, parse_policy
from pipeline.integrity.tlog_proof import TlogProof
from pipeline.integrity.tree_head import TreeHead, sign_tree_head
from pipeline.witness.client import (
    Witness,
    WitnessConflictError,
    WitnessRefusedError,
    WitnessResponseError,
    WitnessUnavailableError,
    cosign_head,
)
from tests.support.c2spcheck import run_c2spcheck
from tests.support.witness import start_test_witness

ORIGINS = [f"auditseal/dGVzdC13aXRuZXNz/audit.raw/{n}" for n in range(8)]
LEAVES = [leaf_hash(b"event %d" % n) for n in range(200)]

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def witness(stack, tmp_path_factory):
    running = start_test_witness(tmp_path_factory.mktemp("witness"), stack.ports()["kafka_client"], ORIGINS)
    yield running
    running.stop()


def signed(origin_signer: NoteSigner, size: int, leaves=LEAVES) -> bytes:
    return sign_tree_head(TreeHead(origin_signer.name, size, root_from_leaf_hashes(leaves[:size])), origin_signer)


def proof_from(leaves, size):
    return lambda old: consistency_proof(leaves[:size], old)


def test_heads_are_cosigned_and_extended_with_consistency_proofs(witness, tmp_path):
    log = witness.logs[ORIGINS[0]]
    first = witness.client.add_checkpoint(signed(log, 10), 0, [])
    assert len(first) == 1 and first[0].name == witness.verifier.name
    note, size = cosign_head(witness.client, signed(log, 50), 10, proof_from(LEAVES, 50))
    assert size == 50
    policy = parse_policy(format_policy([log.verifier], [PolicyWitness("w", witness.verifier, witness.client.url)], "w"))
    head, cosigners = policy.check(note)
    assert (head.size, cosigners) == (50, ["w"])
    # The same cosigned head verifies with transparency-dev's code, inclusion of entry 17 included.
    (tmp_path / "policy").write_text(format_policy([log.verifier], [PolicyWitness("w", witness.verifier, witness.client.url)], "w"))
    from pipeline.integrity.merkle import inclusion_proof

    (tmp_path / "p").write_bytes(TlogProof(17, tuple(inclusion_proof(LEAVES[:50], 17)), note.to_bytes()).to_bytes())
    result = run_c2spcheck("proof", log.verifier.vkey, tmp_path / "policy", tmp_path / "p", LEAVES[17].hex())
    assert result.returncode == 0, result.stdout


def test_a_stale_old_size_gets_409_with_the_witnessed_size_and_is_followed(witness):
    log = witness.logs[ORIGINS[1]]
    witness.client.add_checkpoint(signed(log, 20), 0, [])
    with pytest.raises(WitnessConflictError) as conflict:
        witness.client.add_checkpoint(signed(log, 30), 5, consistency_proof(LEAVES[:30], 5))
    assert conflict.value.known_size == 20
    note, size = cosign_head(witness.client, signed(log, 30), 0, proof_from(LEAVES, 30))
    assert size == 30 and len(note.signatures) == 2


def test_a_rewritten_history_resigned_with_the_real_key_is_refused(witness):
    log = witness.logs[ORIGINS[2]]
    witness.client.add_checkpoint(signed(log, 40), 0, [])
    rewritten = list(LEAVES)
    rewritten[3] = leaf_hash(b"the entry an insider wanted gone")
    # Same size, other root: 422.
    with pytest.raises(WitnessRefusedError) as same_size:
        witness.client.add_checkpoint(signed(log, 40, rewritten), 40, [])
    assert same_size.value.status == 422
    # Larger, with the honest-looking proof of the rewritten tree: 422, the proof cannot reach the old root.
    with pytest.raises(WitnessRefusedError) as larger:
        cosign_head(witness.client, signed(log, 60, rewritten), 40, proof_from(rewritten, 60))
    assert larger.value.status == 422
    # The witness still holds the honest head and extends it.
    note, size = cosign_head(witness.client, signed(log, 60), 40, proof_from(LEAVES, 60))
    assert size == 60


def test_a_truncated_history_is_refused_not_retried(witness):
    log = witness.logs[ORIGINS[3]]
    witness.client.add_checkpoint(signed(log, 100), 0, [])
    with pytest.raises(WitnessRefusedError, match="larger than tree head .* size 70: the log lost history"):
        cosign_head(witness.client, signed(log, 70), 0, proof_from(LEAVES, 70))


def test_a_head_under_another_key_or_of_an_unknown_origin_is_refused(witness):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    impostor = NoteSigner(ORIGINS[4], Ed25519PrivateKey.generate())
    # The spec says 403; this omniwitness answers 500 ("note has no verifiable signatures"). Either way
    # nothing is cosigned, and the honest log's first head is still accepted from size 0 afterwards.
    with pytest.raises((WitnessRefusedError, WitnessUnavailableError)) as forged:
        witness.client.add_checkpoint(signed(impostor, 5), 0, [])
    assert forged.value.status in (403, 500)
    assert witness.client.add_checkpoint(signed(witness.logs[ORIGINS[4]], 5), 0, [])
    stranger = NoteSigner("auditseal/unknown/audit.raw/0", Ed25519PrivateKey.generate())
    # The spec says 404; with SQLite storage this omniwitness answers 500 ("no rows in result set").
    with pytest.raises((WitnessRefusedError, WitnessUnavailableError)) as unknown:
        witness.client.add_checkpoint(signed(stranger, 5), 0, [])
    assert unknown.value.status in (404, 500)


def test_what_the_witness_cosigned_survives_its_restart(witness):
    log = witness.logs[ORIGINS[5]]
    witness.client.add_checkpoint(signed(log, 25), 0, [])
    witness.stop()
    with pytest.raises(WitnessUnavailableError):
        witness.client.add_checkpoint(signed(log, 30), 25, consistency_proof(LEAVES[:30], 25))
    witness.start()
    rewritten = [leaf_hash(b"other")] + LEAVES[1:]
    with pytest.raises(WitnessRefusedError) as refused:
        witness.client.add_checkpoint(signed(log, 25, rewritten), 25, [])
    assert refused.value.status == 422


class _Garbage(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, bytes]] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, body = self.answers.pop(0)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_witness_answering_garbage_is_an_error_never_a_cosignature(witness):
    log = witness.logs[ORIGINS[6]]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        liar = Witness("liar", witness.verifier, f"http://127.0.0.1:{server.server_port}")
        other_line = parse_note(signed(log, 5)).signatures[0].line().encode()  # a real line, of the wrong key
        forged_cosig = "\u2014 {} {}\n".format(
            witness.verifier.name,
            base64.b64encode(witness.verifier.key_hash.to_bytes(4, "big") + bytes(72)).decode(),
        ).encode()
        # 429: omniwitness rate-limits submissions (the demo's 16 chains on one witness met it): slow down, retry
        _Garbage.answers[:] = [(200, b"hello"), (200, other_line), (200, forged_cosig), (409, b"many\n"), (503, b"busy"),
                               (429, b"")]
        for expected in (WitnessResponseError, WitnessResponseError, WitnessResponseError, WitnessResponseError,
                         WitnessUnavailableError, WitnessUnavailableError):
            with pytest.raises(expected):
                liar.add_checkpoint(signed(log, 5), 0, [])
    finally:
        server.shutdown()
