"""Avro binary encoding of the two primitives hand-built messages need: long and string.

The client encodes the feature and action logs field by field (fastavro's generic writer took
~45 us per feature log, more than producing it), and the joiner's splice writer builds example
suffixes; both use these. Pure Python: the client imports it.
"""

from __future__ import annotations


def long_slow(n: int) -> bytes:
    """Avro long: zig-zag, then a little-endian base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


SMALL = 1 << 13
SMALL_LONGS = [long_slow(i) for i in range(SMALL)]
# a varint's first two bytes hold the low 14 bits (continuation bits set), the rest is the varint
# of what is left: for timestamps that rest changes every ~8 s, so it is cached (HIGH: zig-zagged
# value >> 14 -> that rest; the client's action path reads both tables inline)
LOW2 = [bytes(((i & 0x7F) | 0x80, (i >> 7) | 0x80)) for i in range(1 << 14)]
HIGH: dict[int, bytes] = {}
HIGH_MAX = 1 << 16


def long_bytes(n: int) -> bytes:
    """``long_slow(n)``, faster: a table for small numbers, cached high parts for large ones."""
    if 0 <= n < SMALL:
        return SMALL_LONGS[n]  # ids, counts, positions and delays are mostly small: encoded once
    z = (n << 1) ^ (n >> 63)
    if z < 1 << 14:
        return long_slow(n)
    hi = z >> 14
    b = HIGH.get(hi)
    if b is None:
        b = long_slow(hi >> 1 if hi & 1 == 0 else ~(hi >> 1))  # the varint of hi (zig-zag undone first)
        if len(HIGH) >= HIGH_MAX:
            HIGH.clear()
        HIGH[hi] = b
    return LOW2[z & 0x3FFF] + b


def string_bytes(s: str | bytes) -> bytes:
    """Avro string (or bytes): length, then the UTF-8 bytes."""
    b = s.encode() if isinstance(s, str) else s
    return long_bytes(len(b)) + b
