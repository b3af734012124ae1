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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.integrity.errors import MalformedInputError
from pipeline.integrity.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    batch_and_history,
    node_hash,
    record_leaves,
    record_tree_root,
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

    def new_subtree(start: int, end: int) -> bytes:
        return root_from_leaf_hashes(list(new_leaves[start - m : end - m]))

    return _consistency_proof(old, m + len(new_leaves), new_subtree)


def _consistency_proof(old: HistoryTree, n: int, new_subtree: Callable[[int, int], bytes]) -> list[bytes]:
    # RFC 9162's SUBPROOF; `new_subtree(start, end)` is MTH of a range at or after the old size m
    m = old.size
    if m == 0 or m == n:
        return []
    nodes = dict(zip(frontier_ranges(m), old.frontier, strict=False))

    def subtree(start: int, end: int) -> bytes:
        if end <= m:
            # By RFC 9162's recursion, every old range a proof names is one of the frontier's nodes.
            return nodes[(start, end)]
        if start < m:
            raise MalformedInputError(f"range [{start}, {end}) straddles the old size {m}")
        return new_subtree(start, end)

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


@dataclass(frozen=True, slots=True)
class AppendedRange:
    """The compact range of the leaves [start, end) appended to a tree of size `start`: O(log n) hashes.

    `nodes` are (width, root) of the maximal aligned perfect subtrees covering [start, end), left to right.
    With the frontier at `start` it is all an RFC 9162 consistency proof from `start` to `end` needs
    (:meth:`consistency_proof`), so a submitter can hold a lagging witness's backlog in O(log n) instead of
    one hash per entry sealed while the witness is away.
    """

    start: int
    end: int = -1
    nodes: tuple[tuple[int, bytes], ...] = ()

    def __post_init__(self) -> None:
        if self.end == -1:
            object.__setattr__(self, "end", self.start)
        if not 0 <= self.start <= self.end or sum(width for width, _ in self.nodes) != self.end - self.start:
            raise MalformedInputError(f"an appended range [{self.start}, {self.end}) does not match its nodes")

    def extended(self, leaf_hashes: Sequence[bytes]) -> AppendedRange:
        """The range after appending these leaf hashes (each 32 bytes), in order."""
        return self.with_chunks(leaf_chunks(self.end, leaf_hashes))

    def with_chunks(self, chunks: Sequence[tuple[int, bytes]]) -> AppendedRange:
        """The range after appending `chunks`: (width, root) of consecutive aligned perfect subtrees from `end`
        (:func:`leaf_chunks`, :func:`record_chunks`), merged in like single leaves."""
        nodes = list(self.nodes)
        position = self.end
        for width, value in chunks:
            if position % width:
                raise MalformedInputError(f"a subtree of width {width} cannot start at {position}")
            node_start, position = position, position + width
            # merge with the left neighbour while both are siblings: same width, the left one aligned to twice it
            while nodes and nodes[-1][0] == width and (node_start - width) % (2 * width) == 0 \
                    and node_start - width >= self.start:
                left_width, left = nodes.pop()
                node_start -= left_width
                width, value = width + left_width, node_hash(left, value)
            nodes.append((width, value))
        return AppendedRange(self.start, position, tuple(nodes))

    def subtree(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end): a node of the range, or the right edge of it folded (end == self.end)."""
        position, covering = self.start, []
        for width, value in self.nodes:
            if position >= start and position + width <= end:
                covering.append(value)
            elif position < start < position + width or position < end < position + width:
                break
            position += width
        else:
            if covering and (end == self.end or len(covering) == 1):
                value = covering[-1]
                for node in reversed(covering[:-1]):
                    value = node_hash(node, value)
                return value
        raise MalformedInputError(f"range [{start}, {end}) is not a node or right edge of [{self.start}, {self.end})")

    def applied_to(self, tree: HistoryTree) -> HistoryTree:
        """The tree of size `end` from the tree of size `start` and this range."""
        if tree.size != self.start:
            raise MalformedInputError(f"a range from {self.start} applied to a tree of size {tree.size}")
        stack = [(end - start, value) for (start, end), value in zip(frontier_ranges(tree.size), tree.frontier,
                                                                     strict=False)]
        for width, value in self.nodes:
            while stack and stack[-1][0] == width:
                left_width, left = stack.pop()
                width, value = width + left_width, node_hash(left, value)
            stack.append((width, value))
        return HistoryTree(self.end, tuple(value for _, value in stack))

    def consistency_proof(self, old: HistoryTree) -> list[bytes]:
        """PROOF(start, D[end]) of RFC 9162 2.1.4.1 from the frontier at `start` and this range alone; equal to
        ``consistency_proof_from(old, leaves[start:end])``."""
        if old.size != self.start:
            raise MalformedInputError(f"a range from {self.start} proves from size {self.start}, not {old.size}")
        return _consistency_proof(old, self.end, self.subtree)


def _aligned_widths(position: int, count: int) -> list[int]:
    # the maximal aligned perfect subtrees of [position, position + count), left to right
    widths, end = [], position + count
    while position < end:
        width = position & -position if position else 1 << (end - 1).bit_length()
        while width > end - position:
            width >>= 1
        widths.append(width)
        position += width
    return widths


def leaf_chunks(position: int, leaf_hashes: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """(width, root) of the maximal aligned perfect subtrees of these leaves appended at `position`, each rooted in
    one compiled call: what :meth:`AppendedRange.with_chunks` takes."""
    for leaf in leaf_hashes:
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise MalformedInputError(f"a leaf hash must be {HASH_SIZE} bytes, found {leaf!r}")
    chunks, offset = [], 0
    for width in _aligned_widths(position, len(leaf_hashes)):
        chunks.append((width, root_from_leaf_hashes(leaf_hashes[offset:offset + width])))
        offset += width
    return chunks


def record_chunks(position: int, record_hashes: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """Like :func:`leaf_chunks` over the record leaves of these chain hashes (`merkle.record_tree_root`): no
    Python call per entry."""
    chunks, offset = [], 0
    for width in _aligned_widths(position, len(record_hashes)):
        chunks.append((width, record_tree_root(record_hashes[offset:offset + width])))
        offset += width
    return chunks


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
    frontier like single leaves (:func:`extended_by_chunks`): a tree head and its checkpoint cost about one
    Merkle root of the batch, not two, and no Python loop per leaf.
    """
    root, subtrees = batch_and_history(leaves, tree.size)
    return extended_by_chunks(tree, subtrees), root


def extended_by_chunks(tree: HistoryTree, chunks: Sequence[tuple[int, bytes]]) -> HistoryTree:
    """The tree after appending `chunks` ((width, root) of consecutive aligned perfect subtrees from its size, as
    :func:`record_chunks` and `merkle.batch_and_history` give them): the sealer hashes a batch once, for its
    tree, its checkpoint and its witnesses."""
    stack = [(end - start, value) for (start, end), value in zip(frontier_ranges(tree.size), tree.frontier,
                                                                 strict=False)]
    position = tree.size
    for width, value in chunks:
        if position % width:
            raise MalformedInputError(f"a subtree of width {width} cannot start at {position}")
        position += width
        while stack and stack[-1][0] == width:
            left_width, left = stack.pop()
            width, value = width + left_width, node_hash(left, value)
        stack.append((width, value))
    return HistoryTree(position, tuple(value for _, value in stack))
