# The one Avro varint codec of the compiled modules (Avro 1.11 specification, "Binary encoding"), with the
# rule of its Python twin pipeline/wire/varint.py: int and long values, lengths and block counts are
# zig-zag encoded, then written as a little-endian base-128 varint.
#
# put_long writes the minimal encoding, as fastavro does. read_long is strict: at most MAX_VARINT_BYTES
# (10) bytes and a value that fits in 64 bits, exactly the varints fastavro decodes to the value read
# (it reads longer ones too, dropping their high bits); padded, non-minimal encodings are accepted.

from libc.stdint cimport int64_t, uint64_t

cdef enum:
    MAX_VARINT_BYTES = 10


cdef inline bint read_long(const unsigned char* data, Py_ssize_t* position, Py_ssize_t end,
                           int64_t* out) noexcept nogil:
    # The long whose varint starts at position[0], and position[0] moved past it; False (position
    # unchanged) where pipeline.wire.varint.read_long raises: cut short, too long, or over 64 bits.
    cdef uint64_t value = 0, byte
    cdef int shift = 0
    cdef Py_ssize_t p = position[0]
    while True:
        if p >= end:
            return False
        byte = data[p]
        p += 1
        if shift == 63:
            if byte > 1:  # continues past 10 bytes, or sets bits above the 64th
                return False
            value |= byte << 63
            break
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    position[0] = p
    out[0] = <int64_t>((value >> 1) ^ (<uint64_t>0 - (value & 1)))
    return True


cdef inline Py_ssize_t put_long(unsigned char* out, int64_t value) noexcept nogil:
    # Write the varint of value at out (room for MAX_VARINT_BYTES), return its size.
    cdef uint64_t z = (<uint64_t>value << 1) ^ <uint64_t>(value >> 63)
    cdef Py_ssize_t size = 0
    while z >= 0x80:
        out[size] = <unsigned char>((z & 0x7F) | 0x80)
        z >>= 7
        size += 1
    out[size] = <unsigned char>z
    return size + 1


cdef inline Py_ssize_t long_size(int64_t value) noexcept nogil:
    # The size put_long gives value.
    cdef uint64_t z = (<uint64_t>value << 1) ^ <uint64_t>(value >> 63)
    cdef Py_ssize_t size = 1
    while z >= 0x80:
        z >>= 7
        size += 1
    return size
