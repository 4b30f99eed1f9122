"""BLAKE2b (RFC 7693) compiled with numba, for hashing inside compiled loops.

Why by hand: a window's examples are written in one compiled call (``joiner.splice``), and
each needs two BLAKE2b hashes (its ``example_id`` and the negative-sampling hash, see
``joiner.core``). ``hashlib`` is faster per byte, but it cannot be called from numba, and a
Python-level call per hash costs more than the hash. Unkeyed, digest sizes 1..64; the result
equals ``hashlib.blake2b(msg, digest_size=n).digest()`` (tests check it).
"""

from __future__ import annotations

import numba
import numpy as np

_IV = np.array([0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
                0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179], dtype=np.uint64)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@numba.njit(inline="always")
def _rotr(x: np.uint64, n: int) -> np.uint64:
    return (x >> np.uint64(n)) | (x << np.uint64(64 - n))


@numba.njit(inline="always")
def _g(a, b, c, d, x, y):  # noqa: ANN001, ANN202 (numba scalars)
    a = a + b + x
    d = _rotr(d ^ a, 32)
    c = c + d
    b = _rotr(b ^ c, 24)
    a = a + b + y
    d = _rotr(d ^ a, 16)
    c = c + d
    b = _rotr(b ^ c, 63)
    return a, b, c, d


@numba.njit(inline="always")
def _round(v, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15):  # noqa: ANN001, ANN202
    """One round; the caller passes the message words in this round's SIGMA order."""
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 = v
    v0, v4, v8, v12 = _g(v0, v4, v8, v12, x0, x1)
    v1, v5, v9, v13 = _g(v1, v5, v9, v13, x2, x3)
    v2, v6, v10, v14 = _g(v2, v6, v10, v14, x4, x5)
    v3, v7, v11, v15 = _g(v3, v7, v11, v15, x6, x7)
    v0, v5, v10, v15 = _g(v0, v5, v10, v15, x8, x9)
    v1, v6, v11, v12 = _g(v1, v6, v11, v12, x10, x11)
    v2, v7, v8, v13 = _g(v2, v7, v8, v13, x12, x13)
    v3, v4, v9, v14 = _g(v3, v4, v9, v14, x14, x15)
    return v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15


@numba.njit(cache=True, nogil=True)
def _compress(h: np.ndarray, m: np.ndarray, t: int, last: bool) -> None:
    """The compression function, rounds unrolled (the words stay in registers): the rows of
    the message schedule SIGMA are the argument orders below (rounds 10 and 11 repeat 0 and 1)."""
    m0, m1, m2, m3, m4, m5, m6, m7 = m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]
    m8, m9, m10, m11, m12, m13, m14, m15 = m[8], m[9], m[10], m[11], m[12], m[13], m[14], m[15]
    f = ~_IV[6] if last else _IV[6]
    v = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7],
         _IV[0], _IV[1], _IV[2], _IV[3], _IV[4] ^ np.uint64(t), _IV[5], f, _IV[7])
    v = _round(v, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15)
    v = _round(v, m14, m10, m4, m8, m9, m15, m13, m6, m1, m12, m0, m2, m11, m7, m5, m3)
    v = _round(v, m11, m8, m12, m0, m5, m2, m15, m13, m10, m14, m3, m6, m7, m1, m9, m4)
    v = _round(v, m7, m9, m3, m1, m13, m12, m11, m14, m2, m6, m5, m10, m4, m0, m15, m8)
    v = _round(v, m9, m0, m5, m7, m2, m4, m10, m15, m14, m1, m11, m12, m6, m8, m3, m13)
    v = _round(v, m2, m12, m6, m10, m0, m11, m8, m3, m4, m13, m7, m5, m15, m14, m1, m9)
    v = _round(v, m12, m5, m1, m15, m14, m13, m4, m10, m0, m7, m6, m3, m9, m2, m8, m11)
    v = _round(v, m13, m11, m7, m14, m12, m1, m3, m9, m5, m0, m15, m4, m8, m6, m2, m10)
    v = _round(v, m6, m15, m14, m9, m11, m3, m0, m8, m12, m2, m13, m7, m1, m4, m10, m5)
    v = _round(v, m10, m2, m8, m4, m7, m6, m1, m5, m15, m11, m9, m14, m3, m12, m13, m0)
    v = _round(v, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15)
    v = _round(v, m14, m10, m4, m8, m9, m15, m13, m6, m1, m12, m0, m2, m11, m7, m5, m3)
    for i in range(8):
        h[i] ^= v[i] ^ v[i + 8]


@numba.njit(cache=True, nogil=True)
def blake2b(msg: np.ndarray, n: int, digest_size: int, h: np.ndarray, blk: np.ndarray) -> None:
    """``h`` (8 uint64) <- the state after hashing ``msg[:n]``; the digest is the first
    ``digest_size`` bytes of ``h`` little-endian. ``blk``: a 128-byte uint8 scratch block."""
    m = blk.view(np.uint64)
    for i in range(8):
        h[i] = _IV[i]
    h[0] ^= np.uint64(0x01010000 | digest_size)
    t = 0
    pos = 0
    while True:
        take = n - pos
        last = take <= 128
        if not last:
            take = 128
        for k in range(take):
            blk[k] = msg[pos + k]
        for k in range(take, 128):
            blk[k] = 0
        t += take
        _compress(h, m, t, last)
        pos += take
        if last:
            return


@numba.njit(cache=True, nogil=True)
def hex16(h: np.ndarray, out: np.ndarray, pos: int) -> int:
    """Write the 16-byte digest in ``h`` as 32 lowercase hex digits at ``out[pos]``."""
    for w in range(2):
        x = h[w]
        for j in range(8):
            byte = (x >> np.uint64(8 * j)) & np.uint64(0xFF)
            out[pos] = _HEX[byte >> np.uint64(4)]
            out[pos + 1] = _HEX[byte & np.uint64(0xF)]
            pos += 2
    return pos


def digest(msg: bytes, digest_size: int) -> bytes:
    """The compiled hash from Python (tests compare it with hashlib)."""
    h = np.zeros(8, np.uint64)
    blake2b(np.frombuffer(msg, dtype=np.uint8), len(msg), digest_size, h, np.zeros(128, np.uint8))
    return h.tobytes()[:digest_size]
