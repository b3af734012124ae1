"""Compiled OCSF rendering of sealed events: the fast path of :func:`pipeline.siem.ocsf.event_record`.

:class:`EventWriter` decodes a SealedEvent's nested AuditEvent bytes (the versions it was built
for, by header) and writes the OCSF JSON document directly, as the bytes ``orjson.dumps`` gives
for the reference's dict: same keys in the same order, strings escaped as orjson escapes them
(``"``, ``\\``, ``\\b \\f \\n \\r \\t``, other control characters as ``\\u00xx``, everything else
as UTF-8), integers in decimal. It only renders what it is sure of: at anything else (an event
class it does not write, such as a Detection Finding; a damaged or unusual encoding; invalid
UTF-8; a negative source coordinate; duplicate attribute keys) :meth:`EventWriter.render` returns
None and the caller maps the record with the readable reference, which decides and words the
outcome. The constant pieces (class names, severities, fingerprint keys) are given by
:mod:`pipeline.siem.fast`, which derives them from the reference's own tables.

:meth:`EventWriter.render_sealed_batch` is the production path of a batch made of sealed events
only (what the sealer writes between two checkpoints): it takes the SealedEvent values as they were
read, decodes them, checks their sequence against the checkpoint, builds the batch's Merkle tree
(libcrypto's SHA-256 into one buffer, every node hexed once) and writes each event with its audit
path, no Python object per record but the document; anything it does not take returns None and the
batch is mapped record by record (:meth:`EventWriter.render`, the reference for what that declines).
:meth:`EventWriter.render_sealed_lines` is the same for ``auditseal export``: the batch's documents as
one buffer of JSON lines, counted by class, no Python object per document at all.
tests/differential/test_ocsf_writer.py holds both equal to the reference.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport INT32_MAX, int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy

from pipeline.native.sha256 cimport SHA256_CTX, SHA256_Final, SHA256_Init, SHA256_Update
from pipeline.native.varint cimport read_long

import hashlib

cdef enum:
    MAX_ATTRIBUTES = 64
    ACTOR_TYPES = 4
    STATUSES = 4
    API_ACTIVITY = 6003
    AUTHENTICATION = 3002
    ENDPOINT_NONE = 0
    ENDPOINT_IP = 1
    ENDPOINT_NAME = 2

cdef const char* HEX = b"0123456789abcdef"
cdef const char* B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


cdef struct Buf:
    char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef struct Str:
    # A string field of the event: its UTF-8 bytes in the event buffer; length -1 for a null union branch.
    Py_ssize_t start
    Py_ssize_t length


cdef int reserve(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = b.size + extra, capacity = b.capacity if b.capacity else 8192
    cdef char* data
    if need <= b.capacity:
        return 0
    while capacity < need:
        capacity *= 2
    data = <char*>realloc(b.data, capacity)
    if data == NULL:
        raise MemoryError()
    b.data, b.capacity = data, capacity
    return 0


cdef inline int put(Buf* b, const char* s, Py_ssize_t n) except -1:
    if b.size + n > b.capacity:
        reserve(b, n)
    memcpy(b.data + b.size, s, n)
    b.size += n
    return 0


cdef inline int put_bytes(Buf* b, bytes s) except -1:
    return put(b, PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s))


cdef inline int put_char(Buf* b, char c) except -1:
    if b.size + 1 > b.capacity:
        reserve(b, 1)
    b.data[b.size] = c
    b.size += 1
    return 0


cdef int put_int(Buf* b, int64_t value) except -1:
    # decimal, as Python's int repr (and orjson) writes it
    cdef char digits[24]
    cdef int n = 0, i
    cdef uint64_t u = (<uint64_t>0 - <uint64_t>value) if value < 0 else <uint64_t>value
    while True:
        digits[n] = <char>(48 + u % 10)
        n += 1
        u //= 10
        if u == 0:
            break
    reserve(b, n + 1)
    if value < 0:
        b.data[b.size] = b'-'
        b.size += 1
    for i in range(n):
        b.data[b.size + i] = digits[n - 1 - i]
    b.size += n
    return 0


cdef unsigned char SAFE[256]  # 1 for a byte a JSON string holds as it is (not a control character, " or \\)
cdef int _byte
for _byte in range(256):
    SAFE[_byte] = _byte >= 0x20 and _byte != 0x22 and _byte != 0x5C


cdef int put_escaped(Buf* b, const unsigned char* s, Py_ssize_t n) except -1:
    # The inside of a JSON string (no quotes) as orjson writes it; s is valid UTF-8. Runs of bytes that need no
    # escape (nearly all of them) are copied whole.
    cdef Py_ssize_t i = 0, j = 0, start
    cdef unsigned char c
    cdef char* out
    reserve(b, n * 6)
    out = b.data + b.size
    while i < n:
        start = i
        while i < n and SAFE[s[i]]:
            i += 1
        if i > start:
            memcpy(out + j, s + start, i - start)
            j += i - start
            if i == n:
                break
        c = s[i]
        i += 1
        out[j] = b'\\'
        if c == 0x22 or c == 0x5C:
            out[j + 1] = <char>c
            j += 2
        elif c == 0x0A:
            out[j + 1] = b'n'
            j += 2
        elif c == 0x0D:
            out[j + 1] = b'r'
            j += 2
        elif c == 0x09:
            out[j + 1] = b't'
            j += 2
        elif c == 0x08:
            out[j + 1] = b'b'
            j += 2
        elif c == 0x0C:
            out[j + 1] = b'f'
            j += 2
        else:
            out[j + 1] = b'u'
            out[j + 2] = b'0'
            out[j + 3] = b'0'
            out[j + 4] = HEX[c >> 4]
            out[j + 5] = HEX[c & 15]
            j += 6
    b.size += j
    return 0


cdef inline int put_string(Buf* b, const unsigned char* s, Py_ssize_t n) except -1:
    put_char(b, b'"')
    put_escaped(b, s, n)
    put_char(b, b'"')
    return 0


cdef inline int put_field(Buf* b, const unsigned char* event, Str s) except -1:
    return put_string(b, event + s.start, s.length)


cdef int put_hex_raw(Buf* b, const unsigned char* s, Py_ssize_t n) except -1:
    # "<hex>" of n bytes
    cdef Py_ssize_t i
    reserve(b, 2 * n + 2)
    b.data[b.size] = b'"'
    for i in range(n):
        b.data[b.size + 1 + 2 * i] = HEX[s[i] >> 4]
        b.data[b.size + 2 + 2 * i] = HEX[s[i] & 15]
    b.data[b.size + 1 + 2 * n] = b'"'
    b.size += 2 * n + 2
    return 0


cdef inline int put_hex(Buf* b, bytes value) except -1:
    return put_hex_raw(b, <const unsigned char*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))


cdef int put_base64(Buf* b, const unsigned char* s, Py_ssize_t n) except -1:
    # standard alphabet, padded (binascii.b2a_base64 without the newline)
    cdef Py_ssize_t i = 0
    cdef unsigned int v
    cdef char* out
    reserve(b, (n + 2) // 3 * 4)
    out = b.data + b.size
    while i + 3 <= n:
        v = (s[i] << 16) | (s[i + 1] << 8) | s[i + 2]
        out[0] = B64[(v >> 18) & 63]
        out[1] = B64[(v >> 12) & 63]
        out[2] = B64[(v >> 6) & 63]
        out[3] = B64[v & 63]
        out += 4
        i += 3
    if n - i == 1:
        v = s[i] << 16
        out[0] = B64[(v >> 18) & 63]
        out[1] = B64[(v >> 12) & 63]
        out[2] = b'='
        out[3] = b'='
        out += 4
    elif n - i == 2:
        v = (s[i] << 16) | (s[i + 1] << 8)
        out[0] = B64[(v >> 18) & 63]
        out[1] = B64[(v >> 12) & 63]
        out[2] = B64[(v >> 6) & 63]
        out[3] = b'='
        out += 4
    b.size = out - b.data
    return 0


cdef bint valid_utf8(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    # Strict UTF-8 as Python decodes it: no overlong forms, no surrogates, nothing above U+10FFFF.
    cdef Py_ssize_t i = 0
    cdef unsigned char c
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
        elif 0xC2 <= c <= 0xDF:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif 0xE0 <= c <= 0xEF:
            if i + 2 >= n or (s[i + 1] & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80:
                return False
            if c == 0xE0 and s[i + 1] < 0xA0:
                return False
            if c == 0xED and s[i + 1] > 0x9F:
                return False
            i += 3
        elif 0xF0 <= c <= 0xF4:
            if i + 3 >= n or (s[i + 1] & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80 or (s[i + 3] & 0xC0) != 0x80:
                return False
            if c == 0xF0 and s[i + 1] < 0x90:
                return False
            if c == 0xF4 and s[i + 1] > 0x8F:
                return False
            i += 4
        else:
            return False
    return True


cdef struct Sealed:
    # A SealedEvent's values as the writer renders them: pointers into bytes the caller keeps alive.
    const unsigned char* chain   # chain_id, UTF-8
    Py_ssize_t chain_length
    int64_t seq
    const unsigned char* prev_hash
    Py_ssize_t prev_hash_length
    const unsigned char* hash
    Py_ssize_t hash_length
    int64_t partition
    int64_t source_offset
    int64_t source_micros
    const unsigned char* event   # the nested AuditEvent's single-object bytes
    Py_ssize_t event_length


cdef struct Event:
    Str event_id
    int64_t occurred_at
    Str actor_id
    int64_t actor_type
    Str source_ip
    Str user_agent
    Str session_id
    Str action
    Str resource_type
    Str resource_id
    int64_t status
    Str reason
    Str source_service
    Str request_id
    Str trace_id
    Py_ssize_t attributes   # number of pairs in keys/values
    Str keys[MAX_ATTRIBUTES]
    Str values[MAX_ATTRIBUTES]


cdef inline bint read_string(const unsigned char* data, Py_ssize_t* p, Py_ssize_t end, Str* out) noexcept nogil:
    cdef int64_t n
    if not read_long(data, p, end, &n) or n < 0 or n > end - p[0]:
        return False
    if not valid_utf8(data + p[0], <Py_ssize_t>n):
        return False
    out.start, out.length = p[0], <Py_ssize_t>n
    p[0] += <Py_ssize_t>n
    return True


cdef inline bint read_optional(const unsigned char* data, Py_ssize_t* p, Py_ssize_t end, Str* out) noexcept nogil:
    # ["null", "string"]
    cdef int64_t branch
    if not read_long(data, p, end, &branch):
        return False
    if branch == 0:
        out.start, out.length = 0, -1
        return True
    return branch == 1 and read_string(data, p, end, out)


cdef inline bint read_enum(const unsigned char* data, Py_ssize_t* p, Py_ssize_t end, int64_t symbols,
                           int64_t* out) noexcept nogil:
    return read_long(data, p, end, out) and 0 <= out[0] < symbols


cdef bint read_event(const unsigned char* data, Py_ssize_t p, Py_ssize_t end, int protected_arrays,
                     Event* e) noexcept nogil:
    # The AuditEvent v1 body from p, followed by protected_arrays arrays: 0 (v1), 1 (v2: protected_fields) or
    # 2 (v3: protected_fields, protected_subjects); True only if it ends exactly at end.
    cdef int64_t count, i, j, k, names, length
    cdef Str ignored
    if not (read_string(data, &p, end, &e.event_id) and read_long(data, &p, end, &e.occurred_at)
            and read_string(data, &p, end, &e.actor_id) and read_enum(data, &p, end, ACTOR_TYPES, &e.actor_type)
            and read_optional(data, &p, end, &e.source_ip) and read_optional(data, &p, end, &e.user_agent)
            and read_optional(data, &p, end, &e.session_id) and read_string(data, &p, end, &e.action)
            and read_string(data, &p, end, &e.resource_type) and read_string(data, &p, end, &e.resource_id)
            and read_enum(data, &p, end, STATUSES, &e.status) and read_optional(data, &p, end, &e.reason)
            and read_string(data, &p, end, &e.source_service) and read_optional(data, &p, end, &e.request_id)
            and read_optional(data, &p, end, &e.trace_id)):
        return False
    e.attributes = 0
    while True:  # map blocks; a negative count (block with its byte size) is left to the reference
        if not read_long(data, &p, end, &count) or count < 0:
            return False
        if count == 0:
            break
        if count > MAX_ATTRIBUTES - e.attributes:
            return False
        for i in range(count):
            if not (read_string(data, &p, end, &e.keys[e.attributes])
                    and read_string(data, &p, end, &e.values[e.attributes])):
                return False
            e.attributes += 1
    # a repeated key: the reference's dict keeps the first position and the last value; left to it
    for i in range(e.attributes):
        for j in range(i + 1, e.attributes):
            if e.keys[i].length == e.keys[j].length and \
                    memcmp(data + e.keys[i].start, data + e.keys[j].start, e.keys[i].length) == 0:
                return False
    if protected_arrays >= 1:
        while True:
            if not read_long(data, &p, end, &count) or count < 0:
                return False
            if count == 0:
                break
            for i in range(count):
                for k in range(4):  # field, subject, key_id, ciphertext: decoded, not shown
                    if not read_string(data, &p, end, &ignored):
                        return False
    if protected_arrays >= 2:
        while True:  # subject, key_id, fields (array of strings), ciphertext (bytes): decoded, not shown
            if not read_long(data, &p, end, &count) or count < 0:
                return False
            if count == 0:
                break
            for i in range(count):
                if not (read_string(data, &p, end, &ignored) and read_string(data, &p, end, &ignored)):
                    return False
                while True:
                    if not read_long(data, &p, end, &names) or names < 0:
                        return False
                    if names == 0:
                        break
                    for j in range(names):
                        if not read_string(data, &p, end, &ignored):
                            return False
                if not read_long(data, &p, end, &length) or length < 0 or length > end - p:
                    return False
                p += length
    return p == end


cdef bint ipv4_address(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    # ipaddress.IPv4Address's rule: four dot-separated decimal octets of ASCII digits, each 0..255,
    # at most 3 digits, no leading zero
    cdef Py_ssize_t i, digits = 0, dots = 0, value = 0
    cdef unsigned char c, first = 0
    for i in range(n):
        c = s[i]
        if c == b'.':
            if digits == 0:
                return False
            dots += 1
            digits = 0
            value = 0
        elif 0x30 <= c <= 0x39:
            if digits == 0:
                first = c
            elif first == b'0' or digits == 3:
                return False
            value = value * 10 + (c - 0x30)
            digits += 1
            if value > 255:
                return False
        else:
            return False
    return dots == 3 and digits > 0


cdef inline bint hextet(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef unsigned char c
    if n < 1 or n > 4:
        return False
    for i in range(n):
        c = s[i]
        if not (0x30 <= c <= 0x39 or 0x41 <= c <= 0x46 or 0x61 <= c <= 0x66):
            return False
    return True


cdef bint ipv6_address(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    # ipaddress.IPv6Address's rule (Python 3.11 _split_scope_id and _ip_int_from_string), step by step
    cdef Py_ssize_t i, count = 0, start = 0, skip = -1, hi, lo
    cdef Py_ssize_t starts[10]
    cdef Py_ssize_t lengths[10]
    for i in range(n):
        if s[i] == b'/':
            return False
    for i in range(n):
        if s[i] == b'%':  # a scope id: not empty, no second '%'
            if i == n - 1:
                return False
            for start in range(i + 1, n):
                if s[start] == b'%':
                    return False
            n = i
            break
    if n == 0:
        return False
    start = 0
    for i in range(n + 1):
        if i == n or s[i] == b':':
            if count == 10:
                return False  # over 9 parts even before an IPv4 suffix could add one
            starts[count], lengths[count] = start, i - start
            count += 1
            start = i + 1
    if count < 3:
        return False
    for i in range(lengths[count - 1]):
        if s[starts[count - 1] + i] == b'.':  # an IPv4 suffix: two valid hextets in its place
            if not ipv4_address(s + starts[count - 1], lengths[count - 1]):
                return False
            if count == 10:
                return False
            starts[count - 1], lengths[count - 1] = -1, 1
            starts[count], lengths[count] = -1, 1
            count += 1
            break
    if count > 9:
        return False
    for i in range(1, count - 1):
        if lengths[i] == 0:
            if skip != -1:
                return False
            skip = i
    if skip != -1:
        hi, lo = skip, count - skip - 1
        if lengths[0] == 0:
            hi -= 1
            if hi:
                return False
        if lengths[count - 1] == 0:
            lo -= 1
            if lo:
                return False
        if 8 - (hi + lo) < 1:
            return False
    else:
        if count != 8 or lengths[0] == 0 or lengths[count - 1] == 0:
            return False
        hi, lo = count, 0
    for i in range(hi):
        if starts[i] != -1 and not hextet(s + starts[i], lengths[i]):
            return False
    for i in range(count - lo, count):
        if starts[i] != -1 and not hextet(s + starts[i], lengths[i]):
            return False
    return True


cdef int endpoint_kind(const unsigned char* data, Str s) noexcept:
    # ENDPOINT_NONE for no source_ip, ENDPOINT_IP for an address as ipaddress.ip_address takes it
    # (IPv4Address, else IPv6Address), ENDPOINT_NAME for anything else
    if s.length <= 0:
        return ENDPOINT_NONE
    if ipv4_address(data + s.start, s.length) or ipv6_address(data + s.start, s.length):
        return ENDPOINT_IP
    return ENDPOINT_NAME


def is_ip_address(str text):
    """Whether the compiled writer takes ``text`` for an IP address (held equal to
    :func:`pipeline.siem.ocsf.is_ip_address` by the differential tests)."""
    cdef bytes data = text.encode("utf-8", "surrogatepass")
    cdef Str s
    s.start, s.length = 0, PyBytes_GET_SIZE(data)
    return endpoint_kind(<const unsigned char*>PyBytes_AS_STRING(data), s) == ENDPOINT_IP


cdef inline bint present(Str s) noexcept nogil:
    # the reference's truthiness: neither None nor ""
    return s.length > 0


def tree_levels(list record_hashes):
    """:func:`pipeline.integrity.merkle.tree_levels` of the record leaf hashes (SHA-256 of 0x00 || hash, by
    hashlib) of ``record_hashes``; None if one is not 32 bytes (the reference then names the problem)."""
    cdef Py_ssize_t index, count
    cdef bytearray leaf_data = bytearray(33), node_data = bytearray(65)
    cdef unsigned char* leaf_input = <unsigned char*>PyByteArray_AS_STRING(leaf_data)
    cdef unsigned char* node_input = <unsigned char*>PyByteArray_AS_STRING(node_data)
    cdef list level = [], parents, levels
    for item in record_hashes:
        if type(item) is not bytes or PyBytes_GET_SIZE(item) != 32:
            return None
    if not record_hashes:
        return []
    sha256 = hashlib.sha256
    leaf_input[0], node_input[0] = 0, 1
    for item in record_hashes:
        memcpy(leaf_input + 1, PyBytes_AS_STRING(item), 32)
        level.append(sha256(leaf_data).digest())
    levels = [level]
    while len(level) > 1:
        count = len(level)
        parents = []
        for index in range(0, count - 1, 2):
            memcpy(node_input + 1, PyBytes_AS_STRING(<bytes>level[index]), 32)
            memcpy(node_input + 33, PyBytes_AS_STRING(<bytes>level[index + 1]), 32)
            parents.append(sha256(node_data).digest())
        if count % 2:
            parents.append(level[count - 1])
        level = parents
        levels.append(level)
    return levels


def audit_paths(list levels):
    """The JSON array (``["<hex>", ...]``, as orjson writes ``[node.hex() for node in path]``) of every leaf's
    audit path in the tree whose levels are ``levels`` (:func:`pipeline.integrity.merkle.tree_levels`):
    the sibling on each level below the root, where there is one (:func:`pipeline.integrity.merkle.audit_path`)."""
    cdef Py_ssize_t leaves, index, at, sibling, depth, count
    cdef list paths = []
    cdef list level
    cdef Buf b
    b.data, b.size, b.capacity = NULL, 0, 0
    if not levels:
        return paths
    leaves = len(<list>levels[0])
    depth = len(levels) - 1
    try:
        for index in range(leaves):
            b.size = 0
            put_char(&b, b'[')
            at, count = index, 0
            for i in range(depth):
                level = <list>levels[i]
                sibling = at ^ 1
                if sibling < len(level):
                    if count:
                        put_char(&b, b',')
                    put_hex(&b, <bytes>level[sibling])
                    count += 1
                at >>= 1
            put_char(&b, b']')
            paths.append(PyBytes_FromStringAndSize(b.data, b.size))
    finally:
        free(b.data)
    return paths


cdef struct Tree:
    # A batch's Merkle tree (merkle.tree_levels' levels, leaves first) in two C buffers: each node's 32 bytes
    # and its 64 hex digits, level d at node index starts[d] with counts[d] nodes; depth = levels - 1
    unsigned char* nodes
    char* hex
    Py_ssize_t starts[65]
    Py_ssize_t counts[65]
    int depth


cdef inline void prefixed_sha256(unsigned char prefix, const unsigned char* a, const unsigned char* b,
                                 unsigned char* out) noexcept nogil:
    # SHA-256(prefix || a || b), b optional (NULL): the RFC 6962 leaf (0x00) and node (0x01) hashes
    cdef SHA256_CTX context
    SHA256_Init(&context)
    SHA256_Update(&context, &prefix, 1)
    SHA256_Update(&context, a, 32)
    if b != NULL:
        SHA256_Update(&context, b, 32)
    SHA256_Final(out, &context)


cdef int build_tree(Tree* t, Sealed* entries, Py_ssize_t n) except -1:
    # merkle.tree_levels of the record leaf hashes of n >= 1 entries' 32-byte hashes: a level's odd last node
    # is carried up unchanged
    cdef Py_ssize_t count = n, total = 0, j, i
    cdef unsigned char* level
    cdef unsigned char* parents
    cdef int d = 0
    while True:
        t.starts[d], t.counts[d] = total, count
        total += count
        if count == 1:
            break
        count = (count + 1) // 2
        d += 1
    t.depth = d
    t.nodes = <unsigned char*>malloc(total * 32)
    t.hex = <char*>malloc(total * 64)
    if t.nodes == NULL or t.hex == NULL:
        raise MemoryError()
    for j in range(n):
        prefixed_sha256(0, entries[j].hash, NULL, t.nodes + 32 * j)
    for d in range(t.depth):
        level, parents = t.nodes + 32 * t.starts[d], t.nodes + 32 * t.starts[d + 1]
        count = t.counts[d]
        for j in range(0, count - 1, 2):
            prefixed_sha256(1, level + 32 * j, level + 32 * (j + 1), parents + 32 * (j // 2))
        if count % 2:
            memcpy(parents + 32 * (count // 2), level + 32 * (count - 1), 32)
    for j in range(total * 32):
        i = 2 * j
        t.hex[i] = HEX[t.nodes[j] >> 4]
        t.hex[i + 1] = HEX[t.nodes[j] & 15]
    return 0


cdef int put_audit_path(Buf* b, Tree* t, Py_ssize_t index) except -1:
    # the JSON array audit_paths writes for leaf index: the sibling on each level below the root, where there is one
    cdef Py_ssize_t at = index, sibling
    cdef int d, count = 0
    reserve(b, 2 + 67 * t.depth)
    put_char(b, b'[')
    for d in range(t.depth):
        sibling = at ^ 1
        if sibling < t.counts[d]:
            if count:
                put_char(b, b',')
            put_char(b, b'"')
            put(b, t.hex + 64 * (t.starts[d] + sibling), 64)
            put_char(b, b'"')
            count += 1
        at >>= 1
    put_char(b, b']')
    return 0


cdef bint read_sealed(const unsigned char* data, Py_ssize_t end, Sealed* s) noexcept nogil:
    # A SealedEvent v1 body after its 10-byte header: True only if it ends exactly at end, the chain id is
    # UTF-8 and source_partition an Avro int
    cdef Py_ssize_t p = 10
    cdef int64_t n
    if not read_long(data, &p, end, &n) or n < 0 or n > end - p or not valid_utf8(data + p, <Py_ssize_t>n):
        return False
    s.chain, s.chain_length = data + p, <Py_ssize_t>n
    p += <Py_ssize_t>n
    if not read_long(data, &p, end, &s.seq):
        return False
    if not read_long(data, &p, end, &n) or n < 0 or n > end - p:
        return False
    s.prev_hash, s.prev_hash_length = data + p, <Py_ssize_t>n
    p += <Py_ssize_t>n
    if not read_long(data, &p, end, &n) or n < 0 or n > end - p:
        return False
    s.hash, s.hash_length = data + p, <Py_ssize_t>n
    p += <Py_ssize_t>n
    if not (read_long(data, &p, end, &s.partition) and -2147483648 <= s.partition <= 2147483647
            and read_long(data, &p, end, &s.source_offset) and read_long(data, &p, end, &s.source_micros)):
        return False
    if not read_long(data, &p, end, &n) or n < 0 or n > end - p:
        return False
    s.event, s.event_length = data + p, <Py_ssize_t>n
    p += <Py_ssize_t>n
    return p == end


cdef bint read_batch(list raw, bytes sealed_header, int64_t first_seq, int64_t last_seq, bytes merkle_root,
                     Sealed** entries, Tree* tree) except -1:
    # A whole batch's raw values decoded into entries (malloc'd, the caller frees it, and the tree's buffers) and
    # its tree built: False when the values are not exactly SealedEvents first_seq..last_seq with sealed_header and
    # 32-byte hashes rooting to merkle_root
    cdef Py_ssize_t n = len(raw), i
    cdef Sealed* read
    cdef bytes value
    if n == 0 or last_seq - first_seq != n - 1 or PyBytes_GET_SIZE(merkle_root) != 32 \
            or PyBytes_GET_SIZE(sealed_header) != 10:
        return False
    read = entries[0] = <Sealed*>malloc(n * sizeof(Sealed))
    if read == NULL:
        raise MemoryError()
    for i in range(n):
        value = <bytes>(<tuple>raw[i])[2]
        if PyBytes_GET_SIZE(value) < 10 or memcmp(PyBytes_AS_STRING(value), PyBytes_AS_STRING(sealed_header), 10) != 0:
            return False
        if not read_sealed(<const unsigned char*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), &read[i]) \
                or read[i].seq != first_seq + i or read[i].hash_length != 32:
            return False
    build_tree(tree, read, n)
    return memcmp(tree.nodes + 32 * tree.starts[tree.depth], PyBytes_AS_STRING(merkle_root), 32) == 0


cdef class EventWriter:
    """``render(fields, offset, timestamp_ms, signature, checkpoint, leaf_index, tree_size, audit_path,
    evidence_error)`` -> ``(json bytes, class_uid, time_ms)`` of one sealed event, or None (module docstring).

    ``fields`` are a SealedEvent's values in schema order (chain_id, seq, prev_hash, hash,
    source_partition, source_offset, source_timestamp_micros, event); ``signature`` and
    ``checkpoint`` the covering checkpoint's OCSF signature and evidence as JSON bytes (None: no
    covering checkpoint), ``audit_path`` the entry's audit path as :func:`audit_paths` writes it.
    """

    cdef dict headers          # AuditEvent single-object header -> its protected arrays (0 v1, 1 v2, 2 v3)
    cdef dict classes          # verb (UTF-8 bytes) -> (class_uid, head fragment up to "time":)
    cdef tuple other_class     # (class_uid, head fragment) of a verb the table does not name
    cdef bytes alert_action, detector_service
    cdef list severity, status, status_symbol, user_type
    cdef bytes metadata_open, metadata_mid, sealed_open, fingerprint_open, fingerprint_close, authority
    cdef Buf buf

    def __init__(self, dict headers, dict classes, tuple other_class, bytes alert_action, bytes detector_service,
                 list severity, list status, list status_symbol, list user_type, bytes metadata_open,
                 bytes metadata_mid, bytes sealed_open, bytes fingerprint_open, bytes fingerprint_close,
                 bytes authority):
        if len(severity) != STATUSES or len(status) != STATUSES or len(status_symbol) != STATUSES \
                or len(user_type) != ACTOR_TYPES:
            raise ValueError("one fragment per status and per actor type")
        self.headers, self.classes, self.other_class = headers, classes, other_class
        self.alert_action, self.detector_service = alert_action, detector_service
        self.severity, self.status, self.status_symbol, self.user_type = severity, status, status_symbol, user_type
        self.metadata_open, self.metadata_mid, self.sealed_open = metadata_open, metadata_mid, sealed_open
        self.fingerprint_open, self.fingerprint_close, self.authority = fingerprint_open, fingerprint_close, authority

    def __dealloc__(self):
        free(self.buf.data)

    def render_batch(self, list held, problem, signature, checkpoint, list paths, Py_ssize_t tree_size, document):
        """:meth:`render` of every record of ``held`` (batches' held records, in order) that has ``fields``:
        a list with ``document(json, class_uid, time_ms, problem is not None)`` in their places and None
        where the caller maps (no ``fields``, or declined). With ``paths`` (the covering checkpoint's
        :func:`audit_paths`), the n-th entry (a record with a ``seq``) is leaf n of a tree of ``tree_size``."""
        cdef list out = []
        cdef Py_ssize_t leaf = 0
        cdef bint unsigned = problem is not None
        new = tuple.__new__
        for h in held:
            fields = h.fields
            if paths is not None and h.seq is not None:
                leaf += 1
            if fields is None:
                out.append(None)
                continue
            if paths is None:
                rendered = self.render(fields, h.offset, h.timestamp_ms, None, None, 0, 0, None, problem)
            else:
                rendered = self.render(fields, h.offset, h.timestamp_ms, signature, checkpoint, leaf - 1, tree_size,
                                       paths[leaf - 1], problem)
            if rendered is None:
                out.append(None)
            else:
                out.append(new(document, (rendered[0], rendered[1], rendered[2], unsigned)))
        return out

    def tree_levels(self, list record_hashes):
        """:func:`tree_levels`."""
        return tree_levels(record_hashes)

    def audit_paths(self, list levels):
        """:func:`audit_paths` (the JSON audit path of every leaf, for :meth:`render`)."""
        return audit_paths(levels)

    def render_sealed_batch(self, list raw, bytes sealed_header, int64_t first_seq, int64_t last_seq,
                            bytes merkle_root, bytes signature, bytes checkpoint, document):
        """The documents of a whole batch read as raw values, or None: ``raw`` holds ``(offset, timestamp_ms,
        value)`` of every record held before the checkpoint ``first_seq..last_seq`` (root ``merkle_root``;
        ``signature`` and ``checkpoint`` its OCSF signature and evidence as JSON bytes), each value a
        SealedEvent with ``sealed_header``. The writer decodes each value, checks that the entries are exactly
        first_seq..last_seq with 32-byte hashes rooting to merkle_root, builds the tree (libcrypto SHA-256)
        and renders every event with its audit path: ``document(json, class_uid, time_ms, False)`` each, in
        order. None at the first thing it does not take (a damaged or unusual value, another sequence, another
        root, an event it declines): the caller then maps the batch record by record, which decides and words
        the outcome."""
        cdef Py_ssize_t n = len(raw), i
        cdef Sealed* entries = NULL
        cdef Tree tree
        cdef int64_t time_ms, class_uid
        cdef Buf* b = &self.buf
        cdef list out = []
        tree.nodes, tree.hex = NULL, NULL
        new = tuple.__new__
        try:
            if not read_batch(raw, sealed_header, first_seq, last_seq, merkle_root, &entries, &tree):
                return None
            for i in range(n):
                item = <tuple>raw[i]
                b.size = 0
                class_uid = self._put(&entries[i], item[0], item[1], signature, checkpoint, i, n, None, &tree, None,
                                      &time_ms)
                if class_uid < 0:
                    return None
                out.append(new(document, (PyBytes_FromStringAndSize(b.data, b.size), class_uid, time_ms, False)))
            return out
        finally:
            free(entries)
            free(tree.nodes)
            free(tree.hex)

    def render_sealed_lines(self, list raw, bytes sealed_header, int64_t first_seq, int64_t last_seq,
                            bytes merkle_root, bytes signature, bytes checkpoint, int64_t since_ms, int64_t until_ms):
        """:meth:`render_sealed_batch` as JSON lines, for ``auditseal export``: ``(lines, written, by_class)``
        or None where that returns None. ``lines`` holds the documents whose ``time`` is in
        ``[since_ms, until_ms)``, each followed by a newline, in order (the same bytes as those documents'
        ``json``); ``written`` counts them, ``by_class`` counts every document rendered by class_uid. One
        buffer for the batch: no Python object per document."""
        cdef Py_ssize_t n = len(raw), i, start
        cdef Sealed* entries = NULL
        cdef Tree tree
        cdef int64_t time_ms, class_uid, written = 0
        cdef Buf* b = &self.buf
        cdef dict by_class = {}
        tree.nodes, tree.hex = NULL, NULL
        try:
            if not read_batch(raw, sealed_header, first_seq, last_seq, merkle_root, &entries, &tree):
                return None
            b.size = 0
            for i in range(n):
                item = <tuple>raw[i]
                start = b.size
                class_uid = self._put(&entries[i], item[0], item[1], signature, checkpoint, i, n, None, &tree, None,
                                      &time_ms)
                if class_uid < 0:
                    return None
                by_class[class_uid] = by_class.get(class_uid, 0) + 1
                if time_ms < since_ms or time_ms >= until_ms:
                    b.size = start
                else:
                    put_char(b, b'\n')
                    written += 1
            return PyBytes_FromStringAndSize(b.data, b.size), written, by_class
        finally:
            free(entries)
            free(tree.nodes)
            free(tree.hex)

    def render(self, tuple fields, int64_t offset, timestamp_ms, signature, checkpoint, Py_ssize_t leaf_index,
               Py_ssize_t tree_size, bytes audit_path, evidence_error):
        cdef Sealed sealed
        cdef bytes chain, event
        if len(fields) != 8 or type(fields[7]) is not bytes or type(fields[0]) is not str \
                or type(fields[2]) is not bytes or type(fields[3]) is not bytes:
            return None
        try:
            chain = (<str>fields[0]).encode("utf-8")
        except UnicodeEncodeError:
            return None  # a lone surrogate: orjson refuses it in the reference, which raises
        event = fields[7]
        sealed.chain, sealed.chain_length = <const unsigned char*>PyBytes_AS_STRING(chain), PyBytes_GET_SIZE(chain)
        sealed.seq = fields[1]
        sealed.prev_hash = <const unsigned char*>PyBytes_AS_STRING(<bytes>fields[2])
        sealed.prev_hash_length = PyBytes_GET_SIZE(<bytes>fields[2])
        sealed.hash = <const unsigned char*>PyBytes_AS_STRING(<bytes>fields[3])
        sealed.hash_length = PyBytes_GET_SIZE(<bytes>fields[3])
        sealed.partition, sealed.source_offset, sealed.source_micros = fields[4], fields[5], fields[6]
        sealed.event, sealed.event_length = <const unsigned char*>PyBytes_AS_STRING(event), PyBytes_GET_SIZE(event)
        cdef int64_t time_ms, class_uid
        self.buf.size = 0
        class_uid = self._put(&sealed, offset, timestamp_ms, signature, checkpoint, leaf_index, tree_size, audit_path,
                              NULL, evidence_error, &time_ms)
        if class_uid < 0:
            return None
        return PyBytes_FromStringAndSize(self.buf.data, self.buf.size), class_uid, time_ms

    cdef int64_t _put(self, Sealed* sealed, int64_t offset, object timestamp_ms, object signature,
                      object checkpoint, Py_ssize_t leaf_index, Py_ssize_t tree_size, object audit_path,
                      Tree* tree, object evidence_error, int64_t* time_out) except -2:
        # One sealed event's document appended to the buffer: its class_uid (its time_ms in time_out), or -1 when
        # declined (the buffer's size is then the caller's to reset). The audit path is audit_path (its JSON) or,
        # with tree, leaf leaf_index's path in that tree.
        cdef Event e
        cdef Buf* b = &self.buf
        cdef const unsigned char* ev = sealed.event
        cdef const unsigned char* chain = sealed.chain
        cdef Py_ssize_t chain_length = sealed.chain_length
        cdef Py_ssize_t size = sealed.event_length, header_size = 10, verb_start, i
        cdef int64_t seq, partition, source_offset, source_micros, time_ms, class_uid
        cdef bytes head
        cdef object protected
        cdef int endpoint
        if size < header_size:
            return -1
        protected = self.headers.get(PyBytes_FromStringAndSize(<const char*>ev, header_size))
        if protected is None:
            return -1
        if not read_event(ev, header_size, size, protected, &e):
            return -1
        endpoint = endpoint_kind(ev, e.source_ip)
        seq, partition, source_offset, source_micros = (sealed.seq, sealed.partition, sealed.source_offset,
                                                         sealed.source_micros)
        if partition < 0 or partition > INT32_MAX or source_offset < 0 or source_micros < 0:
            return -1  # the reference's payload packing refuses these: it raises, not this path
        verb_start = e.action.start
        for i in range(e.action.start, e.action.start + e.action.length):
            if ev[i] == b'.':
                verb_start = i + 1
        found = self.classes.get(PyBytes_FromStringAndSize(<const char*>ev + verb_start,
                                                           e.action.start + e.action.length - verb_start),
                                 self.other_class)
        class_uid = found[0]
        head = found[1]
        if class_uid != AUTHENTICATION and self._is_alert(ev, &e):
            return -1  # a Detection Finding: the reference writes it
        try:
            error = None if evidence_error is None else (<str>evidence_error).encode("utf-8")
        except UnicodeEncodeError:
            return -1  # a lone surrogate: orjson refuses it in the reference, which raises
        time_ms = e.occurred_at // 1000
        if e.occurred_at % 1000 != 0 and e.occurred_at < 0:
            time_ms -= 1  # floor division, as the reference's //

        time_out[0] = time_ms
        put_bytes(b, head)
        put_int(b, time_ms)
        put_bytes(b, <bytes>self.severity[e.status])
        put_bytes(b, self.metadata_open)
        put_char(b, b'"')
        put_escaped(b, chain, chain_length)
        put_char(b, b':')
        put_int(b, seq)
        put_char(b, b'"')
        put_bytes(b, self.metadata_mid)
        put_field(b, ev, e.event_id)
        if timestamp_ms is not None:
            put_bytes(b, b',"logged_time":')
            put_int(b, timestamp_ms)
        if present(e.request_id):
            put_bytes(b, b',"correlation_uid":')
            put_field(b, ev, e.request_id)
        put_char(b, b'}')
        put_bytes(b, <bytes>self.status[e.status])
        if present(e.reason):
            put_bytes(b, b',"status_detail":')
            put_field(b, ev, e.reason)
        put_bytes(b, b',"message":"')
        put_escaped(b, ev + e.actor_id.start, e.actor_id.length)
        put_char(b, b' ')
        put_escaped(b, ev + e.action.start, e.action.length)
        put_char(b, b' ')
        put_escaped(b, ev + e.resource_type.start, e.resource_type.length)
        put_char(b, b'/')
        put_escaped(b, ev + e.resource_id.start, e.resource_id.length)
        put_bytes(b, b': ')
        put_bytes(b, <bytes>self.status_symbol[e.status])
        put_char(b, b'"')
        if class_uid == API_ACTIVITY:
            put_bytes(b, b',"actor":{"user":')
            self._user(ev, &e)
            if present(e.session_id):
                put_bytes(b, b',"session":{"uid":')
                put_field(b, ev, e.session_id)
                put_char(b, b'}')
            put_bytes(b, b'},"api":{"operation":')
            put_field(b, ev, e.action)
            put_bytes(b, b',"service":{"name":')
            put_field(b, ev, e.source_service)
            put_char(b, b'}')
            if present(e.request_id):
                put_bytes(b, b',"request":{"uid":')
                put_field(b, ev, e.request_id)
                put_char(b, b'}')
            put_char(b, b'}')
            self._endpoint(ev, &e, endpoint)
            put_bytes(b, b',"resources":[')
            self._resource(ev, &e)
            put_char(b, b']')
        else:  # AUTHENTICATION
            put_bytes(b, b',"user":')
            self._user(ev, &e)
            self._endpoint(ev, &e, endpoint)
            put_bytes(b, b',"service":{"name":')
            put_field(b, ev, e.source_service)
            put_char(b, b'}')
            if present(e.session_id):
                put_bytes(b, b',"session":{"uid":')
                put_field(b, ev, e.session_id)
                put_char(b, b'}')
        if present(e.user_agent):
            put_bytes(b, b',"http_request":{"user_agent":')
            put_field(b, ev, e.user_agent)
            put_char(b, b'}')

        # the record_integrity attestation (ocsf._entry_attestation)
        put_bytes(b, b',"attestation_list":[{"uid":')
        self._uid(chain, chain_length, seq)
        put_bytes(b, b',"authority_uid":')
        put_bytes(b, self.authority)
        put_bytes(b, b',"chain_uid":')
        put_string(b, chain, chain_length)
        put_bytes(b, b',"fingerprint":')
        self._fingerprint(sealed.hash, sealed.hash_length)
        if seq > 0:
            put_bytes(b, b',"prev_event":{"uid":')
            self._uid(chain, chain_length, seq - 1)
            put_bytes(b, b',"fingerprint":')
            self._fingerprint(sealed.prev_hash, sealed.prev_hash_length)
            put_char(b, b'}')
        if signature is not None:
            put_bytes(b, b',"signatures":[')
            put_bytes(b, <bytes>signature)
            put_char(b, b']')
        put_bytes(b, b'}]')

        # unmapped.auditseal (ocsf._entry_evidence)
        put_bytes(b, b',"unmapped":{"auditseal":{"version":1,"kind":"event","chain_id":')
        put_string(b, chain, chain_length)
        put_bytes(b, b',"seq":')
        put_int(b, seq)
        put_bytes(b, b',"prev_hash":')
        put_hex_raw(b, sealed.prev_hash, sealed.prev_hash_length)
        put_bytes(b, b',"hash":')
        put_hex_raw(b, sealed.hash, sealed.hash_length)
        put_bytes(b, b',"entry":"')
        self._entry(partition, source_offset, source_micros, ev, size)
        put_bytes(b, b'","source":{"partition":')
        put_int(b, partition)
        put_bytes(b, b',"offset":')
        put_int(b, source_offset)
        put_bytes(b, b',"timestamp_micros":')
        put_int(b, source_micros)
        put_bytes(b, b'},"sealed":')
        put_bytes(b, self.sealed_open)
        put_int(b, offset)
        if timestamp_ms is not None:
            put_bytes(b, b',"timestamp_ms":')
            put_int(b, timestamp_ms)
        put_char(b, b'}')
        if checkpoint is not None:
            put_bytes(b, b',"checkpoint":')
            put_bytes(b, <bytes>checkpoint)
            put_bytes(b, b',"inclusion":{"leaf_index":')
            put_int(b, leaf_index)
            put_bytes(b, b',"tree_size":')
            put_int(b, tree_size)
            put_bytes(b, b',"audit_path":')
            if tree != NULL:
                put_audit_path(b, tree, leaf_index)
            else:
                put_bytes(b, <bytes>audit_path)
            put_char(b, b'}')
        if error is not None:
            put_bytes(b, b',"evidence_error":')
            put_string(b, <const unsigned char*>PyBytes_AS_STRING(error), PyBytes_GET_SIZE(error))
        put_char(b, b'}')
        if e.attributes:
            put_bytes(b, b',"attributes":{')
            for i in range(e.attributes):
                if i:
                    put_char(b, b',')
                put_field(b, ev, e.keys[i])
                put_char(b, b':')
                put_field(b, ev, e.values[i])
            put_char(b, b'}')
        if present(e.trace_id):
            put_bytes(b, b',"trace_id":')
            put_field(b, ev, e.trace_id)
        put_bytes(b, b'}}')
        return class_uid

    cdef bint _is_alert(self, const unsigned char* ev, Event* e):
        cdef bytes action = self.alert_action, service = self.detector_service
        return (e.action.length == PyBytes_GET_SIZE(action)
                and memcmp(ev + e.action.start, PyBytes_AS_STRING(action), e.action.length) == 0
                and e.source_service.length == PyBytes_GET_SIZE(service)
                and memcmp(ev + e.source_service.start, PyBytes_AS_STRING(service), e.source_service.length) == 0)

    cdef int _user(self, const unsigned char* ev, Event* e) except -1:
        cdef Buf* b = &self.buf
        put_bytes(b, b'{"uid":')
        put_field(b, ev, e.actor_id)
        put_bytes(b, b',"name":')
        put_field(b, ev, e.actor_id)
        put_bytes(b, <bytes>self.user_type[e.actor_type])
        return 0

    cdef int _endpoint(self, const unsigned char* ev, Event* e, int endpoint) except -1:
        cdef Buf* b = &self.buf
        if endpoint == ENDPOINT_IP:
            put_bytes(b, b',"src_endpoint":{"ip":')
            put_field(b, ev, e.source_ip)
            put_bytes(b, b',"name":')
            put_field(b, ev, e.source_ip)
            put_char(b, b'}')
        elif endpoint == ENDPOINT_NAME:
            put_bytes(b, b',"src_endpoint":{"name":')
            put_field(b, ev, e.source_ip)
            put_char(b, b'}')
        else:
            put_bytes(b, b',"src_endpoint":{"name":"unknown"}')
        return 0

    cdef int _resource(self, const unsigned char* ev, Event* e) except -1:
        cdef Buf* b = &self.buf
        put_bytes(b, b'{"type":')
        put_field(b, ev, e.resource_type)
        put_bytes(b, b',"uid":')
        put_field(b, ev, e.resource_id)
        put_bytes(b, b',"name":')
        put_field(b, ev, e.resource_id)
        put_char(b, b'}')
        return 0

    cdef int _uid(self, const unsigned char* chain, Py_ssize_t chain_length, int64_t seq) except -1:
        cdef Buf* b = &self.buf
        put_char(b, b'"')
        put_escaped(b, chain, chain_length)
        put_char(b, b':')
        put_int(b, seq)
        put_char(b, b'"')
        return 0

    cdef int _fingerprint(self, const unsigned char* s, Py_ssize_t n) except -1:
        cdef Buf* b = &self.buf
        cdef Py_ssize_t i
        put_bytes(b, self.fingerprint_open)
        reserve(b, 2 * n)
        for i in range(n):
            b.data[b.size + 2 * i] = HEX[s[i] >> 4]
            b.data[b.size + 2 * i + 1] = HEX[s[i] & 15]
        b.size += 2 * n
        put_bytes(b, self.fingerprint_close)
        return 0

    cdef int _entry(self, int64_t partition, int64_t source_offset, int64_t source_micros,
                    const unsigned char* ev, Py_ssize_t size) except -1:
        # base64 of pipeline.wire.sealed.event_payload: 0x01 || u32be || u64be || u64be || event bytes
        cdef unsigned char prefix[21]
        cdef Buf* b = &self.buf
        cdef Py_ssize_t i
        prefix[0] = 0x01
        for i in range(4):
            prefix[1 + i] = <unsigned char>((<uint64_t>partition >> (8 * (3 - i))) & 0xFF)
        for i in range(8):
            prefix[5 + i] = <unsigned char>((<uint64_t>source_offset >> (8 * (7 - i))) & 0xFF)
            prefix[13 + i] = <unsigned char>((<uint64_t>source_micros >> (8 * (7 - i))) & 0xFF)
        # 21 bytes = 7 whole base64 groups, so the prefix and the event encode separately with the same result
        put_base64(b, prefix, 21)
        put_base64(b, ev, size)
        return 0
