"""The sink's per-record work on one batch, compiled: one pass over the records of an archive object.

:class:`BatchScan` is the compiled twin of :mod:`pipeline.archive.container`'s readable functions,
which stay the reference (``build_object(..., reference=True)``; the differential tests hold the
two byte-identical on generated and damaged batches). One loop over a batch's
``(offset, timestamp ms, value)`` records computes what ``summarise``, ``query_index`` and
``container_bytes`` compute:

- each record's kind, from its single-object header, and the count per kind;
- each chain's first seq, last seq and entry count (``entry_position`` of events, rejections, gaps);
- the query index's fields of each event (``SealedCodecs.decode_fields`` then
  ``read_event_index_fields``): occurred_at range, distinct actor.id and resource.id;
- the smallest and largest Kafka timestamp;
- the ``ArchivedRecord`` encoding of every record, cut into the OCF's blocks exactly where
  fastavro's writer cuts them (a block closes after the record that brings it to ``sync_interval``
  bytes), uncompressed: the caller adds the container header, the codec and the sync markers.

It never judges damage itself: where the bytes are not exactly what the fast path reads, the
record's checkpoint reference or index fields are asked of the readable functions (``checkpoint_ref``,
``index_fields``), which decide. A batch of a shape it does not take (a value that is not ``bytes``,
a number past 64 bits) gives None, and the caller builds the object the readable way.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from pipeline.native.event_spans cimport HeadSpans, read_head_spans
from pipeline.native.event_spans cimport span as read_span
from pipeline.native.varint cimport MAX_VARINT_BYTES, put_long, read_long

import hashlib

from pipeline.native.flat_reader import type_codes

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    long long PyLong_AsLongLongAndOverflow(object number, int* overflow) except? -1

cdef enum:
    MAX_HEADERS = 32
    MAX_FIELDS = 64
    MAX_KINDS = 16
    # what a kind's records take part in
    ROLE_NONE = 0
    ROLE_ENTRY = 1       # a chain entry: chain_id and seq lead its body
    ROLE_EVENT = 2       # an entry whose AuditEvent goes into the query index
    ROLE_CHECKPOINT = 3
    # field type codes of pipeline.native.flat_reader.type_codes
    STRING = 0
    BYTES = 1
    INT = 2
    LONG = 3


cdef struct Buffer:
    unsigned char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _reserve(Buffer* out, Py_ssize_t more) except -1:
    cdef Py_ssize_t capacity = out.capacity if out.capacity else 65536
    cdef unsigned char* data
    if out.size + more <= out.capacity:
        return 0
    while capacity < out.size + more:
        capacity *= 2
    data = <unsigned char*>PyMem_Realloc(out.data, capacity)
    if data == NULL:
        raise MemoryError()
    out.data, out.capacity = data, capacity
    return 0


cdef inline void _put_bytes(Buffer* out, const unsigned char* data, Py_ssize_t length) noexcept:
    # room reserved by the caller: a varint length, then the bytes
    out.size += put_long(out.data + out.size, length)
    memcpy(out.data + out.size, data, length)
    out.size += length


cdef inline bint _is_ascii(const unsigned char* data, Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(length):
        if data[i] >= 0x80:
            return False
    return True


cdef bint _is_utf8(const unsigned char* data, Py_ssize_t length):
    # True if Python's strict UTF-8 codec decodes these bytes
    if _is_ascii(data, length):
        return True
    try:
        PyUnicode_DecodeUTF8(<const char*>data, length, NULL)
    except UnicodeDecodeError:
        return False
    return True


cdef object _text(const unsigned char* data, Py_ssize_t length):
    # the str of UTF-8 bytes, or None if Python's strict codec refuses them
    try:
        return PyUnicode_DecodeUTF8(<const char*>data, length, NULL)
    except UnicodeDecodeError:
        return None


cdef class BatchScan:
    """``scan(records)``: the facts of one batch and its uncompressed OCF blocks (module docstring).

    Configured once per process by :mod:`pipeline.archive.container` from the catalog: the
    single-object headers of every sealed kind, the field layout of the event versions the
    specialised decoder reads, the AuditEvent headers whose leading fields the event-head reader
    takes, and the readable fallbacks.
    """

    cdef Py_ssize_t header_size, header_count, kind_count, unknown
    cdef unsigned char headers[MAX_HEADERS * 16]
    cdef int header_kind[MAX_HEADERS]
    cdef unsigned char roles[MAX_KINDS]
    cdef unsigned char event_codes[MAX_HEADERS][MAX_FIELDS]
    cdef Py_ssize_t event_fields[MAX_HEADERS]     # 0: no compiled layout for this header's events
    cdef unsigned char audit_headers[MAX_HEADERS * 16]
    cdef Py_ssize_t audit_count
    cdef int actor_types, outcome_statuses
    cdef tuple kind_names
    cdef list kind_utf8
    cdef object checkpoint_ref, index_fields
    cdef object actor, resource   # the ids event_fields_of read last

    def __init__(self, Py_ssize_t header_size, headers, kind_names, Py_ssize_t unknown, bytes roles,
                 event_layouts, audit_headers, int actor_types, int outcome_statuses, checkpoint_ref, index_fields):
        """``headers``: [(header bytes, kind index)]; ``kind_names``: the kinds, ``unknown`` the index of the
        one of no header; ``roles``: one ROLE_* byte per kind; ``event_layouts``: {header: ((name, type), ...)}
        of the event headers decoded field by field (the last field the AuditEvent bytes);
        ``audit_headers``: AuditEvent headers; ``checkpoint_ref(value)`` -> CheckpointRef or None and
        ``index_fields(value)`` -> (occurred_at, actor_id, resource_id) or None: the readable functions."""
        cdef Py_ssize_t i, j
        if not 0 < header_size <= 16 or len(headers) > MAX_HEADERS or len(audit_headers) > MAX_HEADERS:
            raise ValueError("more headers, or longer ones, than the batch scan holds")
        if len(kind_names) > MAX_KINDS or len(roles) != len(kind_names) or not 0 <= unknown < len(kind_names):
            raise ValueError("kinds and roles do not match")
        self.header_size = header_size
        self.header_count = len(headers)
        self.kind_names = tuple(kind_names)
        self.kind_utf8 = [name.encode("utf-8") for name in self.kind_names]
        self.kind_count = len(self.kind_names)
        self.unknown = unknown
        for i in range(self.kind_count):
            self.roles[i] = roles[i]
        for i, (header, kind) in enumerate(headers):
            if len(header) != header_size or not 0 <= kind < self.kind_count:
                raise ValueError(f"header {header!r} of kind {kind}: not {header_size} bytes of a known kind")
            memcpy(&self.headers[i * header_size], <const char*>header, header_size)
            self.header_kind[i] = kind
            self.event_fields[i] = 0
            layout = event_layouts.get(header)
            if layout is not None and self.roles[kind] == ROLE_EVENT:
                codes = type_codes(layout)
                # chain_id and seq first (entry_position reads them), the AuditEvent bytes last
                if len(codes) > MAX_FIELDS or len(codes) < 3 or codes[0] != STRING or codes[1] != LONG \
                        or codes[len(codes) - 1] != BYTES:
                    raise ValueError(f"an event layout the batch scan does not read: {layout}")
                for j in range(len(codes)):
                    self.event_codes[i][j] = codes[j]
                self.event_fields[i] = len(codes)
        self.audit_count = len(audit_headers)
        for i, header in enumerate(audit_headers):
            if len(header) != header_size:
                raise ValueError(f"AuditEvent header {header!r} is not {header_size} bytes")
            memcpy(&self.audit_headers[i * header_size], <const char*>header, header_size)
        self.actor_types, self.outcome_statuses = actor_types, outcome_statuses
        self.checkpoint_ref, self.index_fields = checkpoint_ref, index_fields

    cdef Py_ssize_t header_of(self, const unsigned char* data, Py_ssize_t size) noexcept:
        # the index of the value's header, or -1
        cdef Py_ssize_t i
        if size < self.header_size:
            return -1
        for i in range(self.header_count):
            if memcmp(data, &self.headers[i * self.header_size], self.header_size) == 0:
                return i
        return -1

    cdef bint event_fields_of(self, Py_ssize_t header, const unsigned char* data, Py_ssize_t size,
                              bint chain_valid, int64_t* occurred_at):
        # The index fields of a sealed event exactly as decode_fields + read_event_index_fields read them;
        # False wherever the readable functions must decide (damage, or a layout not compiled); on True
        # self.actor and self.resource hold the ids.
        cdef Py_ssize_t count = self.event_fields[header], position = self.header_size, index, start = 0, length = 0
        cdef HeadSpans head
        cdef int64_t number
        cdef unsigned char code
        cdef int i
        if count == 0 or not chain_valid:
            return False
        for index in range(count):
            code = self.event_codes[header][index]
            if code == INT or code == LONG:
                if not read_long(data, &position, size, &number):
                    return False
                if code == INT and (number < INT32_MIN or number > INT32_MAX):
                    return False
            else:
                if not read_span(data, &position, size, &start, &length):
                    return False
                # field 0, chain_id, was decoded by the chain pass (chain_valid)
                if code == STRING and index != 0 and not _is_utf8(data + start, length):
                    return False
        if position != size:
            return False  # trailing bytes: decode_fields refuses the record
        # the AuditEvent: the last field's bytes, read as pipeline.native.event_head.read_head reads them
        data, size = data + start, length
        if size < self.header_size:
            return False
        for i in range(self.audit_count):
            if memcmp(data, &self.audit_headers[i * self.header_size], self.header_size) == 0:
                break
        else:
            return False
        if not read_head_spans(data, self.header_size, size, self.actor_types, self.outcome_statuses, &head):
            return False
        occurred_at[0] = head.occurred_at
        if not (_is_utf8(data + head.s_id, head.n_id) and _is_utf8(data + head.s_action, head.n_action)
                and _is_utf8(data + head.s_rtype, head.n_rtype)):
            return False
        self.actor = _text(data + head.s_actor, head.n_actor)
        self.resource = _text(data + head.s_rid, head.n_rid)
        return self.actor is not None and self.resource is not None

    def scan(self, records, str topic, partition, Py_ssize_t sync_interval):
        """(count per kind, {chain_id: [first seq, last seq, entries]},
        [CheckpointRef], (events, undecoded, occurred min, occurred max, actor ids, resource ids),
        (smallest, largest Kafka timestamp), [(record count, uncompressed block bytes)]) of a batch,
        or None if the batch is not of the shape this pass takes (module docstring)."""
        cdef Py_ssize_t count, i, size, header, position, start, length, kind
        cdef Py_ssize_t prefix_size, chain_size = -1, block_records = 0
        cdef const unsigned char* data
        cdef const unsigned char* chain_data = NULL
        cdef const char* topic_data
        cdef Py_ssize_t topic_size
        cdef int64_t offset, timestamp, seq, occurred_at, occurred_min = 0, occurred_max = 0
        cdef int64_t ts_min = INT64_MAX, ts_max = INT64_MIN, first = 0, last = 0, entries = 0, events = 0, undecoded = 0
        cdef int64_t number
        cdef int overflow = 0
        cdef bint chain_valid, any_occurred = False
        cdef unsigned char prefix[16 + 2 * MAX_VARINT_BYTES]
        cdef unsigned char role
        cdef Buffer block
        cdef list counts = [0] * self.kind_count
        cdef dict chains = {}
        cdef list checkpoints = [], blocks = []
        cdef set actors = set(), resources = set()
        cdef object chain = None, actor = None, resource = None, item, value, found
        if sync_interval < 1:
            raise ValueError("sync_interval must be positive")
        # the values must stay alive through the pass (the chain id is compared in place): a list or tuple holds them
        if type(records) is not list and type(records) is not tuple:
            return None
        count = len(records)
        # every ArchivedRecord starts with the same topic and partition
        number = PyLong_AsLongLongAndOverflow(partition, &overflow)
        if overflow or number < INT32_MIN or number > INT32_MAX:
            return None
        topic_data = PyUnicode_AsUTF8AndSize(topic, &topic_size)
        block.data, block.size, block.capacity = NULL, 0, 0
        try:
            _reserve(&block, topic_size + 2 * MAX_VARINT_BYTES)
            _put_bytes(&block, <const unsigned char*>topic_data, topic_size)
            block.size += put_long(block.data + block.size, number)
            topic_prefix = PyBytes_FromStringAndSize(<const char*>block.data, block.size)
            block.size = 0
            prefix_size = len(topic_prefix)
            for i in range(count):
                item = records[i]
                if type(item) is not tuple or len(<tuple>item) != 3:
                    return None
                value = (<tuple>item)[2]
                if type(value) is not bytes:
                    return None
                offset = PyLong_AsLongLongAndOverflow((<tuple>item)[0], &overflow)
                if overflow:
                    return None
                timestamp = PyLong_AsLongLongAndOverflow((<tuple>item)[1], &overflow)
                if overflow or timestamp > INT64_MAX // 1000 or timestamp < INT64_MIN // 1000:
                    return None
                if timestamp < ts_min:
                    ts_min = timestamp
                if timestamp > ts_max:
                    ts_max = timestamp
                data = <const unsigned char*>PyBytes_AS_STRING(value)
                size = PyBytes_GET_SIZE(value)
                header = self.header_of(data, size)
                kind = self.unknown if header < 0 else self.header_kind[header]
                counts[kind] += 1
                role = self.roles[kind]
                if role == ROLE_ENTRY or role == ROLE_EVENT:
                    # entry_position: chain_id and seq, without decoding the rest
                    chain_valid = False
                    position = self.header_size
                    if read_span(data, &position, size, &start, &length) and read_long(data, &position, size, &seq):
                        if chain is not None and length == chain_size and memcmp(data + start, chain_data, length) == 0:
                            chain_valid = True
                        else:
                            found = _text(data + start, length)
                            if found is not None:
                                if chain is not None:
                                    chains[chain] = [first, last, entries]
                                chain, chain_data, chain_size = found, data + start, length
                                span = chains.get(chain)
                                if span is None:
                                    first, entries = seq, 0
                                else:
                                    first, entries = span[0], span[2]
                                chain_valid = True
                        if chain_valid:
                            last = seq
                            entries += 1
                    if role == ROLE_EVENT:
                        if self.event_fields_of(header, data, size, chain_valid, &occurred_at):
                            events += 1
                            actor, resource = self.actor, self.resource
                        else:
                            found = self.index_fields(value)
                            events += 1
                            if found is None:
                                undecoded += 1
                                actor = None
                            else:
                                occurred_at, actor, resource = found
                        if actor is not None:
                            if not any_occurred or occurred_at < occurred_min:
                                occurred_min = occurred_at
                            if not any_occurred or occurred_at > occurred_max:
                                occurred_max = occurred_at
                            any_occurred = True
                            actors.add(actor)
                            resources.add(resource)
                elif role == ROLE_CHECKPOINT:
                    found = self.checkpoint_ref(value)
                    if found is not None:
                        checkpoints.append(found)
                # the ArchivedRecord: topic, partition, offset, timestamp_micros, kind, value
                kind_name = <bytes>self.kind_utf8[kind]
                _reserve(&block, prefix_size + 4 * MAX_VARINT_BYTES + len(kind_name) + size)
                memcpy(block.data + block.size, PyBytes_AS_STRING(topic_prefix), prefix_size)
                block.size += prefix_size
                block.size += put_long(block.data + block.size, offset)
                block.size += put_long(block.data + block.size, timestamp * 1000)
                _put_bytes(&block, <const unsigned char*>PyBytes_AS_STRING(kind_name), len(kind_name))
                _put_bytes(&block, data, size)
                block_records += 1
                if block.size >= sync_interval:
                    blocks.append((block_records, PyBytes_FromStringAndSize(<const char*>block.data, block.size)))
                    block.size, block_records = 0, 0
            if block_records:
                blocks.append((block_records, PyBytes_FromStringAndSize(<const char*>block.data, block.size)))
        finally:
            PyMem_Free(block.data)
        if chain is not None:
            chains[chain] = [first, last, entries]
        index = (events, undecoded, occurred_min if any_occurred else None, occurred_max if any_occurred else None,
                 actors, resources)
        return counts, chains, checkpoints, index, (ts_min, ts_max), blocks


def bloom_table(bytes prefix, values, Py_ssize_t bits, int hashes):
    """The bit table of :meth:`pipeline.archive.query_index.BloomFilter.of` over the distinct str ``values``:
    for each, SHA-256 of ``prefix`` + its UTF-8 bytes read as big-endian 32-bit words, the first ``hashes``
    of them modulo ``bits`` set (bit p is bit p % 8 of byte p // 8)."""
    cdef Py_ssize_t prefix_size = len(prefix), size, capacity = prefix_size + 256, position
    cdef const char* text
    cdef const unsigned char* digest
    cdef unsigned char* buffer
    cdef unsigned char* grown
    cdef uint32_t word
    cdef int i
    if bits < 8 or bits % 8 or not 0 < hashes <= 8:
        raise ValueError(f"bits {bits}, hashes {hashes}: not a filter of this format")
    table = bytearray(bits // 8)
    cdef unsigned char* out = table
    sha256 = hashlib.sha256
    buffer = <unsigned char*>PyMem_Malloc(capacity)
    if buffer == NULL:
        raise MemoryError()
    try:
        memcpy(buffer, PyBytes_AS_STRING(prefix), prefix_size)
        for value in values:
            text = PyUnicode_AsUTF8AndSize(value, &size)
            if prefix_size + size > capacity:
                grown = <unsigned char*>PyMem_Realloc(buffer, prefix_size + size)
                if grown == NULL:
                    raise MemoryError()
                buffer, capacity = grown, prefix_size + size
            memcpy(buffer + prefix_size, text, size)
            hashed = sha256(PyBytes_FromStringAndSize(<const char*>buffer, prefix_size + size)).digest()
            digest = <const unsigned char*>PyBytes_AS_STRING(hashed)
            for i in range(hashes):
                word = (<uint32_t>digest[4 * i] << 24) | (<uint32_t>digest[4 * i + 1] << 16) \
                    | (<uint32_t>digest[4 * i + 2] << 8) | <uint32_t>digest[4 * i + 3]
                position = <Py_ssize_t>(word % <uint64_t>bits)
                out[position >> 3] |= 1 << (position & 7)
    finally:
        PyMem_Free(buffer)
    return bytes(table)
