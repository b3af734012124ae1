# The bytes a sealed event's chain hash covers, shared by the sealer (sealing.pyx) and the verifier
# (flat_reader.pyx): pipeline.integrity.chain.chain_hash over pipeline.wire.sealed.event_payload,
#   tag || prev_hash || u64be(seq) || u64be(len(payload)) || payload,
#   payload = 0x01 || u32be(partition) || u64be(source_offset) || u64be(timestamp micros) || event.
# Callers check the ranges first (32-byte prev_hash; seq, offset, timestamp >= 0; partition < 2**31).

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef enum:
    CHAIN_HASH_SIZE = 32
    EVENT_SOURCE_SIZE = 1 + 4 + 8 + 8  # event tag, u32 partition, u64 offset, u64 timestamp
    CHAIN_TAG_SIZE = 19


cdef inline void put_u32(unsigned char* out, uint64_t value) noexcept nogil:
    out[0] = (value >> 24) & 0xFF
    out[1] = (value >> 16) & 0xFF
    out[2] = (value >> 8) & 0xFF
    out[3] = value & 0xFF


cdef inline void put_u64(unsigned char* out, uint64_t value) noexcept nogil:
    put_u32(out, value >> 32)
    put_u32(out + 4, <uint32_t>value)


cdef inline bytes event_hash_input(const unsigned char* prev_hash, int64_t seq, int64_t partition,
                                   int64_t source_offset, int64_t timestamp, const unsigned char* event,
                                   Py_ssize_t length):
    cdef bytes hashed = PyBytes_FromStringAndSize(NULL, CHAIN_TAG_SIZE + CHAIN_HASH_SIZE + 16 + EVENT_SOURCE_SIZE
                                                  + length)
    cdef unsigned char* out = <unsigned char*>PyBytes_AS_STRING(hashed)
    memcpy(out, b"auditseal/chain/v1\x00", CHAIN_TAG_SIZE)  # pipeline.integrity.chain.CHAIN_DOMAIN_TAG
    out += CHAIN_TAG_SIZE
    memcpy(out, prev_hash, CHAIN_HASH_SIZE)
    out += CHAIN_HASH_SIZE
    put_u64(out, <uint64_t>seq)
    put_u64(out + 8, <uint64_t>(EVENT_SOURCE_SIZE + length))
    out += 16
    out[0] = 1
    put_u32(out + 1, <uint64_t>partition)
    put_u64(out + 5, <uint64_t>source_offset)
    put_u64(out + 13, <uint64_t>timestamp)
    memcpy(out + EVENT_SOURCE_SIZE, event, length)
    return hashed
