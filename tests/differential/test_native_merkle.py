"""The compiled Merkle Tree Hash (pipeline.native.merkle_native, SHA-256 by libcrypto) against the readable
bottom-up build of pipeline.integrity.merkle, on any number of arbitrary hashes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.integrity.merkle import EMPTY_ROOT, _levels, leaf_hash, node_hash, record_leaf_hash
from pipeline.native.merkle_native import (
    record_leaf_hashes,
    root_of_leaf_hashes,
    root_of_leaf_range,
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


@settings(max_examples=200, deadline=None)
@given(hashes=HASHES, data=st.data())
def test_leaves_hashed_once_root_any_range_as_the_readable_build(hashes: list[bytes], data: st.DataObject) -> None:
    # the record leaves a tree head hashes for the history tree, then roots the checkpoint's batch from
    leaves = record_leaf_hashes(hashes)
    assert leaves == b"".join(record_leaf_hash(h) for h in hashes)
    first = data.draw(st.integers(0, len(hashes)))
    count = data.draw(st.integers(0, len(hashes) - first))
    assert root_of_leaf_range(leaves, first, count) == readable_root(
        [record_leaf_hash(h) for h in hashes[first:first + count]])


def test_a_range_outside_the_leaves_or_not_32_byte_hashes_is_refused() -> None:
    a, b = (hashlib.sha256(bytes([n])).digest() for n in range(2))
    leaves = record_leaf_hashes([a, b])
    assert root_of_leaf_range(leaves, 1, 2) is None
    assert root_of_leaf_range(leaves, -1, 1) is None
    assert root_of_leaf_range(leaves[:-1], 0, 1) is None
    assert record_leaf_hashes([a, b[:31]]) is None
    assert record_leaf_hashes(iter([a])) is None
