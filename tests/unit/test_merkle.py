"""RFC 6962 / RFC 9162 Merkle tree: reference vectors, tamper probes and properties."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.integrity.errors import MalformedInputError
from pipeline.integrity.merkle import (
    EMPTY_ROOT,
    inclusion_proof,
    inclusion_proofs,
    leaf_hash,
    merkle_root,
    node_hash,
    record_leaf_hash,
    root_from_leaf_hashes,
    verify_inclusion,
)

# Certificate Transparency reference data, as published in transparency-dev/merkle
# (testonly/constants.go and proof/verify_test.go): leaf inputs, the root of every tree size
# 0..8, the hashes of every complete subtree, and inclusion proofs.
LEAF_INPUTS = [
    bytes.fromhex(value)
    for value in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
LEAF_HASHES_HEX = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
]
LEVEL_ONE_HEX = [
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
]
# (0-based leaf index, tree size, audit path); the Go source numbers leaves from 1.
INCLUSION_VECTORS = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

REFERENCE_LEAF_HASHES = [leaf_hash(data) for data in LEAF_INPUTS]


def reference_mth(leaf_hashes: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 MTH, written recursively exactly as the RFC states it."""
    n = len(leaf_hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(
        b"\x01" + reference_mth(leaf_hashes[:k]) + reference_mth(leaf_hashes[k:])
    ).digest()


def reference_path(m: int, leaf_hashes: list[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH(m, D[n]), recursively as the RFC states it."""
    n = len(leaf_hashes)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*reference_path(m, leaf_hashes[:k]), reference_mth(leaf_hashes[k:])]
    return [*reference_path(m - k, leaf_hashes[k:]), reference_mth(leaf_hashes[:k])]


def test_empty_tree_root_is_sha256_of_the_empty_string() -> None:
    assert EMPTY_ROOT.hex() == ROOTS[0]
    assert merkle_root([]) == EMPTY_ROOT
    assert root_from_leaf_hashes([]) == EMPTY_ROOT


def test_leaf_hash_prefixes_0x00() -> None:
    assert [leaf_hash(data).hex() for data in LEAF_INPUTS] == LEAF_HASHES_HEX
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()


def test_node_hash_prefixes_0x01() -> None:
    pairs = zip(REFERENCE_LEAF_HASHES[0::2], REFERENCE_LEAF_HASHES[1::2], strict=True)
    assert [node_hash(left, right).hex() for left, right in pairs] == LEVEL_ONE_HEX


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_root_matches_certificate_transparency_reference(size: int) -> None:
    assert merkle_root(LEAF_INPUTS[:size]).hex() == ROOTS[size]
    assert root_from_leaf_hashes(REFERENCE_LEAF_HASHES[:size]).hex() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_inclusion_proof_matches_reference(index: int, size: int, path: list[str]) -> None:
    leaves = REFERENCE_LEAF_HASHES[:size]
    assert [element.hex() for element in inclusion_proof(leaves, index)] == path
    proof = [bytes.fromhex(element) for element in path]
    root = bytes.fromhex(ROOTS[size])
    assert verify_inclusion(leaves[index], index, size, proof, root)


Probe = tuple[str, bytes, int, int, list[bytes], bytes]


def corrupted_probes(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[Probe]:
    """transparency-dev's corruptInclusionProof probes: every one must fail verification."""
    probes: list[Probe] = [
        ("index - 1", leaf, index - 1, size, proof, root),
        ("index + 1", leaf, index + 1, size, proof, root),
        ("index ^ 2", leaf, index ^ 2, size, proof, root),
        ("size * 2", leaf, index, size * 2, proof, root),
        ("size // 2", leaf, index, size // 2, proof, root),
        ("wrong leaf", b"WrongLeaf", index, size, proof, root),
        ("empty root", leaf, index, size, proof, EMPTY_ROOT),
        ("random root", leaf, index, size, proof, SOME_HASH),
        ("trailing garbage", leaf, index, size, [*proof, b""], root),
        ("trailing root", leaf, index, size, [*proof, root], root),
        ("preceding garbage", leaf, index, size, [b"", *proof], root),
        ("preceding root", leaf, index, size, [root, *proof], root),
    ]
    for position in range(len(proof)):
        flipped = list(proof)
        flipped[position] = bytes([flipped[position][0] ^ 8]) + flipped[position][1:]
        probes.append((f"proof[{position}] bit 3", leaf, index, size, flipped, root))
    if proof:
        probes.append(("removed component", leaf, index, size, proof[:-1], root))
    if len(proof) > 1:
        probes.append(
            ("inserted component", leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root)
        )
    return probes


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_corrupted_reference_proofs_fail(index: int, size: int, path: list[str]) -> None:
    proof = [bytes.fromhex(element) for element in path]
    root = bytes.fromhex(ROOTS[size])
    leaf = REFERENCE_LEAF_HASHES[index]
    accepted = [
        name
        for name, probe_leaf, probe_index, probe_size, probe_proof, probe_root in corrupted_probes(
            index, size, proof, root, leaf
        )
        if verify_inclusion(probe_leaf, probe_index, probe_size, probe_proof, probe_root)
    ]
    assert accepted == []


def test_single_leaf_tree_has_an_empty_proof_and_its_leaf_as_root() -> None:
    leaf = leaf_hash(b"data")
    assert root_from_leaf_hashes([leaf]) == leaf
    assert inclusion_proof([leaf], 0) == []
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    assert not verify_inclusion(leaf, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], leaf)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 4)])
def test_verify_inclusion_rejects_an_index_outside_the_tree(index: int, size: int) -> None:
    assert not verify_inclusion(SOME_HASH, index, size, [], SOME_HASH)


def test_inclusion_proof_rejects_an_index_outside_the_tree() -> None:
    with pytest.raises(MalformedInputError, match=r"leaf index must be in \[0, 3\), found 3"):
        inclusion_proof(REFERENCE_LEAF_HASHES[:3], 3)
    with pytest.raises(MalformedInputError, match=r"found -1"):
        inclusion_proof(REFERENCE_LEAF_HASHES[:3], -1)


def test_leaf_hashes_of_the_wrong_size_are_rejected() -> None:
    with pytest.raises(MalformedInputError, match="leaf hash 1 must be 32 bytes, found 31 bytes"):
        root_from_leaf_hashes([SOME_HASH, SOME_HASH[:31]])


def test_record_leaf_is_the_leaf_hash_of_the_chain_hash() -> None:
    assert record_leaf_hash(SOME_HASH) == hashlib.sha256(b"\x00" + SOME_HASH).digest()
    with pytest.raises(MalformedInputError, match="found 5 bytes"):
        record_leaf_hash(b"event")


def test_a_hundred_thousand_leaf_root_matches_the_recursive_definition() -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(100_003)]
    assert root_from_leaf_hashes(leaves) == reference_mth(leaves)


leaf_lists = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(leaf_lists)
def test_root_and_paths_match_rfc6962_recursive_definition(leaves: list[bytes]) -> None:
    assert root_from_leaf_hashes(leaves) == reference_mth(leaves)
    proofs = inclusion_proofs(leaves)
    assert proofs == [reference_path(m, leaves) for m in range(len(leaves))]
    assert proofs == [inclusion_proof(leaves, m) for m in range(len(leaves))]


distinct_leaf_lists = st.lists(
    st.binary(min_size=32, max_size=32), min_size=1, max_size=70, unique=True
)


@settings(max_examples=150, deadline=None)
@given(distinct_leaf_lists)
def test_every_leaf_proof_verifies_and_only_for_its_own_index_and_root(
    leaves: list[bytes],
) -> None:
    size = len(leaves)
    root = root_from_leaf_hashes(leaves)
    for index, proof in enumerate(inclusion_proofs(leaves)):
        assert verify_inclusion(leaves[index], index, size, proof, root)
        assert not verify_inclusion(leaves[index], index, size, proof, SOME_HASH)
        if size > 1:
            # The position is part of what a proof proves: the same leaf elsewhere must fail.
            wrong_index = (index + 1) % size
            assert not verify_inclusion(leaves[index], wrong_index, size, proof, root)


@settings(max_examples=100, deadline=None)
@given(leaf_lists, st.data())
def test_flipping_any_byte_of_a_leaf_breaks_its_proof(
    leaves: list[bytes], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    position = data.draw(st.integers(0, 31))
    tampered = bytearray(leaves[index])
    tampered[position] ^= 0x01
    proof = inclusion_proof(leaves, index)
    root = root_from_leaf_hashes(leaves)
    assert not verify_inclusion(bytes(tampered), index, len(leaves), proof, root)
