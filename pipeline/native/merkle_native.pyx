"""RFC 6962 / RFC 9162 Merkle Tree Hash in one call, beside the readable bottom-up build in
:mod:`pipeline.integrity.merkle` (which it must equal; the unit tests check the RFC vectors).

The tree is built in one C buffer of 32-byte hashes, level by level in place; each SHA-256 is
hashlib's, so the only saving is the Python work around it (lists, concatenations, calls).
Inputs that are not lists or tuples of 32-byte ``bytes`` return None: the caller then runs the
reference, which names the problem.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcpy

import hashlib

cdef enum:
    HASH_SIZE = 32


cdef object tree_root(seq, bint leaves_are_record_hashes):
    # The root over seq's hashes (leaf hashes, or record hashes to hash as leaves first); None if
    # seq is not a list or tuple of 32-byte bytes.
    if type(seq) is not list and type(seq) is not tuple:
        return None
    cdef Py_ssize_t size = len(seq), index, count
    cdef unsigned char* level
    cdef unsigned char* node_input
    cdef bytearray leaf_data = bytearray(1 + HASH_SIZE)   # 0x00 || data
    cdef bytearray node_data = bytearray(1 + 2 * HASH_SIZE)  # 0x01 || left || right
    for item in seq:
        if type(item) is not bytes or PyBytes_GET_SIZE(item) != HASH_SIZE:
            return None
    if size == 0:
        return hashlib.sha256(b"").digest()
    sha256 = hashlib.sha256
    level = <unsigned char*>PyMem_Malloc(size * HASH_SIZE)
    if level == NULL:
        raise MemoryError()
    try:
        for index in range(size):
            item = seq[index]
            if leaves_are_record_hashes:
                memcpy(PyByteArray_AS_STRING(leaf_data) + 1, PyBytes_AS_STRING(item), HASH_SIZE)
                digest = sha256(leaf_data).digest()
                memcpy(level + index * HASH_SIZE, PyBytes_AS_STRING(digest), HASH_SIZE)
            else:
                memcpy(level + index * HASH_SIZE, PyBytes_AS_STRING(item), HASH_SIZE)
        node_input = <unsigned char*>PyByteArray_AS_STRING(node_data)
        node_input[0] = 1
        count = size
        while count > 1:
            # parent i of pair (2i, 2i + 1) overwrites slot i, already read; an unpaired last node is promoted
            for index in range(count // 2):
                memcpy(node_input + 1, level + 2 * index * HASH_SIZE, 2 * HASH_SIZE)
                digest = sha256(node_data).digest()
                memcpy(level + index * HASH_SIZE, PyBytes_AS_STRING(digest), HASH_SIZE)
            if count % 2:
                memcpy(level + (count // 2) * HASH_SIZE, level + (count - 1) * HASH_SIZE, HASH_SIZE)
            count = (count + 1) // 2
        return PyBytes_FromStringAndSize(<char*>level, HASH_SIZE)
    finally:
        PyMem_Free(level)


def root_of_leaf_hashes(leaf_hashes):
    """Merkle Tree Hash over these 32-byte leaf hashes (RFC 9162 section 2.1.1); None for other input."""
    return tree_root(leaf_hashes, False)


def root_of_record_hashes(record_hashes):
    """Merkle Tree Hash over the leaves leaf_hash(h) of these 32-byte chain hashes; None for other input."""
    return tree_root(record_hashes, True)
