"""RFC 6962 / RFC 9162 Merkle Tree Hash, its inclusion proofs and its consistency proofs.

The tree is the Certificate Transparency one (RFC 9162 section 2.1.1, unchanged from RFC 6962
section 2.1) with SHA-256: a leaf is hashed as SHA-256(0x00 || data), an interior node as
SHA-256(0x01 || left || right), the split is at the largest power of two smaller than the size,
and the empty tree's hash is SHA-256 of the empty string. The prefixes keep a leaf from being
passed off as an interior node (second-preimage attack).

What a leaf is, in AuditSeal: the leaf data of a sealed record is its 32-byte chain hash, so the
leaf hash is leaf_hash(record.hash) (see `record_leaf_hash`). The chain hash already commits to
the event bytes, the seq and the predecessor, so an inclusion proof pins an event to its exact
position in its chain and not merely to "somewhere in the batch"; the event bytes are hashed
once (by the chain) instead of twice; and a SIEM can check an inclusion proof from the sealed
record's integrity fields alone, without re-encoding the event.

The tree is built bottom-up: pair the nodes of a level left to right and promote an unpaired
last node unchanged to the next level. That yields exactly RFC 6962's recursive definition
(the left part of every split is a complete subtree, and a promoted node is the root of the
smaller right part, which RFC 6962 hashes one level higher without a sibling), without recursion
and in linear time.
"""

import hashlib
from collections.abc import Sequence

from pipeline.integrity.errors import MalformedInputError
from pipeline.native.merkle_native import (
    batch_and_history_roots,
    record_leaf_hashes,
    root_of_leaf_hashes,
    root_of_record_hashes,
)

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """Hash one leaf's data: SHA-256(0x00 || data) (RFC 9162 section 2.1.1, MTH of one entry)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two child hashes: SHA-256(0x01 || left || right) (RFC 9162 section 2.1.1)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def record_leaf_hash(record_hash: bytes) -> bytes:
    """The Merkle leaf hash of a sealed record: leaf_hash of its 32-byte chain hash.

    This is AuditSeal's leaf convention (see the module docstring) on top of RFC 9162
    section 2.1.1; the size check stops an event's payload being used as leaf data by mistake.
    """
    if len(record_hash) != HASH_SIZE:
        raise MalformedInputError(
            f"a record leaf is a {HASH_SIZE}-byte chain hash, found {len(record_hash)} bytes"
        )
    return leaf_hash(record_hash)


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash of raw leaf data D[n] (RFC 9162 section 2.1.1; RFC 6962 section 2.1)."""
    return root_from_leaf_hashes([leaf_hash(data) for data in leaves])


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash of a tree whose leaf hashes are already computed (RFC 9162 section 2.1.1).

    The sealer holds leaf hashes as records arrive, so this is the form it calls; it yields the
    same root as `merkle_root` on the corresponding leaf data. A list or tuple of 32-byte hashes
    is rooted in one compiled call (`pipeline.native.merkle_native`, equal to the readable `_levels`).
    """
    root: bytes | None = root_of_leaf_hashes(leaf_hashes)
    if root is not None:
        return root
    _require_leaf_hashes(leaf_hashes)
    if not leaf_hashes:
        return EMPTY_ROOT
    return _levels(leaf_hashes)[-1][0]


def record_tree_root(record_hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash over the record leaves of these chain hashes, as a checkpoint's merkle_root.

    Equal to ``root_from_leaf_hashes([record_leaf_hash(h) for h in record_hashes])``, computed
    in one compiled call; raises MalformedInputError as record_leaf_hash does for a wrong size.
    """
    root: bytes | None = root_of_record_hashes(record_hashes)
    if root is not None:
        return root
    return root_from_leaf_hashes([record_leaf_hash(value) for value in record_hashes])


def record_leaves(record_hashes: Sequence[bytes]) -> bytes:
    """The record leaves (`record_leaf_hash`) of these chain hashes, concatenated: 32 bytes each, in order.

    Hashed once, they give both a batch's checkpoint root and the history tree's subtrees over the same
    entries (`batch_and_history`), in one compiled call; raises MalformedInputError as record_leaf_hash does.
    """
    leaves: bytes | None = record_leaf_hashes(record_hashes)
    if leaves is not None:
        return leaves
    return b"".join(record_leaf_hash(value) for value in record_hashes)


def batch_and_history(leaves: bytes, history_size: int) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A batch of leaf hashes (``leaves``, concatenated, at least one) appended to a tree of ``history_size``
    leaves: (MTH of the batch alone, [(width, MTH) of each maximal aligned perfect subtree of
    [history_size, history_size + n)], left to right), both from one compiled build of the batch's tree.

    The subtrees are what `history_tree.extended_by_batch` merges into a chain's frontier; the batch's root is
    its checkpoint's. MalformedInputError for no leaves or a length that is not a multiple of 32.
    """
    found = batch_and_history_roots(leaves, history_size)
    if found is None:
        raise MalformedInputError(
            f"a batch is at least one 32-byte leaf hash after a history of at least 0, found {len(leaves)} bytes "
            f"after {history_size}"
        )
    root, subtrees = found
    return root, subtrees


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path PATH(m, D[n]) of leaf `index` (RFC 6962 section 2.1.1; RFC 9162 2.1.3.1).

    The path lists sibling hashes from the leaf's level up to the root's children, the order
    RFC 6962 defines and `verify_inclusion` consumes. Building it costs O(n); use
    `inclusion_proofs` to get every leaf's path for the price of one tree.
    """
    _require_leaf_hashes(leaf_hashes)
    if not 0 <= index < len(leaf_hashes):
        raise MalformedInputError(f"leaf index must be in [0, {len(leaf_hashes)}), found {index}")
    return _path(_levels(leaf_hashes), index)


def inclusion_proofs(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """PATH(m, D[n]) for every leaf m, in leaf order (RFC 6962 section 2.1.1), in O(n log n)."""
    _require_leaf_hashes(leaf_hashes)
    levels = _levels(leaf_hashes) if leaf_hashes else []
    return [_path(levels, index) for index in range(len(leaf_hashes))]


def tree_levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree over ``leaf_hashes``, leaves first and the root last ([] for no leaves): what
    :func:`inclusion_proofs` reads its paths from, for a caller that also needs the root or renders the paths."""
    _require_leaf_hashes(leaf_hashes)
    return _levels(leaf_hashes) if leaf_hashes else []


def audit_path(levels: list[list[bytes]], index: int) -> list[bytes]:
    """PATH(index) in the tree of :func:`tree_levels` (one of :func:`inclusion_proofs`' paths)."""
    return _path(levels, index)


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether `proof` proves leaf `index` in a tree of `tree_size` with `root` (RFC 9162 2.1.3.2).

    Returns False rather than raising on malformed input (wrong hash sizes, an index outside the
    tree, a proof of the wrong length): proofs come from archives a verifier does not trust.
    """
    if not 0 <= index < tree_size:
        return False
    if len(leaf_hash) != HASH_SIZE or len(root) != HASH_SIZE:
        return False
    if any(len(element) != HASH_SIZE for element in proof):
        return False
    fn = index
    sn = tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # A right-edge node has no sibling on some levels; skip them (RFC 9162 step 3.b.ii).
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]): the consistency proof from the first `old_size` leaves to all of them.

    RFC 9162 section 2.1.4.1 (RFC 6962 section 2.1.2): the hashes a client holding the root of
    the tree of size m needs to check that the tree of size n = len(leaf_hashes) extends it.
    Empty when m == 0 or m == n. Raises MalformedInputError for m outside [0, n].
    """
    _require_leaf_hashes(leaf_hashes)
    size = len(leaf_hashes)
    if not 0 <= old_size <= size:
        raise MalformedInputError(f"old size must be in [0, {size}], found {old_size}")
    if old_size in (0, size):
        return []
    proof: list[bytes] = []
    _subproof(list(leaf_hashes), old_size, 0, size, True, proof)
    return proof


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> bool:
    """Whether `proof` proves the tree of `new_size` with `new_root` extends `old_root`'s.

    RFC 9162 section 2.1.4.2, with the edge cases transparency-dev/merkle's VerifyConsistency
    uses: equal sizes need an empty proof and equal roots, old size 0 an empty proof (the empty
    tree is a prefix of every tree). Returns False, never raises, on malformed input: proofs
    come from parties a verifier does not trust.
    """
    if not 0 <= old_size <= new_size:
        return False
    if len(old_root) != HASH_SIZE or len(new_root) != HASH_SIZE:
        return False
    if any(len(element) != HASH_SIZE for element in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        # The old tree is a complete subtree of the new one: its root is the path's seed.
        path.insert(0, old_root)
    fn = old_size - 1
    sn = new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def subtree_root(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH(D[start:end]) over leaf hashes, for a range that is itself an RFC 6962 subtree."""
    return root_from_leaf_hashes(list(leaf_hashes[start:end]))


def _subproof(
    leaf_hashes: list[bytes], m: int, start: int, end: int, complete: bool, proof: list[bytes]
) -> None:
    """SUBPROOF(m, D[start:end], b) of RFC 9162 section 2.1.4.1, appended to `proof` in order."""
    n = end - start
    if m == n:
        if not complete:
            proof.append(subtree_root(leaf_hashes, start, end))
        return
    k = _largest_power_of_two_below(n)
    if m <= k:
        _subproof(leaf_hashes, m, start, start + k, complete, proof)
        proof.append(subtree_root(leaf_hashes, start + k, end))
    else:
        _subproof(leaf_hashes, m - k, start + k, end, False, proof)
        proof.append(subtree_root(leaf_hashes, start, start + k))


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162's split: the largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of a non-empty tree, leaves first, root last (bottom-up RFC 6962 build)."""
    sha256 = hashlib.sha256
    level = list(leaf_hashes)
    levels = [level]
    while len(level) > 1:
        # Inlined node_hash: this loop is the hot path of rooting a 100k-record batch.
        parents = [
            sha256(_NODE_PREFIX + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            parents.append(level[-1])
        level = parents
        levels.append(level)
    return levels


def _path(levels: list[list[bytes]], index: int) -> list[bytes]:
    """Sibling hashes of leaf `index`, bottom-up; a promoted node has no sibling on its level."""
    path = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index >>= 1
    return path


def _require_leaf_hashes(leaf_hashes: Sequence[bytes]) -> None:
    for position, value in enumerate(leaf_hashes):
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            found = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
            raise MalformedInputError(
                f"leaf hash {position} must be {HASH_SIZE} bytes, found {found}"
            )
