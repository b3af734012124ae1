"""The whole-history tree's compact range: roots, appends and consistency proofs equal the full-tree reference."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.integrity.errors import MalformedInputError
from pipeline.integrity.history_tree import (
    AppendedRange,
    HistoryTree,
    consistency_proof_from,
    extended_by_batch,
    extended_by_leaves,
    extended_by_records,
    frontier_ranges,
    history_tree_of,
    record_chunks,
)
from pipeline.integrity.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    leaf_hash,
    record_leaf_hash,
    record_leaves,
    root_from_leaf_hashes,
    verify_consistency,
)
from tests.unit.test_merkle import LEAF_INPUTS, ROOTS

LEAVES = [leaf_hash(n.to_bytes(4, "big")) for n in range(600)]


@pytest.mark.parametrize("size", range(9))
def test_roots_match_the_certificate_transparency_reference(size):
    leaves = [leaf_hash(data) for data in LEAF_INPUTS]
    assert history_tree_of(leaves[:size]).root.hex() == ROOTS[size]


def test_frontier_is_one_perfect_subtree_per_set_bit():
    assert frontier_ranges(0) == []
    assert frontier_ranges(6) == [(0, 4), (4, 6)]
    assert frontier_ranges(13) == [(0, 8), (8, 12), (12, 13)]
    tree = history_tree_of(LEAVES[:13])
    assert tree.frontier == tuple(root_from_leaf_hashes(LEAVES[a:b]) for a, b in frontier_ranges(13))
    assert HistoryTree().root == EMPTY_ROOT


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 600), st.integers(0, 600))
def test_appending_in_any_split_gives_the_same_tree(first, total):
    first, total = min(first, total), max(first, total)
    assert history_tree_of(LEAVES[:first]).extended(LEAVES[first:total]) == history_tree_of(LEAVES[:total])
    assert history_tree_of(LEAVES[:total]).root == root_from_leaf_hashes(LEAVES[:total])


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 600), st.integers(0, 600))
def test_consistency_from_the_frontier_equals_the_full_tree_proof(old, new):
    old, new = min(old, new), max(old, new)
    proof = consistency_proof_from(history_tree_of(LEAVES[:old]), LEAVES[old:new])
    assert proof == consistency_proof(LEAVES[:new], old)
    assert verify_consistency(old, new, proof, root_from_leaf_hashes(LEAVES[:old]), root_from_leaf_hashes(LEAVES[:new]))


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 600), st.integers(0, 600))
def test_extending_by_record_leaves_hashed_once_gives_the_same_tree(first, total):
    first, total = min(first, total), max(first, total)
    records = [bytes([n % 256, n // 256]) * 16 for n in range(total)]
    leaves = [record_leaf_hash(h) for h in records]
    start = history_tree_of(leaves[:first])
    assert extended_by_leaves(start, record_leaves(records[first:])) == start.extended(leaves[first:])
    assert extended_by_records(start, records[first:]) == history_tree_of(leaves)
    if total > first:  # and the batch's own root from the same build, as its checkpoint signs it
        assert extended_by_batch(start, record_leaves(records[first:])) == (history_tree_of(leaves),
                                                                            root_from_leaf_hashes(leaves[first:]))
@settings(max_examples=150, deadline=None)
@given(st.integers(0, 600), st.integers(0, 600), st.integers(1, 50))
def test_a_compact_range_of_the_new_leaves_proves_what_the_leaves_prove(old, new, step):
    # what a submitter holds for a lagging witness: the frontier at its size and O(log n) hashes since, appended
    # in batches of `step` like heads arrive
    old, new = min(old, new), max(old, new)
    appended = AppendedRange(old)
    for start in range(old, new, step):
        appended = appended.extended(LEAVES[start:min(start + step, new)])
    tree = history_tree_of(LEAVES[:old])
    assert appended.end == new and len(appended.nodes) <= 2 * max(new - old, 1).bit_length()
    assert appended.consistency_proof(tree) == consistency_proof(LEAVES[:new], old)
    assert appended.applied_to(tree) == history_tree_of(LEAVES[:new])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300))
def test_record_chunks_append_the_record_leaves(old, count):
    # the sealer hands over chain hashes: their record leaves, rooted in compiled calls, give the same range
    records = [bytes([n % 256, n // 256]) * 16 for n in range(count)]
    by_records = AppendedRange(old).with_chunks(record_chunks(old, records))
    assert by_records == AppendedRange(old).extended([record_leaf_hash(r) for r in records])


def test_a_compact_range_fixed_vector():
    # [3, 8): nodes [3,4) and [4,8); the proof from 3 is [2,3) [3,4) [0,2) [4,8) (RFC 9162 2.1.4.2's shape)
    appended = AppendedRange(3).extended(LEAVES[3:8])
    assert [width for width, _ in appended.nodes] == [1, 4]
    tree = history_tree_of(LEAVES[:3])
    assert appended.consistency_proof(tree) == [LEAVES[2], LEAVES[3], root_from_leaf_hashes(LEAVES[0:2]),
                                                root_from_leaf_hashes(LEAVES[4:8])]
    with pytest.raises(MalformedInputError, match="proves from size 3"):
        appended.consistency_proof(history_tree_of(LEAVES[:4]))
    with pytest.raises(MalformedInputError, match="not a node or right edge"):
        appended.subtree(5, 7)


def test_malformed_state_is_refused():
    with pytest.raises(MalformedInputError, match="32-byte leaf hash"):
        extended_by_leaves(HistoryTree(), bytes(33))
    with pytest.raises(MalformedInputError, match="frontier hashes"):
        HistoryTree(3, (bytes(32),))
    with pytest.raises(MalformedInputError, match="32 bytes"):
        HistoryTree(1, (b"short",))
    with pytest.raises(MalformedInputError, match="leaf hash"):
        HistoryTree().extended([b"short"])
