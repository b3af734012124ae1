"""RFC 6962 / RFC 9162 Merkle Tree Hash in one call, beside the readable bottom-up build in
:mod:`pipeline.integrity.merkle` (which it must equal; the unit tests check the RFC vectors and the
differential tests the readable build).

The tree is built in one C buffer of 32-byte hashes, level by level in place, each SHA-256 computed by
OpenSSL's libcrypto directly into that buffer: no Python object per hash. This is the hot path of a
checkpoint (sealer and verifier) and of a tree head's history tree, and one SHA-256 through hashlib costs
about four times the hash itself (an object, a call, a bytes result). libcrypto's SHA256_Init/Update/Final
are used rather than EVP: they hash with the same SHA-NI/AVX2 code, and EVP's per-call provider dispatch
measured 1.5-2x slower on 33- and 65-byte inputs (OpenSSL 3.0; deprecated there, still shipped).
Inputs that are not lists or tuples of 32-byte ``bytes`` return None: the caller then runs the
reference, which names the problem.

A tree head's history tree and its batch's checkpoint root cover the same entries: `record_leaf_hashes`
hashes their leaves once, into one ``bytes`` of 32-byte leaf hashes, and `batch_and_history_roots` builds
the batch's tree from them once and takes both the checkpoint's root and the history tree's aligned
subtrees from its nodes.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcpy

from pipeline.native.sha256 cimport SHA256_CTX, SHA256_Final, SHA256_Init, SHA256_Update

cdef enum:
    HASH_SIZE = 32

cdef enum:
    LEAF_PREFIX = 0
    NODE_PREFIX = 1


cdef inline void _prefixed_hash(unsigned char prefix, const unsigned char* data, size_t length,
                                unsigned char* out) noexcept nogil:
    # SHA-256(prefix byte || data) into out (out may overlap data: the input is consumed before Final writes)
    cdef SHA256_CTX context
    SHA256_Init(&context)
    SHA256_Update(&context, &prefix, 1)
    SHA256_Update(&context, data, length)
    SHA256_Final(out, &context)


cdef void _fold(unsigned char* level, Py_ssize_t count) noexcept nogil:
    # the RFC 6962 root of `count` >= 1 hashes in `level`, into level[0:32]: parent i of pair (2i, 2i + 1)
    # overwrites slot i, already read; an unpaired last node is promoted
    cdef Py_ssize_t index
    while count > 1:
        for index in range(count // 2):
            _prefixed_hash(NODE_PREFIX, level + 2 * index * HASH_SIZE, 2 * HASH_SIZE, level + index * HASH_SIZE)
        if count % 2:
            memcpy(level + (count // 2) * HASH_SIZE, level + (count - 1) * HASH_SIZE, HASH_SIZE)
        count = (count + 1) // 2


cdef object tree_root(seq, bint leaves_are_record_hashes):
    # The root over seq's hashes (leaf hashes, or record hashes to hash as leaves first); None if
    # seq is not a list or tuple of 32-byte bytes.
    if type(seq) is not list and type(seq) is not tuple:
        return None
    cdef Py_ssize_t size = len(seq), index
    cdef unsigned char* level
    cdef unsigned char empty[HASH_SIZE]
    cdef SHA256_CTX context
    for item in seq:
        if type(item) is not bytes or PyBytes_GET_SIZE(item) != HASH_SIZE:
            return None
    if size == 0:
        SHA256_Init(&context)
        SHA256_Final(empty, &context)
        return PyBytes_FromStringAndSize(<char*>empty, HASH_SIZE)
    level = <unsigned char*>PyMem_Malloc(size * HASH_SIZE)
    if level == NULL:
        raise MemoryError()
    try:
        for index in range(size):
            item = seq[index]
            if leaves_are_record_hashes:
                _prefixed_hash(LEAF_PREFIX, <const unsigned char*>PyBytes_AS_STRING(item), HASH_SIZE,
                               level + index * HASH_SIZE)
            else:
                memcpy(level + index * HASH_SIZE, PyBytes_AS_STRING(item), HASH_SIZE)
        with nogil:
            _fold(level, size)
        return PyBytes_FromStringAndSize(<char*>level, HASH_SIZE)
    finally:
        PyMem_Free(level)


def record_leaf_hashes(record_hashes):
    """The leaves leaf_hash(h) of these 32-byte chain hashes, concatenated in one bytes object (32 bytes
    each, in order); None for other input."""
    if type(record_hashes) is not list and type(record_hashes) is not tuple:
        return None
    cdef Py_ssize_t size = len(record_hashes), index
    for item in record_hashes:
        if type(item) is not bytes or PyBytes_GET_SIZE(item) != HASH_SIZE:
            return None
    cdef bytes leaves = PyBytes_FromStringAndSize(NULL, size * HASH_SIZE)
    cdef unsigned char* out = <unsigned char*>PyBytes_AS_STRING(leaves)
    for index in range(size):
        item = record_hashes[index]
        _prefixed_hash(LEAF_PREFIX, <const unsigned char*>PyBytes_AS_STRING(item), HASH_SIZE,
                       out + index * HASH_SIZE)
    return leaves


def batch_and_history_roots(bytes leaves, Py_ssize_t history_size):
    """For a batch whose leaf hashes are ``leaves`` (32 bytes each, at least one) appended to a history tree
    of ``history_size`` leaves: (the batch's own Merkle Tree Hash, [(width, root) of each maximal aligned
    perfect subtree of [history_size, history_size + n), in order]); None for other input.

    Both trees are built from one bottom-up build of the batch: a history subtree [p, p + w) is made of the
    batch's perfect nodes of width g = the largest power of two dividing both w and p - history_size, so the
    only node hashes added are those above width g (none at all when the batch starts on a multiple of its
    subtrees' widths, as batches of a round --checkpoint-records do)."""
    cdef Py_ssize_t available = PyBytes_GET_SIZE(leaves)
    if available == 0 or available % HASH_SIZE or history_size < 0:
        return None
    cdef Py_ssize_t n = available // HASH_SIZE, total = 0, count = n, levels = 0, index, level
    cdef Py_ssize_t starts[64]
    cdef Py_ssize_t sizes[64]
    while True:
        starts[levels] = total
        sizes[levels] = count
        total += count
        levels += 1
        if count == 1:
            break
        count = (count + 1) // 2
    cdef unsigned char* nodes = <unsigned char*>PyMem_Malloc(total * HASH_SIZE)
    cdef unsigned char* scratch = NULL
    cdef unsigned char* below
    cdef unsigned char* above
    cdef Py_ssize_t position, end, width, relative, grain, parts, first, depth
    if nodes == NULL:
        raise MemoryError()
    try:
        memcpy(nodes, PyBytes_AS_STRING(leaves), n * HASH_SIZE)
        with nogil:
            for level in range(1, levels):
                below = nodes + starts[level - 1] * HASH_SIZE
                above = nodes + starts[level] * HASH_SIZE
                for index in range(sizes[level - 1] // 2):
                    _prefixed_hash(NODE_PREFIX, below + 2 * index * HASH_SIZE, 2 * HASH_SIZE, above + index * HASH_SIZE)
                if sizes[level - 1] % 2:
                    memcpy(above + (sizes[level] - 1) * HASH_SIZE, below + (sizes[level - 1] - 1) * HASH_SIZE,
                           HASH_SIZE)
        batch_root = PyBytes_FromStringAndSize(<char*>nodes + starts[levels - 1] * HASH_SIZE, HASH_SIZE)
        subtrees = []
        position, end = history_size, history_size + n
        scratch = <unsigned char*>PyMem_Malloc(n * HASH_SIZE)
        if scratch == NULL:
            raise MemoryError()
        while position < end:
            # the largest perfect subtree that starts at `position`, is aligned to its width, and fits
            width = position & -position if position else 1
            if not position:
                while width < end:
                    width <<= 1
            while width > end - position:
                width >>= 1
            relative = position - history_size
            grain = width if relative == 0 else min(width, relative & -relative)
            depth = 0
            while (1 << depth) < grain:
                depth += 1
            parts, first = width // grain, relative // grain
            memcpy(scratch, nodes + (starts[depth] + first) * HASH_SIZE, parts * HASH_SIZE)
            with nogil:
                _fold(scratch, parts)
            subtrees.append((width, PyBytes_FromStringAndSize(<char*>scratch, HASH_SIZE)))
            position += width
        return batch_root, subtrees
    finally:
        PyMem_Free(nodes)
        PyMem_Free(scratch)


def root_of_leaf_hashes(leaf_hashes):
    """Merkle Tree Hash over these 32-byte leaf hashes (RFC 9162 section 2.1.1); None for other input."""
    return tree_root(leaf_hashes, False)


def root_of_record_hashes(record_hashes):
    """Merkle Tree Hash over the leaves leaf_hash(h) of these 32-byte chain hashes; None for other input."""
    return tree_root(record_hashes, True)

