"""RFC 6962 / RFC 9162 consistency proofs: the transparency-dev/merkle reference vectors, tamper probes, properties."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.integrity.errors import MalformedInputError
from pipeline.integrity.merkle import consistency_proof, leaf_hash, root_from_leaf_hashes, verify_consistency
from tests.unit.test_merkle import LEAF_INPUTS, ROOTS

LEAVES = [leaf_hash(data) for data in LEAF_INPUTS]

# transparency-dev/merkle v0.0.2 proof/verify_test.go consistencyProofs (size1, size2, proof).
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def root(size: int) -> bytes:
    return bytes.fromhex(ROOTS[size])


@pytest.mark.parametrize("old, new, expected", CONSISTENCY_VECTORS)
def test_consistency_proof_matches_the_reference(old, new, expected):
    proof = consistency_proof(LEAVES[:new], old)
    assert [value.hex() for value in proof] == expected
    assert verify_consistency(old, new, proof, root(old), root(new))


@pytest.mark.parametrize("old, new, expected", [v for v in CONSISTENCY_VECTORS if v[2]])
def test_every_corruption_of_a_reference_proof_fails(old, new, expected):
    proof = [bytes.fromhex(value) for value in expected]
    for position in range(len(proof)):
        flipped = list(proof)
        flipped[position] = bytes([flipped[position][0] ^ 1]) + flipped[position][1:]
        assert not verify_consistency(old, new, flipped, root(old), root(new))
    assert not verify_consistency(old, new, proof[:-1], root(old), root(new))
    assert not verify_consistency(old, new, [*proof, proof[-1]], root(old), root(new))
    assert not verify_consistency(old, new, proof, root(new), root(old))
    assert not verify_consistency(old, new, proof, bytes(32), root(new))
    assert not verify_consistency(old, new, proof, root(old), bytes(32))


def test_edge_cases_follow_transparency_dev_merkle():
    assert verify_consistency(0, 5, [], root(0), root(5))  # the empty tree is a prefix of any tree
    assert not verify_consistency(0, 5, [LEAVES[0]], root(0), root(5))
    assert verify_consistency(5, 5, [], root(5), root(5))
    assert not verify_consistency(5, 5, [], root(5), root(4))
    assert not verify_consistency(5, 5, [LEAVES[0]], root(5), root(5))
    assert not verify_consistency(6, 5, [], root(6), root(5))
    assert not verify_consistency(2, 5, [], root(2), root(5))
    assert not verify_consistency(2, 5, [b"short"], root(2), root(5))
    assert consistency_proof(LEAVES[:5], 0) == [] and consistency_proof(LEAVES[:5], 5) == []
    with pytest.raises(MalformedInputError, match="old size"):
        consistency_proof(LEAVES[:5], 6)


def test_a_rewritten_history_has_no_consistency_proof():
    # What a witness relies on: change one old leaf and no proof from the old head verifies.
    rewritten = list(LEAVES)
    rewritten[1] = leaf_hash(b"rewritten")
    for old in range(1, 8):
        for new in range(old, 9):
            proof = consistency_proof(rewritten[:new], old)
            assert not verify_consistency(old, new, proof, root(old), root_from_leaf_hashes(rewritten[:new])) or old < 2


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_generated_proofs_verify_for_every_pair_of_sizes(new, data):
    leaves = [leaf_hash(n.to_bytes(4, "big")) for n in range(new)]
    old = data.draw(st.integers(min_value=0, max_value=new))
    proof = consistency_proof(leaves, old)
    assert len(proof) <= 2 * max(new, 1).bit_length()
    assert verify_consistency(old, new, proof, root_from_leaf_hashes(leaves[:old]), root_from_leaf_hashes(leaves))
