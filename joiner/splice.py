"""Training examples written straight from the feature log's Avro bytes (the embedded hot path).

Decoding a FeatureLog into dicts (~60 us) and encoding each example from dicts (~11 us) were
most of the join's CPU. An Avro map is a sequence of self-delimited blocks ended by a zero
count, so the example's ``sparse`` map (user slots + item slots) is the user map's blocks,
then the item map's blocks, then one zero byte: no FID is ever decoded. A numba scanner finds
the byte spans once per request. ``dense`` works the same way (a repeated key resolves to the
last one, as ``dict.update`` does).

A closing window writes all of its examples in ONE compiled call (``_window``): the
negative-sampling hash, the ``example_id`` (both BLAKE2b, ``joiner.blake2b``) and the bytes of
every kept example, so Python touches each example only to slice it out. Per example that is
~1 us instead of ~5 us of Python string building and hashlib calls.

The result decodes to exactly the record ``joiner.core.DictWriter`` builds (tests check it).
If a slot name is both a user and an item slot, the dict path concatenates their FIDs; a
splice cannot, so such requests fall back to the dict path.
"""

from __future__ import annotations

import struct
from typing import Any

import numba
import numpy as np

from joiner.blake2b import blake2b, hex16
from joiner.core import DictWriter, RequestState, shown_ids
from joiner.fastcodec import FastCodec
from schemas.avrobin import long_bytes, string_bytes

# spans[] layout written by _scan (int64): fixed header, then ITEM_FIELDS per item
# H_OVERLAP: 1 = take the dict path (a slot is both a user and an item slot, or a non-ASCII string)
H_RID0, H_RID1, H_USER, H_TS, H_US0, H_US1, H_UD0, H_UD1, H_N, H_OVERLAP, H_END = range(11)
ITEM_FIELDS = 6  # item_id, position, sparse start, sparse end, dense start, dense end
MAX_ITEMS = 4096
_NO_KEYS = np.empty((0, 2), np.int64)


@numba.njit(cache=True, nogil=True, inline="always")
def _varint(b: np.ndarray, i: int) -> tuple[int, int]:
    """(zig-zag value, next index) of the varint at ``b[i]``; IndexError over 10 bytes.

    Never reads outside ``b``: a byte past the end reads as 0, so the index returned is then
    beyond ``len(b)``, which the next ``_fits`` (every count and length goes through it) or
    the scan's end check turns into an IndexError. Why not numba's ``boundscheck`` (or a raise
    per byte): the scan and the spec check took ~20% longer with it; inlined, for the same reason."""
    shift = 0
    acc = 0
    n = len(b)
    while True:
        x = np.int64(b[i]) if 0 <= i < n else 0
        i += 1
        acc |= (x & 0x7F) << shift
        if x < 0x80:
            break
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")
    return ((acc >> 1) & 0x7FFFFFFFFFFFFFFF) ^ -(acc & 1), i  # a logical shift: right for |n| >= 2**62 too


@numba.njit(cache=True, nogil=True)
def _fits(b: np.ndarray, i: int, n: int) -> int:
    """``n`` if 0 <= n <= bytes left after ``i`` (no count or length can exceed that), else raise."""
    if n < 0 or i < 0 or n > len(b) - i:
        raise IndexError("count or length beyond the message")
    return n


@numba.njit(cache=True, nogil=True, inline="always")
def _skip_varint(b: np.ndarray, i: int) -> int:
    """The index after the varint at ``i``, its value unread (past the end: as ``_varint``)."""
    n = len(b)
    while True:
        x = b[i] if 0 <= i < n else 0
        i += 1
        if x < 0x80:
            return i


@numba.njit(cache=True, nogil=True)
def _skip_map(b: np.ndarray, i: int, arrays: bool, keys: np.ndarray) -> tuple[int, int, int]:
    """Skip a map<array<long>> (arrays) or map<float>; return (blocks end, after terminator,
    1 if a key is not ASCII or equals one of ``keys`` (rows of ``_map_keys``): then the caller
    takes the dict path, whose decoder checks UTF-8 and merges slots). Comparing the keys here,
    on the one walk, rather than walking the map again for them: ~40% of the scan's time."""
    odd = 0
    nk = keys.shape[0]
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
            for r in range(nk):
                if odd == 0 and keys[r, 1] == klen:
                    k0 = keys[r, 0]
                    same = True
                    for t in range(klen):
                        if b[k0 + t] != b[i + t]:
                            same = False
                            break
                    if same:
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
                        i = _skip_varint(b, i)
            else:
                i += _fits(b, i, 4)


@numba.njit(cache=True, nogil=True)
def _skip_longs(b: np.ndarray, i: int) -> int:
    """Skip an array<long> value (blocks of varints ended by a zero count)."""
    while True:
        n, i = _varint(b, i)
        if n == 0:
            return i
        if n < 0:
            n = -n
            _, i = _varint(b, i)
        for _ in range(_fits(b, i, n)):
            i = _skip_varint(b, i)


@numba.njit(cache=True, nogil=True)
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
        for _ in range(_fits(b, i, count)):
            klen, i = _varint(b, i)
            if n >= keys.shape[0]:
                raise IndexError("more keys than bytes")
            _fits(b, i, klen)
            keys[n, 0] = i
            keys[n, 1] = klen
            n += 1
            i = _skip_longs(b, i + klen)
    return keys[:n]


@numba.njit(cache=True, nogil=True)
def _scan(b: np.ndarray, out: np.ndarray) -> int:
    """Spans of a FeatureLog body; returns the number of int64s written (or -1 if too many items
    or ``out`` is too small). Every read and write is checked by hand (IndexError if corrupt)."""
    if len(out) < H_END:
        return -1
    n, i = _varint(b, 0)
    out[H_RID0] = i
    i += _fits(b, i, n)
    out[H_RID1] = i
    out[H_USER], i = _varint(b, i)
    out[H_TS], i = _varint(b, i)
    out[H_US0] = i
    out[H_US1], i, odd = _skip_map(b, i, True, _NO_KEYS)
    out[H_UD0] = i
    out[H_UD1], i, odd2 = _skip_map(b, i, False, _NO_KEYS)
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
            if items >= MAX_ITEMS or k + ITEM_FIELDS > len(out):
                return -1
            out[k], i = _varint(b, i)
            out[k + 1], i = _varint(b, i)
            out[k + 2] = i
            out[k + 3], i, odd = _skip_map(b, i, True, ukeys)  # odd: a slot also on the user side
            out[k + 4] = i
            out[k + 5], i, odd2 = _skip_map(b, i, False, _NO_KEYS)
            overlap |= odd | odd2
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


@numba.njit(cache=True, nogil=True, inline="always")
def _copy(out: np.ndarray, pos: int, src: bytes, a: int, b: int) -> int:
    for t in range(a, b):
        out[pos] = src[t]
        pos += 1
    return pos


@numba.njit(cache=True, nogil=True, inline="always")
def _put_long(out: np.ndarray, pos: int, n: int) -> int:
    """Avro long (zig-zag varint)."""
    x = np.uint64((n << 1) ^ (n >> 63))
    while x > 0x7F:
        out[pos] = (x & np.uint64(0x7F)) | np.uint64(0x80)
        pos += 1
        x >>= np.uint64(7)
    out[pos] = x
    return pos + 1


@numba.njit(cache=True, nogil=True, inline="always")
def _put_decimal(out: np.ndarray, pos: int, n: int) -> int:
    """``str(n)`` in ASCII (the hashes are over Python's f-string of the id)."""
    if n < 0:
        out[pos] = 45  # "-"
        pos += 1
        x = np.uint64(-(n + 1)) + np.uint64(1)  # also right for -2**63
    else:
        x = np.uint64(n)
    digits = 1
    y = x
    while y >= 10:
        y //= np.uint64(10)
        digits += 1
    for t in range(digits - 1, -1, -1):
        out[pos + t] = np.uint64(48) + x % np.uint64(10)
        x //= np.uint64(10)
    return pos + digits


@numba.njit(cache=True, nogil=True)
def _write(out: np.ndarray, pos: int, body: bytes, sp: np.ndarray, k: int, hdr: bytes, kind: bytes,
           suffix: bytes, s0: int, s1: int, msg: np.ndarray, h: np.ndarray, blk: np.ndarray) -> int:
    """One TrainingExample at ``out[pos:]`` for the item at ``sp[k:k + ITEM_FIELDS]``; its end.

    Fields in schema order: example_id, request_id, item_id, user_id, ts_ms, sparse, dense, then
    ``suffix[s0:s1]`` (labels, sample_rate, late, join_delay_ms, kind: encoded by the caller)."""
    iid = sp[k]
    r0, r1 = sp[H_RID0], sp[H_RID1]
    # example_id = blake2b-128 hex of f"{request_id}\x1f{item_id}\x1f{kind}" (joiner.core.example_id)
    m = _copy(msg, 0, body, r0, r1)
    msg[m] = 0x1F
    m = _put_decimal(msg, m + 1, iid)
    msg[m] = 0x1F
    m = _copy(msg, m + 1, kind, 0, len(kind))
    blake2b(msg, m, 16, h, blk)
    pos = _copy(out, pos, hdr, 0, len(hdr))
    out[pos] = 0x40  # string of 32 bytes
    pos = hex16(h, out, pos + 1)
    pos = _copy(out, pos, body, 0, r1)  # request_id, as the feature log has it
    pos = _put_long(out, pos, iid)
    pos = _copy(out, pos, body, r1, sp[H_US0])  # user_id, ts_ms
    pos = _copy(out, pos, body, sp[H_US0], sp[H_US1])
    pos = _copy(out, pos, body, sp[k + 2], sp[k + 3])
    out[pos] = 0
    pos = _copy(out, pos + 1, body, sp[H_UD0], sp[H_UD1])
    pos = _copy(out, pos, body, sp[k + 4], sp[k + 5])
    out[pos] = 0
    return _copy(out, pos + 1, suffix, s0, s1)


@numba.njit(cache=True, nogil=True)
def _window(body: bytes, sp: np.ndarray, hdr: bytes, seed_pre: bytes, rate: float, pos_items: np.ndarray,
            suffixes: bytes, suf_off: np.ndarray, kind: bytes, out: np.ndarray, ends: np.ndarray) -> tuple[int, int]:
    """Every shown item's window example, in feature-log order: (examples written, negatives kept).

    Item ``pos_items[j]`` is a positive with suffix ``suffixes[suf_off[j + 1]:suf_off[j + 2]]``;
    any other item a negative (suffix ``suffixes[:suf_off[1]]``), kept iff the sampling hash of
    f"{seed}\x1f{request_id}\x1f{item_id}" is below ``rate`` (joiner.core.keep_hash). Example
    ``e`` is ``out[ends[e - 1]:ends[e]]`` (from 0 for the first)."""
    r0, r1 = sp[H_RID0], sp[H_RID1]
    msg = np.empty(len(seed_pre) + (r1 - r0) + 32 + len(kind), np.uint8)
    h = np.empty(8, np.uint64)
    blk = np.empty(128, np.uint8)
    n = sp[H_N]
    pos = 0
    written = kept = 0
    for i in range(n):
        k = H_END + i * ITEM_FIELDS
        iid = sp[k]
        j = -1
        for t in range(len(pos_items)):
            if pos_items[t] == iid:
                j = t
                break
        if j < 0:
            if rate < 1.0:
                m = _copy(msg, 0, seed_pre, 0, len(seed_pre))
                m = _copy(msg, m, body, r0, r1)
                msg[m] = 0x1F
                m = _put_decimal(msg, m + 1, iid)
                blake2b(msg, m, 8, h, blk)
                if np.float64(h[0]) / 18446744073709551616.0 >= rate:
                    continue
            kept += 1
            s0, s1 = 0, suf_off[1]
        else:
            s0, s1 = suf_off[j + 1], suf_off[j + 2]
        pos = _write(out, pos, body, sp, k, hdr, kind, suffixes, s0, s1, msg, h, blk)
        ends[written] = pos
        written += 1
    return written, kept


@numba.njit(cache=True, nogil=True)
def _one(body: bytes, sp: np.ndarray, item_id: int, hdr: bytes, kind: bytes, suffix: bytes, out: np.ndarray) -> int:
    """The example of ``item_id`` (its first position) at ``out[:end]``; returns end (-1: not shown)."""
    for i in range(sp[H_N]):
        k = H_END + i * ITEM_FIELDS
        if sp[k] == item_id:
            msg = np.empty((sp[H_RID1] - sp[H_RID0]) + 32 + len(kind), np.uint8)
            return _write(out, 0, body, sp, k, hdr, kind, suffix, 0, len(suffix), msg, np.empty(8, np.uint64),
                          np.empty(128, np.uint8))
    return -1


_NO_ITEMS = np.empty(0, np.int64)


class SpliceWriter(DictWriter):
    """``joiner.core`` example writer that returns encoded TrainingExample bytes.

    A state's byte layout (``_scan``'s int64 spans) is kept on the state (``_splice``; False if
    the splice can't be used), found once per request."""

    def __init__(self, fast: FastCodec):
        self.fast = fast
        self.header = fast.codec.current["TrainingExample"].header
        self._buf = np.zeros(H_END + ITEM_FIELDS * 64, dtype=np.int64)
        self._out = np.empty(1 << 16, np.uint8)
        self._ends = np.empty(64, np.int64)
        self._suffixes: dict[tuple, tuple[bytes, bytes]] = {}  # (before, after) join_delay_ms
        # (rate, window_ms, seed) -> (labels, suffix, suffix offsets, sampling-hash prefix) of negatives
        self._negatives: dict[tuple[float, int, int], tuple[dict[str, int], bytes, np.ndarray, bytes]] = {}
        self._warm_up()

    def _warm_up(self) -> None:
        """Load the compiled code now (numba's on-disk cache), not on the first message."""
        rec = {"request_id": "w", "user_id": 1, "ts_ms": 1, "user_sparse": {"a": [1]}, "user_dense": {"d": 1.0},
               "items": [{"item_id": 1, "position": 0, "sparse": {"a": [2]}, "dense": {}}], "source": ""}
        s = RequestState("w")
        s.features, s.ts, s.fbytes = rec, 1, self.fast.encode("FeatureLog", rec)[10:]
        self.window(s, {}, {"click": 0}, 0.5, 1, 1)
        self.example(s, 1, "late-click", {"click": 1}, 1.0, True, 3)

    def scan(self, body: bytes) -> tuple[np.ndarray, int]:
        """(spans, n_int64) of a FeatureLog Avro body; raises ValueError if it is not one.

        The spans are in a buffer reused by the next call: copy what you keep."""
        need = H_END + ITEM_FIELDS * max(64, len(body) // 4)
        if len(self._buf) < need:
            self._buf = np.zeros(need, dtype=np.int64)
        try:
            k = _scan(body, self._buf)
        except IndexError as e:
            raise ValueError(f"not a FeatureLog body: {e}") from None
        if k < 0:
            raise ValueError("too many items")
        return self._buf, k

    def spans_of(self, s: RequestState) -> np.ndarray | None:
        """The state's byte spans, or None: then the dict path writes its examples (a slot both
        on the user and an item, more than MAX_ITEMS items, bytes the scanner refuses)."""
        sp = s._splice
        if sp is None and s.fbytes is not None:
            try:
                buf, k = self.scan(s.fbytes)
            except ValueError:
                sp = s._splice = False
            else:
                sp = s._splice = buf[:k].copy() if not buf[H_OVERLAP] else False
        return sp if sp is not None and sp is not False else None

    def _suffix(self, labels: dict[str, int], sample_rate: float, late: bool, join_delay_ms: int, kind: str) -> bytes:
        """labels, sample_rate, late, join_delay_ms, kind: the bytes after an example's dense map."""
        key = (tuple(labels.items()), sample_rate, late, kind)
        parts = self._suffixes.get(key)
        if parts is None:
            lb = (long_bytes(len(labels)) + b"".join(string_bytes(k) + long_bytes(v) for k, v in labels.items())
                  + b"\x00" if labels else b"\x00")
            parts = (lb + struct.pack("<f", sample_rate) + (b"\x01" if late else b"\x00"), string_bytes(kind))
            if len(self._suffixes) < 4096:  # label sets x kinds: bounded in practice, capped anyway
                self._suffixes[key] = parts
        # late examples' delays are all different: encoded each time, not cached
        return parts[0] + long_bytes(join_delay_ms) + parts[1]

    def _room(self, n: int, body: bytes, suffixes: bytes) -> np.ndarray:
        """The output buffer, grown to hold ``n`` examples of ``body`` (an example copies disjoint
        pieces of the body, plus <= 96 bytes of id and framing, plus its suffix)."""
        need = n * (len(body) + 96 + len(suffixes))
        if len(self._out) < need:
            self._out = np.empty(max(need, 2 * len(self._out)), np.uint8)
        if len(self._ends) < n:
            self._ends = np.empty(max(n, 2 * len(self._ends)), np.int64)
        return self._out

    def window(self, s: RequestState, positives: dict[int, dict[str, int]], zero: dict[str, int], rate: float,
               seed: int, window_ms: int) -> tuple[list[Any], int]:
        sp = self.spans_of(s)
        if sp is None:  # no bytes or overlapping slot names: the dict path, one example at a time
            return super().window(s, positives, zero, rate, seed, window_ms)
        key = (rate, window_ms, seed)
        neg = self._negatives.get(key)
        if neg is None or neg[0] is not zero:  # (the Joiner passes the same ``zero`` every time)
            b = self._suffix(zero, rate, False, window_ms, "window")
            neg = self._negatives[key] = (zero, b, np.array((0, len(b)), np.int64), f"{seed}\x1f".encode())
        _, blob, suf_off, seed_pre = neg
        items = _NO_ITEMS
        if positives:
            sufs = [blob, *(self._suffix(lab, 1.0, False, window_ms, "window") for lab in positives.values())]
            offs = [0]
            for b in sufs:
                offs.append(offs[-1] + len(b))
            blob, items, suf_off = b"".join(sufs), np.array(list(positives), np.int64), np.array(offs, np.int64)
        body = s.fbytes
        out = self._room(len(shown_ids(s.features)), body, blob)
        n, kept = _window(body, sp, self.header, seed_pre, rate, items, blob, suf_off, b"window", out, self._ends)
        if not n:
            return [], kept
        ends = self._ends[:n].tolist()
        raw = out[:ends[-1]].tobytes()
        a = 0
        exs = []
        for b in ends:
            exs.append(raw[a:b])
            a = b
        return exs, kept

    def example(self, s: RequestState, item_id: int, kind: str, labels: dict[str, int], sample_rate: float,
                late: bool, join_delay_ms: int) -> Any:
        sp = self.spans_of(s)
        if sp is None:  # overlapping slot names or no bytes: the dict path, then encode
            return self.fast.encode("TrainingExample", super().example(
                s, item_id, kind, labels, sample_rate, late, join_delay_ms))
        suffix = self._suffix(labels, sample_rate, late, join_delay_ms, kind)
        body = s.fbytes
        out = self._room(1, body, suffix)
        end = _one(body, sp, item_id, self.header, kind.encode(), suffix, out)
        if end < 0:
            raise KeyError(item_id)
        return out[:end].tobytes()
