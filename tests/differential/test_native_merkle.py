"""The compiled Merkle Tree Hash (pipeline.native.merkle_native, SHA-256 by libcrypto) against the readable
bottom-up build of pipeline.integrity.merkle, on any number of arbitrary hashes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.integrity.merkle import EMPTY_ROOT, _levels, leaf_hash, node_hash, record_leaf_hash
from pipeline.native.merkle_native import (
    batch_and_history_roots,
    record_leaf_hashes,
    root_of_leaf_hashes,
    root_of_record_hashes,
)

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


@settings(max_examples=300, deadline=None)
@given(hashes=HASHES.filter(bool), history_size=st.one_of(st.integers(0, 70), st.sampled_from([2000, 4000, 6144]),
                                                         st.integers(0, 2**40)))
def test_one_build_gives_the_batch_root_and_the_history_subtrees(hashes: list[bytes], history_size: int) -> None:
    # the record leaves hashed once, then the batch's tree built once for its checkpoint and the history tree
    leaves = record_leaf_hashes(hashes)
    assert leaves == b"".join(record_leaf_hash(h) for h in hashes)
    root, subtrees = batch_and_history_roots(leaves, history_size)
    leaf_hashes = [record_leaf_hash(h) for h in hashes]
    assert root == readable_root(leaf_hashes)
    position = history_size
    for width, subtree_root in subtrees:
        # each is the largest perfect subtree aligned to its width that starts there and fits
        assert width & (width - 1) == 0 and position % width == 0 and position + width <= history_size + len(hashes)
        assert position == 0 or position + 2 * width > history_size + len(hashes) or position % (2 * width)
        assert subtree_root == readable_root(leaf_hashes[position - history_size:position - history_size + width])
        position += width
    assert position == history_size + len(hashes)


def test_no_leaves_or_not_32_byte_hashes_are_refused() -> None:
    a, b = (hashlib.sha256(bytes([n])).digest() for n in range(2))
    leaves = record_leaf_hashes([a, b])
    assert batch_and_history_roots(b"", 0) is None
    assert batch_and_history_roots(leaves[:-1], 0) is None
    assert batch_and_history_roots(leaves, -1) is None
    assert record_leaf_hashes([a, b[:31]]) is None
    assert record_leaf_hashes(iter([a])) is None
