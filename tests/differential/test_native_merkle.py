"""The compiled Merkle Tree Hash (pipeline.native.merkle_native, SHA-256 by libcrypto) against the readable
bottom-up build of pipeline.integrity.merkle, on any number of arbitrary hashes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.integrity.merkle import EMPTY_ROOT, _levels, leaf_hash, node_hash, record_leaf_hash
from pipeline.native.merkle_native import root_of_leaf_hashes, root_of_record_hashes

pytestmark = pytest.mark.differential

HASHES = st.lists(st.binary(min_size=32, max_size=32), max_size=300)


def readable_root(leaf_hashes: list[bytes]) -> bytes:
    return _levels(leaf_hashes)[-1][0] if leaf_hashes else EMPTY_ROOT


@settings(max_examples=300, deadline=None)
@given(hashes=HASHES, as_tuple=st.booleans())
def test_equals_the_readable_build(hashes: list[bytes], as_tuple: bool) -> None:
    given_hashes = tuple(hashes) if as_tuple else hashes
    assert root_of_leaf_hashes(given_hashes) == readable_root(hashes)
    assert root_of_record_hashes(given_hashes) == readable_root([record_leaf_hash(h) for h in hashes])


def test_the_hashes_are_rfc6962s() -> None:
    # one leaf, two leaves, three: the prefixes and the promotion of an unpaired node, spelled out
    a, b, c = (hashlib.sha256(bytes([n])).digest() for n in range(3))
    assert root_of_record_hashes([]) == hashlib.sha256(b"").digest()
    assert root_of_record_hashes([a]) == hashlib.sha256(b"\x00" + a).digest() == leaf_hash(a)
    assert root_of_leaf_hashes([a, b]) == hashlib.sha256(b"\x01" + a + b).digest() == node_hash(a, b)
    assert root_of_leaf_hashes([a, b, c]) == node_hash(node_hash(a, b), c)
