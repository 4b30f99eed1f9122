"""Training examples written straight from the feature log's Avro bytes (the embedded hot path).

Decoding a FeatureLog into dicts (~60 us) and encoding each example from dicts (~11 us) were
most of the join's CPU. An Avro map is a sequence of self-delimited blocks ended by a zero
count, so the example's ``sparse`` map (user slots + item slots) is the user map's blocks,
then the item map's blocks, then one zero byte: no FID is ever decoded. A numba scanner finds
the byte spans once per request; each example is then a join of ~12 byte strings. ``dense``
works the same way (a repeated key resolves to the last one, as ``dict.update`` does).

The result decodes to exactly the record ``joiner.core.DictWriter`` builds (tests check it).
If a slot name is both a user and an item slot, the dict path concatenates their FIDs; a
splice cannot, so such requests fall back to the dict path.
"""

from __future__ import annotations

import struct
from typing import Any

import numba
import numpy as np

from joiner.core import DictWriter, RequestState, example_id
from joiner.fastcodec import FastCodec

# spans[] layout written by _scan (int64): fixed header, then ITEM_FIELDS per item
# H_OVERLAP: 1 = take the dict path (a slot is both a user and an item slot, or a non-ASCII string)
H_RID0, H_RID1, H_USER, H_TS, H_US0, H_US1, H_UD0, H_UD1, H_N, H_OVERLAP, H_END = range(11)
ITEM_FIELDS = 6  # item_id, position, sparse start, sparse end, dense start, dense end
MAX_ITEMS = 4096


@numba.njit(cache=True, nogil=True, boundscheck=True)
def _varint(b: np.ndarray, i: int) -> tuple[int, int]:
    shift = 0
    acc = 0
    while True:
        x = np.int64(b[i])  # boundscheck: reading past the end raises IndexError
        i += 1
        acc |= (x & 0x7F) << shift
        if x < 0x80:
            break
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")
    return (acc >> 1) ^ -(acc & 1), i


@numba.njit(cache=True, nogil=True, boundscheck=True)
def _fits(b: np.ndarray, i: int, n: int) -> int:
    """``n`` if 0 <= n <= bytes left after ``i`` (no count or length can exceed that), else raise."""
    if n < 0 or n > len(b) - i:
        raise IndexError("count or length beyond the message")
    return n


@numba.njit(cache=True, nogil=True, boundscheck=True)
def _skip_map(b: np.ndarray, i: int, arrays: bool) -> tuple[int, int, int]:
    """Skip a map<array<long>> (arrays) or map<float>; return (blocks end, after terminator,
    1 if a key is not ASCII: then the caller takes the dict path, whose decoder checks UTF-8)."""
    odd = 0
    while True:
        count, j = _varint(b, i)
        if count == 0:
            return i, j, odd
        i = j
        if count < 0:
            count = -count
            _, i = _varint(b, i)  # block size in bytes
        for _ in range(_fits(b, i, count)):
            klen, i = _varint(b, i)
            for t in range(_fits(b, i, klen)):
                if b[i + t] >= 0x80:
                    odd = 1
            i += klen
            if arrays:
                while True:
                    n, i = _varint(b, i)
                    if n == 0:
                        break
                    if n < 0:
                        n = -n
                        _, i = _varint(b, i)
                    for _ in range(_fits(b, i, n)):
                        while b[i] >= 0x80:
                            i += 1
                        i += 1
            else:
                i += _fits(b, i, 4)


@numba.njit(cache=True, nogil=True, boundscheck=True)
def _skip_longs(b: np.ndarray, i: int) -> int:
    """Skip an array<long> value (blocks of varints ended by a zero count)."""
    while True:
        n, i = _varint(b, i)
        if n == 0:
            return i
        if n < 0:
            n = -n
            _, i = _varint(b, i)
        for _ in range(n):
            while b[i] >= 0x80:
                i += 1
            i += 1


@numba.njit(cache=True, nogil=True, boundscheck=True)
def _map_keys(b: np.ndarray, s: int, e: int) -> np.ndarray:
    """(start, length) of every key of the map<array<long>> blocks b[s:e], as rows of an array."""
    keys = np.empty((e - s + 1, 2), dtype=np.int64)  # a key takes >= 1 byte: enough rows
    n = 0
    i = s
    while i < e:
        count, i = _varint(b, i)
        if count < 0:
            count = -count
            _, i = _varint(b, i)
        for _ in range(count):
            klen, i = _varint(b, i)
            keys[n, 0] = i
            keys[n, 1] = klen
            n += 1
            i = _skip_longs(b, i + klen)
    return keys[:n]


@numba.njit(cache=True, nogil=True, boundscheck=True)
def _keys_equal(b: np.ndarray, keys: np.ndarray, s1: int, e1: int) -> bool:
    """Does a key of the map blocks b[s1:e1] equal one of ``keys`` (rows of ``_map_keys``)?"""
    j = s1
    while j < e1:
        c2, j = _varint(b, j)
        if c2 < 0:
            c2 = -c2
            _, j = _varint(b, j)
        for _ in range(c2):
            kl2, j = _varint(b, j)
            for r in range(keys.shape[0]):
                if keys[r, 1] == kl2:
                    k0 = keys[r, 0]
                    same = True
                    for t in range(kl2):
                        if b[k0 + t] != b[j + t]:
                            same = False
                            break
                    if same:
                        return True
            j = _skip_longs(b, j + kl2)
    return False


@numba.njit(cache=True, nogil=True, boundscheck=True)
def _scan(b: np.ndarray, out: np.ndarray) -> int:
    """Spans of a FeatureLog body; returns the number of int64s written (or -1 if too many items)."""
    n, i = _varint(b, 0)
    out[H_RID0] = i
    i += _fits(b, i, n)
    out[H_RID1] = i
    out[H_USER], i = _varint(b, i)
    out[H_TS], i = _varint(b, i)
    out[H_US0] = i
    out[H_US1], i, odd = _skip_map(b, i, True)
    out[H_UD0] = i
    out[H_UD1], i, odd2 = _skip_map(b, i, False)
    k = H_END
    items = 0
    overlap = odd | odd2
    ukeys = _map_keys(b, out[H_US0], out[H_US1])
    while True:
        count, i = _varint(b, i)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, i = _varint(b, i)
        for _ in range(_fits(b, i, count)):
            if items >= MAX_ITEMS:
                return -1
            out[k], i = _varint(b, i)
            out[k + 1], i = _varint(b, i)
            out[k + 2] = i
            out[k + 3], i, odd = _skip_map(b, i, True)
            out[k + 4] = i
            out[k + 5], i, odd2 = _skip_map(b, i, False)
            overlap |= odd | odd2
            if (overlap == 0 and out[H_US1] > out[H_US0] and out[k + 3] > out[k + 2]
                    and _keys_equal(b, ukeys, out[k + 2], out[k + 3])):
                overlap = 1
            k += ITEM_FIELDS
            items += 1
    n, i = _varint(b, i)  # source
    for t in range(_fits(b, i, n)):
        if b[i + t] >= 0x80:
            overlap = 1
    i += n
    if i != len(b):
        raise IndexError("trailing bytes")
    out[H_N] = items
    out[H_OVERLAP] = overlap
    return k


def _long(n: int) -> bytes:
    if 0 <= n < _SMALL:
        return _SMALL_LONGS[n]  # ids and delays are mostly small: encoded once
    return _long_slow(n)


def _long_slow(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = 1 << 13
_SMALL_LONGS = [_long_slow(i) for i in range(_SMALL)]


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return _long(len(b)) + b


class Spans:
    """Byte pieces of one feature log, ready to splice (items sliced on first use)."""

    __slots__ = ("body", "rid_str", "prefix_tail", "us", "ud", "index", "spans")

    def __init__(self, body: bytes, spans: np.ndarray, items: list[int] | None = None):
        """``items``: ``spans[H_END:H_END + n * ITEM_FIELDS].tolist()`` if the caller has it."""
        self.body = body
        self.rid_str = _str(body[spans[H_RID0]:spans[H_RID1]])
        # request_id, then per item: item_id, then user_id + ts_ms (same for all items)
        self.prefix_tail = _long(int(spans[H_USER])) + _long(int(spans[H_TS]))
        self.us = body[spans[H_US0]:spans[H_US1]]
        self.ud = body[spans[H_UD0]:spans[H_UD1]]
        n = int(spans[H_N])
        end = H_END + n * ITEM_FIELDS
        self.spans = items if items is not None else spans[H_END:end].tolist()
        self.index = dict(zip(self.spans[::ITEM_FIELDS], range(0, n * ITEM_FIELDS, ITEM_FIELDS), strict=True))

    def item(self, item_id: int) -> tuple[bytes, bytes, bytes]:
        k = self.index[item_id]
        sp, body = self.spans, self.body
        return _long(item_id), body[sp[k + 2]:sp[k + 3]], body[sp[k + 4]:sp[k + 5]]


class SpliceWriter(DictWriter):
    """``joiner.core`` example writer that returns encoded TrainingExample bytes."""

    def __init__(self, fast: FastCodec):
        self.fast = fast
        self.header = fast.codec.current["TrainingExample"].header
        self._buf = np.zeros(H_END + ITEM_FIELDS * 64, dtype=np.int64)
        self._labels: dict[tuple, bytes] = {}
        self._floats: dict[float, bytes] = {}
        self._kinds: dict[str, bytes] = {}
        self._delays: dict[int, bytes] = {}
        self._warm_up()

    def _warm_up(self) -> None:
        """Load the compiled scanner now (numba's on-disk cache), not on the first message."""
        rec = {"request_id": "w", "user_id": 1, "ts_ms": 1, "user_sparse": {"a": [1]}, "user_dense": {"d": 1.0},
               "items": [{"item_id": 1, "position": 0, "sparse": {"a": [2]}, "dense": {}}], "source": ""}
        self.scan(self.fast.encode("FeatureLog", rec)[10:])

    def scan(self, body: bytes) -> tuple[np.ndarray, int]:
        """(spans, n_int64) of a FeatureLog Avro body; raises ValueError if it is not one."""
        arr = np.frombuffer(body, dtype=np.uint8)
        need = H_END + ITEM_FIELDS * max(64, len(body) // 4)
        if len(self._buf) < need:
            self._buf = np.zeros(need, dtype=np.int64)
        try:
            k = _scan(arr, self._buf)
        except IndexError as e:
            raise ValueError(f"not a FeatureLog body: {e}") from None
        if k < 0:
            raise ValueError("too many items")
        return self._buf, k

    def spans_of(self, s: RequestState) -> Spans | None:
        sp = getattr(s, "_splice", None)
        if sp is None and s.fbytes is not None:
            buf, _ = self.scan(s.fbytes)
            sp = Spans(s.fbytes, buf) if not buf[H_OVERLAP] else False
            s._splice = sp
        return sp or None

    def _delay(self, ms: int) -> bytes:
        b = _long(ms)
        if len(self._delays) < 1024:
            self._delays[ms] = b
        return b

    def example(self, s: RequestState, item_id: int, kind: str, labels: dict[str, int], sample_rate: float,
                late: bool, join_delay_ms: int) -> Any:
        sp = self.spans_of(s)
        if sp is None:  # overlapping slot names or no bytes: the dict path, then encode
            return self.fast.encode("TrainingExample", super().example(
                s, item_id, kind, labels, sample_rate, late, join_delay_ms))
        iid, isp, idn = sp.item(item_id)
        key = tuple(labels.items())
        lb = self._labels.get(key)
        if lb is None:
            lb = _long(len(labels)) + b"".join(_str(k) + _long(v) for k, v in labels.items()) + b"\x00" \
                if labels else b"\x00"
            self._labels[key] = lb
        fb = self._floats.get(sample_rate)
        if fb is None:
            fb = self._floats[sample_rate] = struct.pack("<f", sample_rate)
        kb = self._kinds.get(kind)
        if kb is None:
            kb = self._kinds[kind] = _str(kind)
        return b"".join((
            self.header, b"\x40", example_id(s.request_id, item_id, kind).encode(), sp.rid_str, iid,
            sp.prefix_tail, sp.us, isp, b"\x00", sp.ud, idn, b"\x00", lb, fb, b"\x01" if late else b"\x00",
            self._delays.get(join_delay_ms) or self._delay(join_delay_ms), kb,
        ))
