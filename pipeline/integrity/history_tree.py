"""A chain's whole-history RFC 6962 tree, kept as its compact range: O(log n) state, O(1) amortised append.

Leaf i of a chain's history tree is the record leaf of the entry at seq i (`merkle.record_leaf_hash` of its
chain hash), so the tree of size n commits to every entry from seq 0 to n - 1, and a tree head (tlog-checkpoint)
of size n is a statement about the chain's entire history, checkable by any RFC 6962 client.

The state is the *frontier*: the roots of the maximal perfect subtrees covering [0, n), left to right, one per
set bit of n (the compact range of transparency-dev/merkle's `compact` package). From it come the root, the
next frontier after more leaves, and, with the leaves appended since, the RFC 9162 consistency proof from n to
any later size: every hash that proof needs is either a frontier node of [0, n) or a subtree of the new leaves.
So a sealer that holds the frontier at the size its witness last cosigned, and the leaves since, can always
prove consistency to the witness without keeping or re-reading the chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.integrity.errors import MalformedInputError
from pipeline.integrity.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    batch_and_history,
    node_hash,
    record_leaves,
    root_from_leaf_hashes,
)


def frontier_ranges(size: int) -> list[tuple[int, int]]:
    """The [start, end) leaf ranges of the frontier of a tree of `size`: one per set bit, largest first."""
    ranges = []
    start = 0
    for bit in reversed(range(size.bit_length())):
        width = 1 << bit
        if size & width:
            ranges.append((start, start + width))
            start += width
    return ranges


@dataclass(frozen=True, slots=True)
class HistoryTree:
    """The compact range of a tree of `size` leaves: `frontier[i]` is the root of `frontier_ranges(size)[i]`."""

    size: int = 0
    frontier: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 0:
            raise MalformedInputError(f"a history tree size must be a non-negative integer, found {self.size!r}")
        if len(self.frontier) != bin(self.size).count("1"):
            raise MalformedInputError(
                f"a history tree of size {self.size} has {bin(self.size).count('1')} frontier hashes, "
                f"found {len(self.frontier)}"
            )
        for value in self.frontier:
            if not isinstance(value, bytes) or len(value) != HASH_SIZE:
                raise MalformedInputError(f"a frontier hash must be {HASH_SIZE} bytes, found {value!r}")

    @property
    def root(self) -> bytes:
        """MTH of the whole tree (RFC 9162 section 2.1.1): the frontier folded from the right."""
        if not self.frontier:
            return EMPTY_ROOT
        value = self.frontier[-1]
        for node in reversed(self.frontier[:-1]):
            value = node_hash(node, value)
        return value

    def extended(self, leaf_hashes: Sequence[bytes]) -> HistoryTree:
        """The tree after appending these leaf hashes (each 32 bytes), in order."""
        # A stack of (width, hash), merged like binary addition as each leaf arrives.
        stack = [(end - start, value) for (start, end), value in zip(frontier_ranges(self.size), self.frontier, strict=False)]
        for leaf in leaf_hashes:
            if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
                raise MalformedInputError(f"a leaf hash must be {HASH_SIZE} bytes, found {leaf!r}")
            width, value = 1, leaf
            while stack and stack[-1][0] == width:
                left_width, left = stack.pop()
                width, value = width + left_width, node_hash(left, value)
            stack.append((width, value))
        return HistoryTree(self.size + len(leaf_hashes), tuple(value for _, value in stack))


def history_tree_of(leaf_hashes: Sequence[bytes]) -> HistoryTree:
    """The compact range of the tree over these leaf hashes."""
    return HistoryTree().extended(leaf_hashes)


def consistency_proof_from(old: HistoryTree, new_leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 2.1.4.1 from the frontier at m = old.size and the leaves m..n-1 alone.

    Equal to `merkle.consistency_proof(all_leaves[:n], m)`; empty when m == 0 or no leaf was appended.
    """
    m = old.size
    n = m + len(new_leaves)
    if m == 0 or m == n:
        return []
    nodes = dict(zip(frontier_ranges(m), old.frontier, strict=False))

    def subtree(start: int, end: int) -> bytes:
        if end <= m:
            # By RFC 9162's recursion, every old range a proof names is one of the frontier's nodes.
            return nodes[(start, end)]
        if start < m:
            raise MalformedInputError(f"range [{start}, {end}) straddles the old size {m}")
        return root_from_leaf_hashes(list(new_leaves[start - m : end - m]))

    proof: list[bytes] = []

    def subproof(local_m: int, start: int, end: int, complete: bool) -> None:
        width = end - start
        if local_m == width:
            if not complete:
                proof.append(subtree(start, end))
            return
        k = 1 << ((width - 1).bit_length() - 1)
        if local_m <= k:
            subproof(local_m, start, start + k, complete)
            proof.append(subtree(start + k, end))
        else:
            subproof(local_m - k, start + k, end, False)
            proof.append(subtree(start, start + k))

    subproof(m, 0, n, True)
    return proof



def extended_by_records(tree: HistoryTree, record_hashes: Sequence[bytes]) -> HistoryTree:
    """``tree.extended`` by the record leaves of these chain hashes (`merkle.record_leaf_hash` of each)."""
    return extended_by_leaves(tree, record_leaves(record_hashes))


def extended_by_leaves(tree: HistoryTree, leaves: bytes) -> HistoryTree:
    """``tree.extended`` by these leaf hashes, concatenated (32 bytes each, as `merkle.record_leaves` gives them)."""
    return extended_by_batch(tree, leaves)[0] if leaves else tree


def extended_by_batch(tree: HistoryTree, leaves: bytes) -> tuple[HistoryTree, bytes]:
    """``tree.extended`` by a batch's leaf hashes (concatenated, at least one), and the batch's own Merkle Tree
    Hash (its checkpoint's ``merkle_root``), from one build of the batch's tree.

    The new leaves are cut into the maximal aligned perfect subtrees of [size, size + n) (O(log n) of them),
    each made of the batch tree's own perfect nodes (`merkle.batch_and_history`), then merged into the
    frontier like single leaves: a tree head and its checkpoint cost about one Merkle root of the batch, not
    two, and no Python loop per leaf.
    """
    root, subtrees = batch_and_history(leaves, tree.size)
    stack = [(end - start, value) for (start, end), value in zip(frontier_ranges(tree.size), tree.frontier,
                                                                 strict=False)]
    for width, value in subtrees:
        while stack and stack[-1][0] == width:
            left_width, left = stack.pop()
            width, value = width + left_width, node_hash(left, value)
        stack.append((width, value))
    return HistoryTree(tree.size + len(leaves) // HASH_SIZE, tuple(value for _, value in stack)), root
