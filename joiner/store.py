"""Join state in two layers: a cache of live Python objects bounded in bytes, then RocksDB.

Why two layers: most actions come seconds after their feature log, so the hot state is a
small, recent set best kept as Python objects (no (de)serialization per event); a few come
days later and must still find their features, so every state also lives in RocksDB
(rocksdict) until the join's own TTL rules (event time, ``joiner.core``) delete it. RocksDB's
own TTL only drops keys at compaction, so expiry here is exact and timestamp-based: each
state has one event-time timer, indexed in a ``timers`` column family by (time, key), and
``due(watermark)`` sweeps that index in time order, at most ``sweep_limit`` keys per call.

Write-back with checkpoints: changed states are only marked dirty; ``checkpoint(meta)``
writes all of them, their timer index changes and the caller's ``meta`` (consumed offsets,
watermarks) in ONE RocksDB WriteBatch, so state and offsets are always consistent on disk.
A state is saved in two parts (``RequestState.to_parts``): its feature log, in a ``features``
column family, written once; and the small rest, rewritten at each change. With a backlog
the feature logs are consumed far ahead of their actions, so most states are saved two or
three times: those later writes are now ~50 bytes, not ~1.4 KB.
Cache eviction (LRU by estimated bytes) never drops unsaved changes: a dirty state is
serialized into a spill buffer that the next checkpoint writes.
"""

from __future__ import annotations

import heapq
import struct
from collections import OrderedDict
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from joiner.config import JoinerConfig
from joiner.core import RequestState

_TS = struct.Struct(">q")  # big-endian signed: keys sort by time (after the sign flip below)
_SIGN = 1 << 63
_ENTRY_OVERHEAD = 240  # bytes of a cache entry beyond its state (slots object, dict slot, key)
_TIMER_NONE = -1


_TKEY = struct.Struct(">Q")  # timer index key: (time + 2**63) big-endian, then the request id


def _ts_key(ts: int, rid: bytes) -> bytes:
    return _TKEY.pack(ts + _SIGN) + rid


class Entry:
    __slots__ = ("state", "charge", "timer", "ptimer", "dirty", "fsaved")

    def __init__(self, state: RequestState | None, charge: int, timer: int | None, ptimer: int | None):
        self.state = state
        self.charge = charge
        self.timer = timer  # current event-time timer (None: none)
        self.ptimer = ptimer  # the timer as saved in RocksDB (None: none saved)
        self.dirty = False
        self.fsaved = False  # its feature part is in RocksDB


class StateStore:
    """Cache first, then RocksDB; see the module docstring."""

    def __init__(self, path: Path, cache_bytes: int, bytes_per_state_byte: float = 6.5, sweep_limit: int = 20_000,
                 write_buffer_mb: int = 16):
        path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.set_write_buffer_size(write_buffer_mb << 20)
        opts.set_max_write_buffer_number(2)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        self.db = Rdict(str(path), options=opts, column_families={"timers": opts, "meta": opts, "features": opts})
        self._timers = self.db.get_column_family("timers")
        self._meta = self.db.get_column_family("meta")
        self._features = self.db.get_column_family("features")
        self._h_timers = self.db.get_column_family_handle("timers")
        self._h_meta = self.db.get_column_family_handle("meta")
        self._h_features = self.db.get_column_family_handle("features")
        self.cache_bytes = cache_bytes
        self.factor = bytes_per_state_byte
        self.sweep_limit = sweep_limit
        self.cache: OrderedDict[str, Entry] = OrderedDict()
        self.cached_bytes = 0
        self.dirty: dict[str, Entry] = {}
        # evicted while dirty: (to_parts() or None if deleted, entry)
        self.spill: dict[str, tuple[tuple[bytes, bytes | None] | None, Entry]] = {}
        self._heap: list[tuple[int, str]] = []  # timers set since the last checkpoint
        self._cursor = -_SIGN  # timer index keys below this were swept already
        self.hits = self.misses = self.evictions = 0
        self._last_size = 0

    @classmethod
    def open(cls, cfg: JoinerConfig, path: Path | None = None) -> StateStore:
        return cls(path or cfg.state_dir, cfg.cache_bytes, cfg.cache_bytes_per_state_byte, cfg.sweep_limit,
                   cfg.rocksdb_write_buffer_mb)

    # ---- reads ----------------------------------------------------------------------------
    def get(self, rid: str) -> Entry | None:
        e = self.cache.get(rid)
        if e is not None:
            self.cache.move_to_end(rid)
            self.hits += 1
            return e
        self.misses += 1
        spilled = self.spill.pop(rid, None)
        if spilled is not None:
            e = spilled[1]
            if spilled[0] is not None:
                e.state = RequestState.from_parts(*spilled[0])
            self.dirty[rid] = e  # still unsaved
        else:
            k = rid.encode()
            raw = self.db.get(k)
            if raw is None:
                return None
            timer = _TS.unpack_from(raw)[0]
            timer = None if timer == _TIMER_NONE else timer
            small = raw[8:]
            fpart = self._features.get(k) if RequestState.parts_need_features(small) else None
            e = Entry(RequestState.from_parts(small, fpart), self._charge(len(raw) + len(fpart or b"")), timer, timer)
            e.fsaved = fpart is not None
        self._admit(rid, e)
        return e

    def put(self, rid: str, state: RequestState | None, timer: int | None, entry: Entry | None,
            size_hint: int = 0) -> Entry:
        """Record a key's new state (None = delete) and timer; saved at the next checkpoint."""
        if entry is None:
            entry = Entry(state, self._charge(size_hint), None, None)
            self._admit(rid, entry)
        elif size_hint:
            new = self._charge(size_hint)
            self.cached_bytes += new - entry.charge
            entry.charge = new
        entry.state = state
        if timer != entry.timer:
            entry.timer = timer
            if timer is not None:
                heapq.heappush(self._heap, (timer, rid))
        if not entry.dirty:
            entry.dirty = True
            self.dirty[rid] = entry
        if state is None:  # deleted: no need to keep it in memory beyond the checkpoint
            self.cache.move_to_end(rid, last=False)
        if self.cached_bytes > self.cache_bytes:
            self._evict()
        return entry

    # ---- timers ---------------------------------------------------------------------------
    def due(self, watermark: int) -> list[str]:
        """Keys whose timer may be due at ``watermark`` (callers re-check ``entry.timer``)."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            out.append(heapq.heappop(heap)[1])
        if watermark < self._cursor:
            return out
        start = _ts_key(self._cursor, b"")
        end = _ts_key(watermark + 1, b"") if watermark < _SIGN - 1 else b"\xff" * 9
        exhausted = True
        for k in self._timers.keys(from_key=start):
            if k >= end:
                break
            if len(out) >= self.sweep_limit:
                exhausted = False
                break
            self._cursor = struct.unpack_from(">Q", k)[0] - _SIGN
            out.append(k[8:].decode())
        if exhausted:
            self._cursor = max(self._cursor, watermark + 1)
        return out

    # ---- checkpoint -----------------------------------------------------------------------
    def checkpoint(self, meta: dict[bytes, bytes]) -> int:
        """Write every change and ``meta`` in one WriteBatch; return the number of states written."""
        wb = WriteBatch(raw_mode=True)
        put, delete = wb.put, wb.delete
        ht, hf = self._h_timers, self._h_features
        pack, tkey = _TS.pack, _TKEY.pack
        cache = self.cache
        factor = self.factor
        need_features = RequestState.parts_need_features
        n = 0
        for src in (self.dirty.items(), self.spill.items()):
            for rid, e in src:
                if type(e) is tuple:  # spilled: (to_parts() or None, entry)
                    parts, e = e
                else:
                    parts = None
                k = rid.encode()
                pt, t = e.ptimer, e.timer
                if pt is not None and pt != t:
                    delete(tkey(pt + _SIGN) + k, ht)
                if e.state is None and parts is None:
                    delete(k)
                    if e.fsaved:
                        delete(k, hf)
                        e.fsaved = False
                    if pt is not None and pt == t:
                        delete(tkey(pt + _SIGN) + k, ht)
                    e.ptimer = e.timer = None
                else:
                    if parts is not None:
                        small, fpart = parts
                    elif e.fsaved:  # the usual rewrite: the feature part is saved, the charge counts it
                        small, fpart = e.state.to_parts(features=False)
                    else:
                        small, fpart = e.state.to_parts()
                        new = int((len(small) + len(fpart or b"") + 8) * factor) + _ENTRY_OVERHEAD  # _charge
                        if rid in cache:
                            self.cached_bytes += new - e.charge
                        e.charge = new
                    put(k, pack(_TIMER_NONE if t is None else t) + small)
                    if not need_features(small):
                        if e.fsaved:
                            delete(k, hf)
                            e.fsaved = False
                    elif not e.fsaved:
                        put(k, fpart, hf)
                        e.fsaved = True
                    if t is not None and t != pt:
                        put(tkey(t + _SIGN) + k, b"", ht)
                    e.ptimer = t
                e.dirty = False
                n += 1
        for mk, mv in meta.items():
            wb.put(mk, mv, self._h_meta)
        self.db.write(wb)
        for rid, e in self.dirty.items():
            if e.state is None and rid in cache:
                self.cached_bytes -= cache.pop(rid).charge
        self.dirty.clear()
        self.spill.clear()
        if self._heap:
            self._cursor = min(self._cursor, self._heap[0][0])
            self._heap.clear()
        if self.cached_bytes > self.cache_bytes:
            self._evict()
        return n

    def meta(self, key: bytes) -> bytes | None:
        return self._meta.get(key)

    # ---- memory ---------------------------------------------------------------------------
    def _charge(self, nbytes: int) -> int:
        return int(nbytes * self.factor) + _ENTRY_OVERHEAD

    def _admit(self, rid: str, e: Entry) -> None:
        self.cache[rid] = e
        self.cached_bytes += e.charge
        if self.cached_bytes > self.cache_bytes:
            self._evict()

    def _evict(self) -> None:
        target = self.cache_bytes * 0.9
        cache = self.cache
        while self.cached_bytes > target and len(cache) > 1:
            rid, e = cache.popitem(last=False)
            self.cached_bytes -= e.charge
            self.evictions += 1
            if e.dirty:
                self.dirty.pop(rid, None)
                parts = e.state.to_parts() if e.state is not None else None
                e.state = None
                self.spill[rid] = (parts, e)

    def size_bytes(self) -> int:
        """RocksDB's estimate of its live data size (for the metrics; the last value once closed)."""
        if self._timers is None:
            return self._last_size
        total = 0
        for cf in (self.db, self._timers, self._meta, self._features):
            try:
                total += int(cf.property_int_value("rocksdb.estimate-live-data-size") or 0)
                total += int(cf.property_int_value("rocksdb.cur-size-all-mem-tables") or 0)
            except Exception:  # property names differ across RocksDB builds
                pass
        self._last_size = total
        return total

    def close(self) -> None:
        self.size_bytes()
        # the column-family handles keep the DB (and its LOCK) alive: drop them first
        for cf in (self._timers, self._meta, self._features):
            cf.close()
        self._timers = self._meta = self._features = self._h_timers = self._h_meta = self._h_features = None
        self.db.close()
