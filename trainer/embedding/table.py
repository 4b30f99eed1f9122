"""Collisionless embedding table: int64 feature id -> float32 row + optimizer state, by cuckoo hashing.

API (all batched over numpy arrays; every method is thread-safe)::

    t = CuckooTable(dim=16, optimizer="adagrad", capacity=4096, init_std=0.01, seed=7)
    rows = t.lookup(ids)                      # float32[n, dim]; missing ids -> initializer, no insert
    rows = t.lookup(ids, init_missing=False)  # missing ids -> zeros
    rows = t.lookup(ids, insert=True, now=ts) # insert-or-init (new rows get last-update time ``now``)
    t.lookup(ids, out=buf)                    # into a caller's float32[n, dim] buffer
    rows, found = t.lookup_found(ids)         # + bool mask of ids that have a row; t.contains(ids)
    t.insert(ids, now=ts)                     # insert-or-init without copying rows out
    t.apply_gradients(ids, grads, now=ts)     # Adagrad / FTRL step inside the table
    t.delete(ids); t.evict_expired(now, ttl)  # eviction; freed rows are reused
    gone = t.evict_expired_ids(now, ttl)      # the same, returning the evicted ids
    ids, rows = t.drain_touched()             # ids updated since the last drain + their embeddings
    t.save(path); t2 = CuckooTable.load(path, capacity=None)
    ids, rows = t.items()                     # every live id and its embedding (copies)
    t.export(); t.restore_rows(state)         # full row state (emb, optimizer state, ts, count)
    len(t); t.nbytes; t.clock

Semantics worth knowing:
- **Distinct ids never share a row.** The index stores full 64-bit keys; a key is found only by
  exact comparison, so there are no collisions at any size (growth is by rehash into a bigger index).
- **Time** is event time in integer seconds (``now``), stored per row as uint32 (valid to 2106).
  A row's last-update time is set when it is inserted and on every gradient step; lookups do not
  refresh it. ``evict_expired(now, ttl)`` frees rows with ``now - last_update > ttl`` (exact).
  The table's clock is the largest ``now`` given to an insert or ``apply_gradients``.
- **Duplicate ids in one ``apply_gradients`` batch are summed first**, then one optimizer step is
  applied per distinct id (the gradient of the batch loss, as TF's sparse apply does). ``count``
  grows by one per occurrence, saturating at 2**31 - 1.
- Ids with no row are skipped by ``apply_gradients`` (they were filtered or evicted).
- The initializer is deterministic per (seed, id): approximately normal (Irwin-Hall of four
  uniforms) with std ``init_std``; so a missing id's ``lookup`` equals what inserting it gives.
- Adagrad: ``acc += g*g; w -= lr * g / (sqrt(acc) + eps)``; FTRL-proximal (McMahan et al. 2013)
  per coordinate, with z initialised so that the starting weight equals the initializer's.

Concurrency model: one lock per table (one writer or reader at a time); the kernels run with the
GIL released, so threads working on different tables (slots, or shards of a slot: see
``EmbeddingStore``) run in parallel. Sharding by key is how contention is cut, not finer locks.

Memory: rows live in a dense arena (struct of arrays: embedding, optimizer state, and an 8-byte
(last-update, count|touched) pair) held in private anonymous mmaps, page-aligned so a 16-float
row is one cache line, grown in place by ``arena_growth`` with mremap (no copy). The cuckoo
index (8-way buckets, two hash functions, bounded random-walk kick-out, page-aligned) holds
key + row number (12 bytes per slot) and grows by ``index_growth`` (1.5x) with a full rehash when
its load passes ``max_load`` or a kick-out path fails. Worst case right after a growth (Adagrad,
dim 16): 136 B of row + 12 / (0.96 / 1.5) B of index + <= 6.25% arena slack ~ 1.2x the
136-byte payload (key + 32 floats); at high load ~1.1x. Deleted and evicted rows go on a free list and are reused.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import threading
from pathlib import Path
from typing import Literal

import numpy as np

from streamrec.files import atomic_write
from trainer.embedding import _kernels as K

FORMAT = "streamrec.cuckoo_table"
FORMAT_VERSION = 1
_MIN_BUCKETS = 2


class _MappedArray:
    """A C-contiguous array over a private anonymous mmap: page-aligned, grows in place (mremap)."""

    def __init__(self, rows: int, width: int, dtype) -> None:
        self.width = width
        self.dtype = np.dtype(dtype)
        self.rows = rows
        self._mm = mmap.mmap(-1, self._bytes(rows), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._advise()
        self.array = self._view()

    def _advise(self) -> None:
        # transparent huge pages: far fewer page faults on growth and TLB misses on random access
        if hasattr(mmap, "MADV_HUGEPAGE"):
            with contextlib.suppress(OSError):
                self._mm.madvise(mmap.MADV_HUGEPAGE)

    def _bytes(self, rows: int) -> int:
        return max(mmap.PAGESIZE, rows * self.width * self.dtype.itemsize)

    def _view(self) -> np.ndarray:
        a = np.frombuffer(self._mm, self.dtype, count=self.rows * self.width)
        return a.reshape(self.rows, self.width)

    def grow(self, rows: int) -> np.ndarray:
        """Resize to ``rows`` (new rows are zero); the old array object must no longer be used."""
        self.array = None  # drop the export so the map may move
        self._mm.resize(self._bytes(rows))
        self._advise()
        self.rows = rows
        self.array = self._view()
        return self.array

    @property
    def nbytes(self) -> int:
        return self._bytes(self.rows)


class CuckooTable:
    """One collisionless table of ``dim``-wide rows (see the module docstring)."""

    def __init__(
        self,
        dim: int,
        optimizer: Literal["adagrad", "ftrl"] = "adagrad",
        capacity: int = 4096,
        init_std: float = 0.01,
        seed: int = 7,
        *,
        learning_rate: float = 0.05,
        initial_accumulator: float = 0.1,
        adagrad_eps: float = 1e-8,
        ftrl_beta: float = 1.0,
        ftrl_l1: float = 0.0,
        ftrl_l2: float = 0.0,
        max_load: float = 0.96,
        index_growth: float = 1.5,
        arena_growth: float = 0.0625,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if optimizer not in ("adagrad", "ftrl"):
            raise ValueError(f"optimizer must be 'adagrad' or 'ftrl', got {optimizer!r}")
        if optimizer == "ftrl" and ftrl_beta == 0 and ftrl_l2 == 0:
            raise ValueError("ftrl needs ftrl_beta > 0 or ftrl_l2 > 0")
        if not 0.5 < max_load < 1.0:
            raise ValueError(f"max_load must be in (0.5, 1), got {max_load}")
        self.dim = int(dim)
        self.optimizer = optimizer
        self.init_std = float(init_std)
        self.seed = int(seed)
        self.hyper = {
            "learning_rate": float(learning_rate),
            "initial_accumulator": float(initial_accumulator),
            "adagrad_eps": float(adagrad_eps),
            "ftrl_beta": float(ftrl_beta),
            "ftrl_l1": float(ftrl_l1),
            "ftrl_l2": float(ftrl_l2),
        }
        self.max_load = float(max_load)
        self.index_growth = float(index_growth)
        self.arena_growth = float(arena_growth)
        if self.index_growth <= 1.0 or self.arena_growth <= 0:
            raise ValueError("index_growth must be > 1 and arena_growth > 0")
        self._opt = K.OPT_ADAGRAD if optimizer == "adagrad" else K.OPT_FTRL
        self._useed = np.uint64(K.mix64(np.uint64(self.seed & 0xFFFFFFFFFFFFFFFF)))
        self._lock = threading.Lock()
        capacity = max(16, int(capacity))
        self._new_index(max(_MIN_BUCKETS, math.ceil(capacity / self.max_load / K.WAYS)))
        k = 1 if self._opt == K.OPT_ADAGRAD else 2
        self._m_emb = _MappedArray(capacity, self.dim, np.float32)
        self._m_st = _MappedArray(capacity, k * self.dim, np.float32)
        self._m_tc = _MappedArray(capacity, 2, np.uint32)
        self._bind_arena()
        self._meta = np.array([0, 0, -1, 0, 0x2545F4914F6CDD1D ^ (self.seed & 0xFFFF)], np.int64)

    # ---- construction helpers -------------------------------------------------------------

    @classmethod
    def from_config(cls, slot_cfg, capacity: int = 4096, seed: int = 7, max_load: float = 0.96,
                    index_growth: float = 1.5, arena_growth: float = 0.0625) -> CuckooTable:
        """A table for one slot's ``schemas.spec.EmbeddingSettings``."""
        c = slot_cfg
        return cls(c.dim, c.optimizer, capacity, c.init_std, seed, learning_rate=c.learning_rate,
                   initial_accumulator=c.initial_accumulator, adagrad_eps=c.adagrad_eps,
                   ftrl_beta=c.ftrl_beta, ftrl_l1=c.ftrl_l1, ftrl_l2=c.ftrl_l2,
                   max_load=max_load, index_growth=index_growth, arena_growth=arena_growth)

    def _bind_arena(self) -> None:
        self._emb = self._m_emb.array
        self._st = self._m_st.array
        self._tc = self._m_tc.array

    def _new_index(self, nb: int) -> None:
        self._m_index, self._nb = self._empty_index(nb)
        self._keys, self._rows = self._m_index[0].array.reshape(-1), self._m_index[1].array.reshape(-1)

    @staticmethod
    def _empty_index(nb: int) -> tuple[tuple[_MappedArray, _MappedArray], np.uint64]:
        keys = _MappedArray(nb * K.WAYS, 1, np.int64)  # an anonymous map starts zeroed
        rows = _MappedArray(nb * K.WAYS, 1, np.int32)
        rows.array[:] = K.EMPTY
        return (keys, rows), np.uint64(nb)

    def _max_live(self) -> int:
        return int(self._rows.shape[0] * self.max_load)

    def _grow_index(self) -> None:
        nb = int(self._nb)
        while True:
            nb = max(nb + 1, math.ceil(nb * self.index_growth))
            index, unb = self._empty_index(nb)
            keys, rows = index[0].array.reshape(-1), index[1].array.reshape(-1)
            if K.rehash(self._keys, self._rows, self._nb, keys, rows, unb, self._useed, self._meta):
                break
        nb = unb
        self._m_index, self._keys, self._rows, self._nb = index, keys, rows, nb

    def _grow_arena(self, at_least: int = 0) -> None:
        cap = self._emb.shape[0]
        new = max(at_least, cap + max(1024, int(cap * self.arena_growth)))
        self._emb = self._st = self._tc = None
        for m in (self._m_emb, self._m_st, self._m_tc):
            m.grow(new)
        self._bind_arena()

    @staticmethod
    def _now(now) -> int:
        now = int(now)
        if not 0 <= now < 2**32:
            raise ValueError(f"now must be event seconds in [0, 2**32), got {now}")
        return now

    def _ids(self, ids) -> np.ndarray:
        return np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)

    def _ftrl_denom0(self) -> float:
        h = self.hyper
        return h["ftrl_beta"] / h["learning_rate"] + h["ftrl_l2"]

    # ---- batched operations ---------------------------------------------------------------

    def _insert(self, ids: np.ndarray, now: int) -> np.ndarray:
        """Insert-or-init under the lock (caller holds it); returns row numbers."""
        h = self.hyper
        now = self._now(now)
        out_rows = np.empty(ids.shape[0], np.int64)
        start = 0
        while True:
            start, status = K.insert(
                ids, start, self._keys, self._rows, self._nb, self._useed, self._emb, self._st,
                self._tc, self._meta, self._max_live(), int(now), self._opt, self.init_std,
                h["initial_accumulator"], self._ftrl_denom0(), h["ftrl_l1"], out_rows)
            if status == K.OK:
                if now > self._meta[K.M_CLOCK]:
                    self._meta[K.M_CLOCK] = now
                return out_rows
            if status == K.NEED_ARENA:
                self._grow_arena()
            else:
                self._grow_index()

    def _out(self, n: int, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            return np.empty((n, self.dim), np.float32)
        if out.shape != (n, self.dim) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous float32[{n}, {self.dim}]")
        return out

    def lookup(self, ids, insert: bool = False, now: int = 0, init_missing: bool = True,
               out: np.ndarray | None = None) -> np.ndarray:
        """Rows of ``ids`` (float32[n, dim], a copy; or written into ``out``).

        With ``insert`` missing ids get new rows (last-update time ``now``); without, missing ids
        get the initializer's values (``init_missing``) or zeros and nothing is inserted.
        """
        ids = self._ids(ids)
        out = self._out(ids.shape[0], out)
        with self._lock:
            if insert:
                sel = self._insert(ids, now)
            else:
                sel = np.empty(ids.shape[0], np.int64)
                K.resolve(ids, self._keys, self._rows, self._nb, self._useed, sel)
            K.gather(ids, sel, self._emb, self._useed, init_missing, self.init_std, out)
        return out

    def lookup_found(self, ids, init_missing: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(rows, found mask) without inserting; missing rows are the initializer or zeros."""
        ids = self._ids(ids)
        out = np.empty((ids.shape[0], self.dim), np.float32)
        sel = np.empty(ids.shape[0], np.int64)
        with self._lock:
            K.resolve(ids, self._keys, self._rows, self._nb, self._useed, sel)
            K.gather(ids, sel, self._emb, self._useed, init_missing, self.init_std, out)
        return out, sel >= 0

    def contains(self, ids) -> np.ndarray:
        """Boolean mask: which ids have a row."""
        ids = self._ids(ids)
        sel = np.empty(ids.shape[0], np.int64)
        with self._lock:
            K.resolve(ids, self._keys, self._rows, self._nb, self._useed, sel)
        return sel >= 0

    def insert(self, ids, now: int = 0) -> None:
        """Insert-or-init without copying rows out (existing rows are untouched)."""
        ids = self._ids(ids)
        with self._lock:
            self._insert(ids, now)

    def apply_gradients(self, ids, grads, now: int = 0) -> int:
        """One optimizer step per distinct present id (duplicates' grads summed); returns ids applied."""
        ids = self._ids(ids)
        grads = np.ascontiguousarray(grads, dtype=np.float32)
        if grads.shape != (ids.shape[0], self.dim):
            raise ValueError(f"grads shape {grads.shape} != ({ids.shape[0]}, {self.dim})")
        h = self.hyper
        now = self._now(now)
        eps = h["adagrad_eps"] if self._opt == K.OPT_ADAGRAD else 0.0
        with self._lock:
            return int(K.apply_gradients(
                ids, grads, self._keys, self._rows, self._nb, self._useed, self._emb, self._st,
                self._tc, self._meta, int(now), self._opt, h["learning_rate"], eps,
                h["ftrl_beta"], h["ftrl_l1"], h["ftrl_l2"]))

    def delete(self, ids) -> int:
        """Remove ids (absent ones ignored); returns the number removed."""
        ids = self._ids(ids)
        with self._lock:
            return int(K.delete(ids, self._keys, self._rows, self._nb, self._useed, self._tc,
                                self._meta))

    def evict_expired(self, now: int | None = None, ttl: int = 0) -> int:
        """Free rows with ``now - last_update > ttl`` (``now`` defaults to the clock); ttl 0 = never."""
        if ttl <= 0:
            return 0
        with self._lock:
            now = self.clock if now is None else int(now)
            return int(K.evict_before(now - int(ttl), self._rows, self._tc, self._meta))

    def evict_expired_ids(self, now: int | None = None, ttl: int = 0) -> np.ndarray:
        """Like ``evict_expired``, returning the evicted ids (serving is told to drop them)."""
        if ttl <= 0:
            return np.empty(0, np.int64)
        with self._lock:
            now = self.clock if now is None else int(now)
            ids, rows = self._collect(-1)
            gone = ids[self._tc[rows, 0].astype(np.int64) < now - int(ttl)]
            K.delete(gone, self._keys, self._rows, self._nb, self._useed, self._tc, self._meta)
            return gone

    def drain_touched(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, embeddings) of rows updated since the last drain (live rows only); clears the marks."""
        with self._lock:
            ids, rows = K.collect(self._keys, self._rows, self._tc, -1, True, True,
                                  int(self._meta[K.M_LIVE]))
            return ids, self._emb[rows]

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, embeddings) of every live row (copies, in index order)."""
        with self._lock:
            ids, rows = self._collect(-1)
            return ids, self._emb[rows]

    def export(self, cutoff: int = -1) -> dict[str, np.ndarray]:
        """Full state of live rows updated at or after ``cutoff``: ids, emb, state, ts, count, touched."""
        with self._lock:
            ids, rows = self._collect(cutoff)
            tc = self._tc[rows]
            return {"ids": ids, "emb": self._emb[rows], "state": self._st[rows], "ts": tc[:, 0],
                    "count": tc[:, 1] & K.CNT_MASK, "touched": (tc[:, 1] & K.TOUCHED) != 0}

    def _collect(self, cutoff: int) -> tuple[np.ndarray, np.ndarray]:
        return K.collect(self._keys, self._rows, self._tc, int(cutoff), False, False,
                         int(self._meta[K.M_LIVE]))

    # ---- introspection --------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._meta[K.M_LIVE])

    def __contains__(self, key: int) -> bool:
        return bool(self.contains(np.array([key], np.int64))[0])

    @property
    def clock(self) -> int:
        """Largest event time (seconds) given to an insert or ``apply_gradients``."""
        return int(self._meta[K.M_CLOCK])

    @property
    def nbytes(self) -> int:
        """Bytes held by the index and the arena (allocated capacity, not just live rows)."""
        maps = (*self._m_index, self._m_emb, self._m_st, self._m_tc)
        return int(sum(m.nbytes for m in maps))

    @property
    def index_slots(self) -> int:
        return int(self._rows.shape[0])

    @property
    def arena_capacity(self) -> int:
        return int(self._emb.shape[0])

    def header(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "dim": self.dim,
                "optimizer": self.optimizer, "init_std": self.init_std, "seed": self.seed,
                "hyper": self.hyper, "clock": self.clock}

    # ---- persistence ----------------------------------------------------------------------

    def save(self, path: str | Path, now: int | None = None, ttl: int = 0) -> int:
        """Write live rows atomically (temp file + rename); with ``ttl`` > 0 skip rows expired at ``now``.

        Returns the number of rows written. Format: an ``.npz`` with a JSON header (format name,
        version, dim, optimizer, hyper-parameters, seed, clock) and arrays of the live rows.
        """
        with self._lock:
            now = self.clock if now is None else int(now)
        state = self.export(now - int(ttl) if ttl > 0 else -1)
        header = json.dumps(self.header()).encode()

        def write(f):
            np.savez(f, header=np.frombuffer(header, np.uint8), **state)

        atomic_write(Path(path), write)
        return int(state["ids"].shape[0])

    @classmethod
    def load(cls, path: str | Path, capacity: int | None = None, **overrides) -> CuckooTable:
        """A table from ``save``'s file; ``capacity`` (>= rows) sizes the new table, else the row count.

        ``overrides`` replace saved constructor arguments (e.g. ``max_load``, ``learning_rate``).
        """
        with np.load(Path(path), allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            if header.get("format") != FORMAT:
                raise ValueError(f"{path}: not a cuckoo table file (format {header.get('format')!r})")
            if header.get("version") != FORMAT_VERSION:
                raise ValueError(f"{path}: unsupported table format version {header.get('version')}")
            data = {k: z[k] for k in ("ids", "emb", "state", "ts", "count", "touched")}
        n = int(data["ids"].shape[0])
        args = dict(dim=header["dim"], optimizer=header["optimizer"], init_std=header["init_std"],
                    seed=header["seed"], **header["hyper"])
        args.update(overrides)
        t = cls(capacity=max(n, int(capacity or 0), 16), **args)
        t.restore_rows(data)
        t._meta[K.M_CLOCK] = max(int(header.get("clock", 0)), t.clock)
        return t

    def restore_rows(self, data: dict[str, np.ndarray]) -> None:
        """Insert rows with their full state (as ``export`` returns them), overwriting existing ones."""
        ids = self._ids(data["ids"])
        if ids.shape[0] == 0:
            return
        if data["emb"].shape[1] != self.dim or data["state"].shape[1] != self._st.shape[1]:
            raise ValueError("row shape does not match this table (dim or optimizer differ)")
        with self._lock:
            rows = self._insert(ids, 0)
            self._emb[rows] = data["emb"]
            self._st[rows] = data["state"]
            self._tc[rows, 0] = data["ts"]
            touched = np.where(np.asarray(data["touched"], bool), K.TOUCHED, np.uint32(0))
            self._tc[rows, 1] = (np.asarray(data["count"], np.uint32) & K.CNT_MASK) | touched
