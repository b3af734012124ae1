"""C2SP signed notes, tlog-checkpoint heads, cosignatures, tlog-policy and tlog-proof: fixed vectors and tamper probes.

The vectors marked "Go reference" were printed by tests/support/c2spcheck (golang.org/x/mod/sumdb/note and
github.com/transparency-dev/formats v0.1.1) for the seed 00 01 .. 1f; tests/integration/test_c2sp_interop.py
re-runs that program so a drift on either side fails there too.
"""

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.integrity.cosignature import Cosigner, cosignature_message, cosignature_timestamp
from pipeline.integrity.errors import (
    MalformedNoteError,
    NoteVerificationError,
    PolicyError,
    QuorumError,
)
from pipeline.integrity.merkle import inclusion_proof, leaf_hash, root_from_leaf_hashes, verify_inclusion
from pipeline.integrity.note import (
    ALG_COSIGNATURE_V1,
    NoteSigner,
    NoteVerifier,
    key_hash,
    parse_note,
    require_signed_by,
    sign_note,
)
from pipeline.integrity.policy import PolicyGroup, PolicyWitness, format_policy, parse_policy
from pipeline.integrity.tlog_proof import TlogProof, parse_tlog_proof
from pipeline.integrity.tree_head import TreeHead, open_tree_head, parse_tree_head, sign_tree_head

SEED = bytes(range(32))
NAME = "example.com/auditseal/staging"
# Go reference (c2spcheck vectors 0001..1f example.com/auditseal/staging).
GO_PUBLIC = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
GO_SKEY = "PRIVATE+KEY+example.com/auditseal/staging+1037ec91+AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"
GO_VKEY = "example.com/auditseal/staging+1037ec91+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
GO_COSIGNATURE_VKEY = "example.com/auditseal/staging+5e013253+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
# The CT reference tree of 5 leaves (transparency-dev/merkle testonly) as a head of NAME.
ROOT_5 = bytes.fromhex("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4")
GO_NOTE = (
    "example.com/auditseal/staging\n5\nTju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=\n\n"
    "\u2014 example.com/auditseal/staging "
    "EDfske5XY/glSzFfGdaP72Nwv/fInu2WrrdKYJkjMNDnb3adyq3igdtK7j7CpTjmsWJscNqX2tOxgudAU5XxFGIYTQM=\n"
).encode()


def log_signer(seed: bytes = SEED, name: str = NAME) -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.from_private_bytes(seed))


def witness(number: int) -> Cosigner:
    return Cosigner(f"witness{number}.example", Ed25519PrivateKey.from_private_bytes(bytes([number]) * 32))


def test_keys_match_the_go_reference():
    signer = log_signer()
    assert signer.verifier.public_key_bytes.hex() == GO_PUBLIC
    assert signer.skey == GO_SKEY
    assert signer.verifier.vkey == GO_VKEY
    assert f"{signer.verifier.key_hash:08x}" == "1037ec91"
    cosigning = NoteVerifier(NAME, ALG_COSIGNATURE_V1, signer.verifier.public_key)
    assert cosigning.vkey == GO_COSIGNATURE_VKEY
    assert NoteVerifier.from_vkey(GO_VKEY).vkey == GO_VKEY
    assert NoteSigner.from_skey(GO_SKEY).skey == GO_SKEY


def test_key_hash_is_sha256_of_name_newline_type_key():
    import hashlib

    public = bytes.fromhex(GO_PUBLIC)
    expected = hashlib.sha256(NAME.encode() + b"\n\x01" + public).digest()[:4]
    assert key_hash(NAME, 0x01, public) == int.from_bytes(expected, "big")


def test_signed_head_matches_the_go_reference_byte_for_byte():
    head = TreeHead(NAME, 5, ROOT_5)
    assert sign_tree_head(head, log_signer()) == GO_NOTE  # Ed25519 is deterministic
    opened, note = open_tree_head(GO_NOTE, NoteVerifier.from_vkey(GO_VKEY))
    assert opened == head
    assert note.to_bytes() == GO_NOTE


def test_tree_head_body_round_trips_with_extensions():
    head = TreeHead(NAME, 0, bytes(32), ("auditseal chain audit.raw/3",))
    assert parse_tree_head(head.body()) == head
    assert head.body().startswith(f"{NAME}\n0\nAAAA")


@pytest.mark.parametrize(
    "body, problem",
    [
        (f"{NAME}\n05\n" + base64.b64encode(ROOT_5).decode() + "\n", "leading zeroes"),
        (f"{NAME}\n-1\n" + base64.b64encode(ROOT_5).decode() + "\n", "decimal"),
        (f"{NAME}\n5\nnot base64!\n", "base64"),
        (f"{NAME}\n5\n" + base64.b64encode(b"short").decode() + "\n", "32 bytes"),
        (f"{NAME}\n5\n", "at least 3 lines"),
        (f"{NAME}\n5\n" + base64.b64encode(ROOT_5).decode(), "newline"),
    ],
)
def test_malformed_tree_head_bodies_are_refused(body, problem):
    with pytest.raises(MalformedNoteError, match=problem):
        parse_tree_head(body)


def test_altered_head_fails_the_log_signature():
    tampered = GO_NOTE.replace(b"\n5\n", b"\n6\n")
    with pytest.raises(NoteVerificationError, match="does not verify"):
        open_tree_head(tampered, NoteVerifier.from_vkey(GO_VKEY))


def test_head_of_another_origin_is_refused():
    other = log_signer(name="example.com/auditseal/production")
    note = sign_tree_head(TreeHead(other.name, 5, ROOT_5), other)
    with pytest.raises(MalformedNoteError, match="expected a tree head of origin"):
        open_tree_head(note, NoteVerifier.from_vkey(GO_VKEY))


def test_head_signed_by_an_unknown_key_is_unverified():
    impostor = log_signer(seed=bytes(32))
    note = sign_tree_head(TreeHead(NAME, 5, ROOT_5), impostor)
    with pytest.raises(NoteVerificationError, match="expected a signature"):
        open_tree_head(note, NoteVerifier.from_vkey(GO_VKEY))


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"text\n", "blank line"),
        (b"text\n\n- name AAAAAAAA\n", "starts with"),
        ("text\n\n\u2014 name AAAA AAAA\n".encode(), "signature line is"),
        ("text\n\n\u2014 name !!!!\n".encode(), "base64"),
        ("text\n\n\u2014 na+me AAAAAAAA\n".encode(), "no whitespace"),
        (b"\xff\n\n", "UTF-8"),
        ("te\x01xt\n\n\u2014 name AAAAAAAA\n".encode(), "control character"),
    ],
)
def test_malformed_notes_are_refused(data, problem):
    with pytest.raises(MalformedNoteError, match=problem):
        parse_note(data)


def test_unknown_signature_lines_are_ignored_and_known_bad_ones_refused():
    signer = log_signer()
    text = TreeHead(NAME, 5, ROOT_5).body()
    stranger = NoteSigner("stranger.example", Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32))
    note = parse_note(sign_note(text, [stranger, signer]))
    assert require_signed_by(note, signer.verifier).name == NAME
    # A line with the log's name and key hash but another signature makes the note malformed.
    forged = sign_note(text, [stranger]).replace(b"stranger.example", NAME.encode())
    forged_note = parse_note(forged)
    forged_note = type(forged_note)(
        forged_note.text,
        (type(forged_note.signatures[0])(NAME, signer.verifier.key_hash, forged_note.signatures[0].signature),),
    )
    with pytest.raises(NoteVerificationError, match="does not verify"):
        require_signed_by(forged_note, signer.verifier)


def test_cosignature_message_and_signature_layout():
    text = TreeHead(NAME, 5, ROOT_5).body()
    assert cosignature_message(text, 1679315147) == f"cosignature/v1\ntime 1679315147\n{text}".encode()
    line = witness(1).cosign(text, timestamp=1679315147)
    assert cosignature_timestamp(line) == 1679315147
    assert len(line.signature) == 8 + 64
    assert line.key_hash == key_hash("witness1.example", 0x04, witness(1).verifier.public_key_bytes)
    assert witness(1).verifier.verify(text.encode(), line.signature)
    assert not witness(1).verifier.verify(text.replace("\n5\n", "\n6\n").encode(), line.signature)
    # A cosignature is no note signature of the same key: the type byte separates them.
    assert not NoteVerifier("witness1.example", 0x01, witness(1).verifier.public_key).verify(
        text.encode(), line.signature
    )


def policy_text(threshold: int = 2, witnesses: int = 3) -> str:
    entries = [PolicyWitness(f"w{n}", witness(n).verifier, f"http://127.0.0.1:1/{n}") for n in range(1, witnesses + 1)]
    group = PolicyGroup("all-witnesses", threshold, tuple(w.name for w in entries))
    return format_policy([log_signer().verifier], entries, "all-witnesses", [group])


def cosigned_head(*numbers: int):
    text = TreeHead(NAME, 5, ROOT_5).body()
    note = parse_note(sign_note(text, [log_signer()]))
    lines = [witness(n).cosign(text, timestamp=1700000000 + n) for n in numbers]
    return type(note)(note.text, note.signatures + tuple(lines))


def test_policy_quorum_is_met_by_enough_witnesses_only():
    policy = parse_policy(policy_text(2))
    head, cosigners = policy.check(cosigned_head(1, 3))
    assert head.size == 5 and cosigners == ["w1", "w3"]
    with pytest.raises(QuorumError, match="cosigned by w2, which does not meet"):
        policy.check(cosigned_head(2))
    with pytest.raises(QuorumError, match="no witness"):
        policy.check(cosigned_head())


def test_policy_round_trips_and_quorum_none():
    text = policy_text(2)
    assert format_policy(
        list(parse_policy(text).logs.values()),
        list(parse_policy(text).witnesses.values()),
        "all-witnesses",
        list(parse_policy(text).groups.values()),
    ) == text
    none = parse_policy(f"log {GO_VKEY}\nquorum none\n")
    assert none.check(cosigned_head())[1] == []


@pytest.mark.parametrize(
    "text, problem",
    [
        (f"log {GO_VKEY}\n", "needs a quorum line"),
        ("quorum w1\n", "no earlier line defines"),
        ("frobnicate x\nquorum none\n", "unknown keyword"),
        (f"log {GO_VKEY}\nlog {GO_VKEY}\nquorum none\n", "duplicate log key"),
        ("log not-a-key\nquorum none\n", "line 1"),
        (f"witness any {GO_COSIGNATURE_VKEY}\nquorum none\n", "keyword"),
        (f"witness w1 {GO_COSIGNATURE_VKEY}\ngroup g 2 w1\nquorum g\n", "threshold must be in"),
        ("quorum none\nquorum none\n", "exactly one quorum"),
    ],
)
def test_bad_policies_are_refused_with_their_line(text, problem):
    with pytest.raises(PolicyError, match=problem):
        parse_policy(text, "policy.txt")


def test_tlog_proof_round_trip_and_inclusion():
    leaves = [leaf_hash(bytes([n])) for n in range(5)]
    proof = TlogProof(3, tuple(inclusion_proof(leaves, 3)), GO_NOTE, extra=b"chain audit.raw/0")
    data = proof.to_bytes()
    assert data.startswith(b"c2sp.org/tlog-proof@v1\nextra Y2hhaW4gYXVkaXQucmF3LzA=\nindex 3\n")
    assert parse_tlog_proof(data) == proof
    assert verify_inclusion(leaves[3], 3, 5, list(proof.hashes), root_from_leaf_hashes(leaves))


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"c2sp.org/tlog-proof@v2\nindex 0\n\n" + GO_NOTE, "starts with"),
        (b"c2sp.org/tlog-proof@v1\nindex 01\n\n" + GO_NOTE, "leading zeroes"),
        (b"c2sp.org/tlog-proof@v1\n\n" + GO_NOTE, "index"),
        (b"c2sp.org/tlog-proof@v1\nindex 0\nAAAA\n\n" + GO_NOTE, "32-byte hash"),
        (b"c2sp.org/tlog-proof@v1\nindex 0\n", "empty line"),
    ],
)
def test_malformed_tlog_proofs_are_refused(data, problem):
    with pytest.raises(MalformedNoteError, match=problem):
        parse_tlog_proof(data)
