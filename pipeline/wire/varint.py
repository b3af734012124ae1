"""The one Avro varint codec of the Python modules (Avro 1.11 specification, "Binary encoding").

Avro writes ``int`` and ``long`` values, and every length and block count, zig-zag encoded
(0, -1, 1, -2, ... become 0, 1, 2, 3, ...) as a little-endian base-128 varint: 7 bits per byte,
the high bit set on every byte but the last. The compiled modules have the same codec once, in
``pipeline/native/varint.pxd``, with the same rule.

Writing gives the minimal encoding, as fastavro and the Java implementation write it.

Reading is strict: a varint is at most MAX_VARINT_BYTES (10) bytes and its value fits in 64 bits;
anything else raises :class:`VarintError` naming the problem. These are exactly the varints
fastavro decodes to the value read (it reads longer ones too, dropping their high bits, so two
readers could disagree on what such bytes mean). Padded, non-minimal encodings (``0x80 0x00`` for
0) are accepted, as every Avro reader accepts them.
"""

from __future__ import annotations

MAX_VARINT_BYTES = 10
LENGTH_TABLE_SIZE = 4096
"""Lengths below this come from :data:`LENGTHS`: nearly every length in an audit event is small, and a
table lookup is several times cheaper than the loop."""

_SMALL = tuple(bytes((z,)) for z in range(128))


class VarintError(ValueError):
    """Bytes that are not a varint under the module's rule: cut short, too long, or over 64 bits."""


def encode_unsigned(z: int) -> bytes:
    """The varint of ``z`` (0 <= z < 2**64), a value already zig-zag encoded."""
    if z < 0x80:
        return _SMALL[z]
    out = bytearray()
    while z >= 0x80:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def encode_long(n: int) -> bytes:
    """The Avro encoding of the ``int`` or ``long`` ``n`` (-2**63 <= n < 2**63)."""
    return encode_unsigned((n << 1) ^ (n >> 63))


LENGTHS = tuple(encode_long(n) for n in range(LENGTH_TABLE_SIZE))
"""``LENGTHS[n] == encode_long(n)`` for n < LENGTH_TABLE_SIZE."""


def encode_length(n: int) -> bytes:
    """The Avro encoding of a length or block count ``n`` >= 0."""
    return LENGTHS[n] if n < LENGTH_TABLE_SIZE else encode_long(n)


def encode_eight_byte_long(n: int) -> bytes:
    """:func:`encode_long` for 2**48 <= n < 2**55 only, whose zig-zag value 2n always takes 8 bytes.

    Every ``timestamp-micros`` in the range validation accepts ([2000, 2100)) is one; the loop is
    unrolled because the timestamp is on every event.
    """
    z = n << 1
    return bytes((
        z & 0x7F | 0x80, z >> 7 & 0x7F | 0x80, z >> 14 & 0x7F | 0x80, z >> 21 & 0x7F | 0x80,
        z >> 28 & 0x7F | 0x80, z >> 35 & 0x7F | 0x80, z >> 42 & 0x7F | 0x80, z >> 49,
    ))


def read_long(data: bytes, position: int, end: int) -> tuple[int, int]:
    """The ``int``/``long`` whose varint starts at ``data[position]`` and ends before ``end``, and the
    position after it; VarintError if the bytes break the module's rule."""
    value = shift = 0
    for _ in range(MAX_VARINT_BYTES):
        if position >= end:
            raise VarintError("the record ends inside its varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >> 64:
                raise VarintError("varint value does not fit in 64 bits")
            return (value >> 1) ^ -(value & 1), position
        shift += 7
    raise VarintError(f"varint longer than {MAX_VARINT_BYTES} bytes")
