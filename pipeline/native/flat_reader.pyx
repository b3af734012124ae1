"""Compiled strict decoding of flat Avro records, and the verifier's fused pass over archived sealed events.

:class:`FlatDecoder` is the compiled form of :mod:`pipeline.wire.flat_decoder`: the same values for
valid input, and on any damage it hands the record to the readable reference decoder, so the
:class:`~pipeline.wire.codec.CorruptBodyError` and its message are the reference's.

:class:`EntryScan` is the verifier's hot loop over one block of an archived object: each
``ArchivedRecord`` is decoded, then its ``SealedEvent`` value, and the chain hash is recomputed
(:func:`pipeline.integrity.chain.chain_hash` over :func:`pipeline.wire.sealed.event_payload`).
It only *accepts*: a record is taken only if verifying it the readable way would find nothing
wrong (offset in range and increasing, a well-formed event of the chain being followed, the next
seq, linking to the head, its hash recomputing). At the first record it cannot accept it stops,
and the verifier handles that record in Python, which finds and names whatever is wrong.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from pipeline.native.chain_input cimport CHAIN_HASH_SIZE, event_hash_input
from pipeline.native.varint cimport read_long

import hashlib

cdef enum:
    STRING = 0
    BYTES = 1
    INT = 2
    LONG = 3
    MAX_FIELDS = 64

_TYPE_CODES = {"string": STRING, "bytes": BYTES, "int": INT, "long": LONG}

cdef Py_ssize_t HASH_SIZE = CHAIN_HASH_SIZE


cdef inline bint read_length(const unsigned char* data, Py_ssize_t* position, Py_ssize_t end,
                             Py_ssize_t* length) noexcept nogil:
    # The length of a bytes or string field; False if damaged, negative or past the end.
    cdef int64_t n
    if not read_long(data, position, end, &n):
        return False
    if n < 0 or n > end - position[0]:
        return False
    length[0] = <Py_ssize_t>n
    return True


cdef inline bint is_ascii(const unsigned char* data, Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(length):
        if data[i] >= 0x80:
            return False
    return True


def type_codes(fields):
    """The compiled decoders' code of each (name, type) field; ValueError for a type they do not read."""
    try:
        return bytes(_TYPE_CODES[kind] for _, kind in fields)
    except KeyError as exc:
        raise ValueError(f"no compiled decoding for Avro type {exc.args[0]!r}") from None


cdef class FlatDecoder:
    """``decode(data, start, end) -> (field values in schema order, position after the record)``.

    The values of :func:`pipeline.wire.flat_decoder.decode_fields`; on damaged input (or input
    that is not ``bytes``) the call is handed to ``on_damage(fields, data, start, end)``, the
    reference, which raises the error naming the field.
    """

    cdef readonly tuple fields
    cdef object on_damage
    cdef unsigned char codes[MAX_FIELDS]
    cdef Py_ssize_t count

    def __init__(self, fields, on_damage):
        codes = type_codes(fields)
        if len(codes) > MAX_FIELDS:
            raise ValueError(f"{len(codes)} fields; the compiled decoder reads at most {MAX_FIELDS}")
        self.fields = tuple(fields)
        self.on_damage = on_damage
        self.count = len(codes)
        for index in range(self.count):
            self.codes[index] = codes[index]

    def __call__(self, data, Py_ssize_t start, Py_ssize_t end):
        cdef Py_ssize_t position = start
        if type(data) is bytes and start >= 0:
            values = self.decode(<bytes>data, &position, end)
            if values is not None:
                return values, position
        return self.on_damage(self.fields, data, start, end)

    cdef tuple decode(self, bytes data, Py_ssize_t* position, Py_ssize_t end):
        # The values, position[0] moved past the record; None if anything is damaged.
        cdef const unsigned char* raw = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data), length, index
        cdef int64_t number
        cdef tuple values = PyTuple_New(self.count)
        cdef unsigned char code
        if end > size:
            end = size
        if position[0] > end:
            return None
        for index in range(self.count):
            code = self.codes[index]
            if code == INT or code == LONG:
                if not read_long(raw, position, end, &number):
                    return None
                if code == INT and (number < INT32_MIN or number > INT32_MAX):
                    return None
                value = number
            else:
                if not read_length(raw, position, end, &length):
                    return None
                if code == BYTES:
                    value = PyBytes_FromStringAndSize(<const char*>raw + position[0], length)
                else:
                    try:
                        value = PyUnicode_DecodeUTF8(<const char*>raw + position[0], length, NULL)
                    except UnicodeDecodeError:
                        return None
                position[0] += length
            Py_INCREF(value)  # PyTuple_SET_ITEM steals a reference
            PyTuple_SET_ITEM(values, index, value)
        return values


SEALED_EVENT_TYPES = ("string", "long", "bytes", "bytes", "int", "long", "long", "bytes")
"""The field types EntryScan reads a SealedEvent as, and pipeline.native.sealing.seal_event writes it as:
chain_id, seq, prev_hash, hash, source_partition, source_offset, source_timestamp_micros, event
(pipeline.wire.sealed.ENTRY_FIELDS + event)."""


cdef class EntryScan:
    """The verifier's fused fast path over the ArchivedRecords of one object (module docstring).

    Per object the verifier calls :meth:`expect_offsets`; per chain it calls :meth:`follow` with
    the chain's state (the integrity core's state machine), after handling a record in Python, which reads and sets
    ``previous_offset`` (the offset of the last record seen) as the scan does.
    :meth:`scan` accepts records and updates that state exactly as the Python path would for them.
    """

    cdef unsigned char archived[MAX_FIELDS]
    cdef Py_ssize_t archived_count, offset_index, value_index
    cdef bytes event_header
    cdef object sha256
    cdef int64_t first_offset, last_offset
    cdef public int64_t previous_offset
    cdef public object chain          # the ChainState being followed, or None
    cdef public list seq_range        # the object's [first seq, last seq] of that chain
    cdef bytes chain_id

    def __init__(self, archived_fields, Py_ssize_t offset_index, Py_ssize_t value_index, bytes event_header,
                 sealed_event_fields):
        codes = type_codes(archived_fields)
        if len(codes) > MAX_FIELDS or archived_fields[offset_index][1] != "long" \
                or archived_fields[value_index][1] != "bytes":
            raise ValueError(f"an ArchivedRecord layout EntryScan does not read: {archived_fields}")
        if tuple(kind for _, kind in sealed_event_fields) != SEALED_EVENT_TYPES:
            raise ValueError(f"a SealedEvent layout EntryScan does not read: {sealed_event_fields}")
        self.archived_count = len(codes)
        for index in range(self.archived_count):
            self.archived[index] = codes[index]
        self.offset_index, self.value_index = offset_index, value_index
        self.event_header = event_header
        self.sha256 = hashlib.sha256
        self.chain = None
        self.seq_range = None
        self.chain_id = None

    def expect_offsets(self, first_offset, last_offset):
        """Accept records with offsets in first_offset..last_offset (any ints: a key's 20 digits can exceed
        an Avro long, which no record's offset then equals); none seen yet (previous_offset -1)."""
        self.previous_offset = -1
        if first_offset > INT64_MAX or last_offset < INT64_MIN:
            self.first_offset, self.last_offset = 1, 0
        else:
            self.first_offset, self.last_offset = max(first_offset, INT64_MIN), min(last_offset, INT64_MAX)

    def follow(self, chain, list seq_range):
        """Accept entries of ``chain`` (its :class:`~pipeline.integrity.chain_state.ChainState`; None:
        accept none) from now on;
        ``seq_range`` is the object's [first seq, last seq] of it, updated as entries are accepted."""
        self.chain, self.seq_range = chain, seq_range
        self.chain_id = None if chain is None else chain.chain_id.encode("utf-8")

    cdef bint read_archived(self, const unsigned char* raw, Py_ssize_t* position, Py_ssize_t end,
                            int64_t* offset, Py_ssize_t* value_start, Py_ssize_t* value_end) noexcept:
        # One ArchivedRecord, every field strictly; strings only if plainly ASCII (Python checks others).
        cdef Py_ssize_t index, length
        cdef int64_t number
        cdef unsigned char code
        for index in range(self.archived_count):
            code = self.archived[index]
            if code == INT or code == LONG:
                if not read_long(raw, position, end, &number):
                    return False
                if code == INT and (number < INT32_MIN or number > INT32_MAX):
                    return False
                if index == self.offset_index:
                    offset[0] = number
            else:
                if not read_length(raw, position, end, &length):
                    return False
                if code == STRING and not is_ascii(raw + position[0], length):
                    return False
                if index == self.value_index:
                    value_start[0], value_end[0] = position[0], position[0] + length
                position[0] += length
        return True

    def scan(self, bytes data, Py_ssize_t position, Py_ssize_t end, Py_ssize_t records):
        """Accept up to ``records`` ArchivedRecords from ``data[position:end]``: (position, accepted).

        Stops before the first record it cannot accept (accepted < records), leaving it to the
        caller; the chain followed and ``seq_range`` hold the accepted entries.
        """
        cdef const unsigned char* raw = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t accepted = 0, p, v, length, value_start = 0, value_end = 0, event_length
        cdef int64_t offset = 0, previous = self.previous_offset
        cdef int64_t head_seq, seq, partition, source_offset, timestamp, next_source
        cdef const unsigned char* prev_hash
        cdef const unsigned char* claimed
        cdef bytes chain_id = self.chain_id, head_hash, recomputed
        cdef const char* header = PyBytes_AS_STRING(self.event_header)
        cdef Py_ssize_t header_size = PyBytes_GET_SIZE(self.event_header), chain_id_size
        cdef list batch
        if end > PyBytes_GET_SIZE(data):
            end = PyBytes_GET_SIZE(data)
        if chain_id is None or self.seq_range is None or position < 0:
            return position, 0
        chain = self.chain
        chain_id_size = PyBytes_GET_SIZE(chain_id)
        head_seq = chain.head_seq
        head_hash = chain.head_hash
        batch = chain.batch_hashes
        next_source = chain.next_source_offset
        sha256 = self.sha256
        while accepted < records:
            p = position
            if not self.read_archived(raw, &p, end, &offset, &value_start, &value_end):
                break
            if offset < self.first_offset or offset > self.last_offset or offset <= previous:
                break
            # the value: all of a SealedEvent of the newest schema, of the chain followed, next in it
            if value_end - value_start < header_size or memcmp(raw + value_start, header, header_size) != 0:
                break
            v = value_start + header_size
            if not read_length(raw, &v, value_end, &length) or length != chain_id_size \
                    or memcmp(raw + v, PyBytes_AS_STRING(chain_id), length) != 0:
                break
            v += length
            if not read_long(raw, &v, value_end, &seq) or seq < 0 or seq - 1 != head_seq:
                break
            if not read_length(raw, &v, value_end, &length) or length != HASH_SIZE \
                    or memcmp(raw + v, PyBytes_AS_STRING(head_hash), HASH_SIZE) != 0:
                break
            prev_hash = raw + v
            v += length
            if not read_length(raw, &v, value_end, &length) or length != HASH_SIZE:
                break
            claimed = raw + v
            v += length
            # negative source coordinates do not pack into the payload; Python reports them
            if not read_long(raw, &v, value_end, &partition) or partition < 0 or partition > INT32_MAX:
                break
            if not read_long(raw, &v, value_end, &source_offset) or source_offset < 0:
                break
            # a raw offset out of step inside a batch: ChainState.link names it
            if batch and next_source >= 0 and source_offset != next_source:
                break
            if not read_long(raw, &v, value_end, &timestamp) or timestamp < 0:
                break
            if not read_length(raw, &v, value_end, &event_length) or v + event_length != value_end:
                break
            recomputed = sha256(event_hash_input(prev_hash, seq, partition, source_offset, timestamp,
                                                 raw + v, event_length)).digest()
            if memcmp(PyBytes_AS_STRING(recomputed), claimed, HASH_SIZE) != 0:
                break
            # accepted: what ChainState.link and the verifier's record loop do for a clean entry
            if not batch:
                chain.batch_first_seq = seq
                chain.batch_first_source, chain.batch_expected_source = source_offset, next_source
            batch.append(recomputed)
            next_source = source_offset + 1
            head_seq, head_hash = seq, recomputed
            previous = offset
            position = p
            accepted += 1
        if accepted:
            chain.head_seq, chain.head_hash = head_seq, head_hash
            chain.next_source_offset = next_source
            chain.entries += accepted
            self.seq_range[1] = head_seq
            self.previous_offset = previous
        return position, accepted


def event_chain_hash(bytes prev_hash, int64_t seq, int64_t source_partition, int64_t source_offset,
                     int64_t source_timestamp_micros, bytes event):
    """chain_hash(prev_hash, seq, event_payload(...)) computed as EntryScan computes it (for tests)."""
    if PyBytes_GET_SIZE(prev_hash) != HASH_SIZE or seq < 0 or not 0 <= source_partition <= INT32_MAX \
            or source_offset < 0 or source_timestamp_micros < 0:
        raise ValueError("event_chain_hash takes a 32-byte prev_hash and non-negative numbers")
    return hashlib.sha256(event_hash_input(<const unsigned char*>PyBytes_AS_STRING(prev_hash), seq,
                                           source_partition, source_offset, source_timestamp_micros,
                                           <const unsigned char*>PyBytes_AS_STRING(event),
                                           PyBytes_GET_SIZE(event))).digest()
