# cython: language_level=3
"""The sealer's per-event work, compiled: the acceptance check of raw records and the sealed entry.

Two fast paths, each held by the differential tests to the readable path production also runs.
Varints are read and written by :mod:`pipeline.native.varint` (strict: at most 10 bytes, 64 bits).

- :class:`Checker` runs a small program compiled from the newest AuditEvent schema by
  :func:`pipeline.wire.acceptance.checker_program` over the Avro binary encoding of a raw record,
  once, building no values. True only for bytes in the plain shape of a valid event, False for
  "ask the reference path" (never "invalid"). Its reference is that path itself, the decision the
  sealer takes for every record the check is not sure of: ``EventCodec.decode`` (fastavro) then
  ``validate_event``; the differential tests (tests/differential/test_acceptance_check.py) hold
  the check to "True only where the reference accepts", on generated, mutated and garbled bytes.
- :func:`seal_event` hashes one raw event into the chain (:func:`pipeline.integrity.chain.chain_hash`
  over :func:`pipeline.wire.sealed.event_payload`) and encodes its ``SealedEvent`` record, in one
  call and one pass, with the bytes the checked Avro writer gives for the same record.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t
from libc.string cimport memcmp, memcpy

from pipeline.native.chain_input cimport CHAIN_HASH_SIZE, event_hash_input
from pipeline.native.varint cimport long_size, put_long, read_long

import hashlib

cdef object _sha256 = hashlib.sha256

# Opcodes of a checker program (pipeline.wire.acceptance.checker_program writes them); cpdef:
# the same names serve the C code here and Python there.
cpdef enum:
    OP_STRING = 1        # a length-prefixed UTF-8 string
    OP_INT = 2           # a 32-bit int
    OP_LONG = 3          # a long
    OP_UUID = 4          # a uuid string in the 36-character text form
    OP_RANGE = 5         # a long in [low, high): two operands (timestamps)
    OP_ENUM = 6          # an enum index: one operand, the symbol count (at most 64)
    OP_NULLABLE = 7      # a union of null and one branch: operands value index, length of the branch program
    OP_REPEAT = 8        # map or array blocks: operands 1 for a map (string keys) else 0, length of the item program
    OP_BYTES = 9         # length-prefixed bytes (any content)

cdef enum:
    NOT_SURE = -1


cdef inline Py_ssize_t _long(const unsigned char* d, Py_ssize_t p, Py_ssize_t end, int64_t* out) noexcept:
    # the long at p (pipeline.native.varint's strict rule) and the position after it; NOT_SURE if damaged
    if not read_long(d, &p, end, out):
        return NOT_SURE
    return p


cdef inline bint _is_hex(unsigned char c) noexcept:
    return (48 <= c <= 57) or (65 <= c <= 70) or (97 <= c <= 102)


cdef class Checker:
    """``checker(data) -> bool``: True if ``data`` is ``header`` + a plain, valid Avro body (see module doc)."""

    cdef long long[::1] _program
    cdef bytes _header
    cdef readonly tuple program

    def __init__(self, program, bytes header):
        import array
        self.program = tuple(program)
        self._program = array.array("q", self.program)
        self._header = header

    def __call__(self, data):
        if type(data) is not bytes:
            return False
        cdef const unsigned char* d = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t end = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(self._header)
        if end < size or memcmp(d, PyBytes_AS_STRING(self._header), size) != 0:
            return False
        return self._run(d, size, end, 0, self._program.shape[0]) == end

    cdef Py_ssize_t _run(self, const unsigned char* d, Py_ssize_t p, Py_ssize_t end, Py_ssize_t pc,
                         Py_ssize_t stop) except -2:
        # the position after the values of program[pc:stop] read from p; NOT_SURE if not the plain shape
        cdef long long[::1] program = self._program
        cdef int64_t value
        cdef Py_ssize_t n, i, body
        cdef long long op
        cdef unsigned char b
        while pc < stop:
            op = program[pc]
            if op == OP_STRING:
                p = _string(d, p, end)
                pc += 1
            elif op == OP_BYTES:
                p = _length(d, p, end, &n)
                if p == NOT_SURE or n > end - p:
                    return NOT_SURE
                p += n
                pc += 1
            elif op == OP_INT or op == OP_LONG:
                p = _long(d, p, end, &value)
                if p == NOT_SURE:
                    return NOT_SURE
                if op == OP_INT and (value < -2147483648 or value > 2147483647):
                    return NOT_SURE
                pc += 1
            elif op == OP_UUID:
                if p + 37 > end or d[p] != 72:  # 36, zig-zag encoded
                    return NOT_SURE
                for i in range(36):
                    b = d[p + 1 + i]
                    if i == 8 or i == 13 or i == 18 or i == 23:
                        if b != 45:  # '-'
                            return NOT_SURE
                    elif not _is_hex(b):
                        return NOT_SURE
                p += 37
                pc += 1
            elif op == OP_RANGE:
                p = _long(d, p, end, &value)
                if p == NOT_SURE:
                    return NOT_SURE
                if value < program[pc + 1] or value >= program[pc + 2]:
                    return NOT_SURE
                pc += 3
            elif op == OP_ENUM:
                if p >= end:
                    return NOT_SURE
                b = d[p]
                p += 1
                if b & 1 or b >= 2 * program[pc + 1]:
                    return NOT_SURE
                pc += 2
            elif op == OP_NULLABLE:
                if p >= end:
                    return NOT_SURE
                b = d[p]
                p += 1
                body = program[pc + 2]
                if b == 2 * program[pc + 1]:
                    p = self._run(d, p, end, pc + 3, pc + 3 + body)
                elif b != 2 * (1 - program[pc + 1]):
                    return NOT_SURE
                pc += 3 + body
            elif op == OP_REPEAT:
                body = program[pc + 2]
                while True:
                    p = _length(d, p, end, &n)
                    if p == NOT_SURE:
                        return NOT_SURE
                    if n == 0:
                        break
                    if n > end - p:  # every item takes a byte at least: damaged (or not worth it)
                        return NOT_SURE
                    for i in range(n):
                        if program[pc + 1]:
                            p = _string(d, p, end)
                            if p == NOT_SURE:
                                return NOT_SURE
                        p = self._run(d, p, end, pc + 3, pc + 3 + body)
                        if p == NOT_SURE:
                            return NOT_SURE
                pc += 3 + body
            else:
                raise ValueError(f"checker program: unknown opcode {op} at {pc}")
            if p == NOT_SURE:
                return NOT_SURE
        return p


cdef inline Py_ssize_t _length(const unsigned char* d, Py_ssize_t p, Py_ssize_t end, Py_ssize_t* n) noexcept:
    # a length or block count; a negative one is not the plain shape
    cdef int64_t value
    p = _long(d, p, end, &value)
    if p == NOT_SURE or value < 0:
        return NOT_SURE
    n[0] = <Py_ssize_t>value
    return p


cdef Py_ssize_t _string(const unsigned char* d, Py_ssize_t p, Py_ssize_t end) except -2:
    # skip a strictly valid UTF-8 string (ASCII at C speed; other bytes through CPython's strict decoder)
    cdef Py_ssize_t n, i
    p = _length(d, p, end, &n)
    if p == NOT_SURE or n > end - p:
        return NOT_SURE
    for i in range(n):
        if d[p + i] >= 0x80:
            try:
                PyUnicode_DecodeUTF8(<const char*>(d + p), n, "strict")
            except UnicodeDecodeError:
                return NOT_SURE
            break
    return p + n


# ---- one sealed entry ------------------------------------------------------------------------------

cdef enum:
    HASH_SIZE = CHAIN_HASH_SIZE


cdef inline Py_ssize_t _put_bytes(unsigned char* out, Py_ssize_t p, const char* data, Py_ssize_t size) noexcept:
    p = p + put_long(out + p, size)
    memcpy(out + p, data, size)
    return p + size


def seal_event(bytes header, bytes chain_id, bytes prev_hash, int64_t seq, int64_t source_partition,
               int64_t source_offset, int64_t source_timestamp_micros, bytes event):
    """``(SealedEvent value, chain hash)`` of one raw event appended after ``prev_hash`` at ``seq``.

    ``header`` is the SealedEvent schema's single-object header and ``chain_id`` the chain id in
    UTF-8. The hash is :func:`pipeline.integrity.chain.chain_hash` of the event payload of
    :func:`pipeline.wire.sealed.event_payload`; the value is what the checked writer encodes for
    the record ``{chain_id, seq, prev_hash, hash, source_partition, source_offset,
    source_timestamp_micros, event}``. ValueError for what those two would refuse: a prev_hash
    that is not 32 bytes, a negative seq, a partition outside [0, 2**31), a negative offset or
    timestamp (none of which the sealer produces).
    """
    if PyBytes_GET_SIZE(prev_hash) != HASH_SIZE:
        raise ValueError(f"prev_hash must be {HASH_SIZE} bytes, found {PyBytes_GET_SIZE(prev_hash)} bytes")
    if seq < 0 or source_offset < 0 or source_timestamp_micros < 0:
        raise ValueError(f"seq, source_offset and source_timestamp_micros must not be negative, found "
                         f"{seq}, {source_offset}, {source_timestamp_micros}")
    if not 0 <= source_partition <= 2147483647:
        raise ValueError(f"source_partition must be in [0, 2**31), found {source_partition}")
    cdef Py_ssize_t event_size = PyBytes_GET_SIZE(event)
    cdef bytes hashed = event_hash_input(<const unsigned char*>PyBytes_AS_STRING(prev_hash), seq, source_partition,
                                         source_offset, source_timestamp_micros,
                                         <const unsigned char*>PyBytes_AS_STRING(event), event_size)
    cdef bytes digest = _sha256(hashed).digest()

    cdef Py_ssize_t header_size = PyBytes_GET_SIZE(header)
    cdef Py_ssize_t chain_id_size = PyBytes_GET_SIZE(chain_id)
    cdef Py_ssize_t size = (header_size + long_size(chain_id_size) + chain_id_size + long_size(seq)
                            + 2 * (1 + HASH_SIZE) + long_size(source_partition) + long_size(source_offset)
                            + long_size(source_timestamp_micros) + long_size(event_size) + event_size)
    cdef unsigned char* out
    cdef bytes value = PyBytes_FromStringAndSize(NULL, size)
    out = <unsigned char*>PyBytes_AS_STRING(value)
    memcpy(out, PyBytes_AS_STRING(header), header_size)
    cdef Py_ssize_t p = _put_bytes(out, header_size, PyBytes_AS_STRING(chain_id), chain_id_size)
    p = p + put_long(out + p, seq)
    p = _put_bytes(out, p, PyBytes_AS_STRING(prev_hash), HASH_SIZE)
    p = _put_bytes(out, p, PyBytes_AS_STRING(digest), HASH_SIZE)
    p = p + put_long(out + p, source_partition)
    p = p + put_long(out + p, source_offset)
    p = p + put_long(out + p, source_timestamp_micros)
    p = _put_bytes(out, p, PyBytes_AS_STRING(event), event_size)
    assert p == size
    return value, digest
