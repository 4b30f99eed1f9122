"""The serving table: int64 FID -> float32 embedding, collisionless, with no optimizer state.

Serving receives rows, never gradients: a delta overwrites the rows it names (inserting the new
ones) and deletes the ids training evicted. The index is the training table's cuckoo index
(``trainer.embedding._kernels``: exact 64-bit keys, two hashes, 8-way buckets, growth by rehash),
so an upsert of k rows costs O(k) probes wherever the table stands. The sorted-array map it
replaces (``RowMap``, kept for the benchmark beside it) re-sorted every key whenever one new id
arrived: O(n log n) per sync on a table of n rows.

Thread safety: one lock per table. Scoring threads read while the delta thread writes; a big
delta is applied in chunks (``chunk_rows``) so a lookup never waits behind a whole delta.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from serving import _kernels as SK
from trainer.embedding import _kernels as K

_MIN_BUCKETS = 2


class ServingTable:
    """One slot's rows; ``upsert``, ``delete``, ``lookup`` are batched over numpy arrays."""

    def __init__(self, dim: int, capacity: int = 1024, seed: int = 7, max_load: float = 0.9,
                 index_growth: float = 1.5, arena_growth: float = 0.25, chunk_rows: int = 65536) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.max_load = float(max_load)
        self.index_growth = float(index_growth)
        self.arena_growth = float(arena_growth)
        self.chunk_rows = int(chunk_rows)
        self._seed = np.uint64(K.mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF)))
        self._lock = threading.Lock()
        capacity = max(16, int(capacity))
        self._keys, self._rows, self._nb = self._empty_index(max(_MIN_BUCKETS, math.ceil(capacity / max_load / K.WAYS)))
        self._emb = np.zeros((capacity, self.dim), np.float32)
        self._nxt = np.full(capacity, -1, np.int64)
        self._meta = np.array([0, 0, -1, 0, 0x2545F4914F6CDD1D ^ (seed & 0xFFFF)], np.int64)

    @staticmethod
    def _empty_index(nb: int) -> tuple[np.ndarray, np.ndarray, np.uint64]:
        return np.zeros(nb * K.WAYS, np.int64), np.full(nb * K.WAYS, K.EMPTY, np.int32), np.uint64(nb)

    def _grow_index(self) -> None:
        nb = int(self._nb)
        while True:
            nb = max(nb + 1, math.ceil(nb * self.index_growth))
            keys, rows, unb = self._empty_index(nb)
            if K.rehash(self._keys, self._rows, self._nb, keys, rows, unb, self._seed, self._meta):
                break
        self._keys, self._rows, self._nb = keys, rows, unb

    def _grow_arena(self, at_least: int) -> None:
        cap = self._emb.shape[0]
        new = max(at_least, cap + max(1024, int(cap * self.arena_growth)))
        emb = np.empty((new, self.dim), np.float32)
        emb[:cap] = self._emb
        nxt = np.full(new, -1, np.int64)
        nxt[:cap] = self._nxt
        self._emb, self._nxt = emb, nxt

    def _ids(self, ids) -> np.ndarray:
        return np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)

    def upsert(self, ids, rows) -> None:
        """Overwrite the rows of ``ids`` (new ids get rows); a repeated id: its last row wins."""
        ids = self._ids(ids)
        rows = np.ascontiguousarray(rows, dtype=np.float32).reshape(ids.shape[0], self.dim)
        for a in range(0, ids.shape[0], self.chunk_rows):
            part, vals = ids[a:a + self.chunk_rows], rows[a:a + self.chunk_rows]
            with self._lock:
                start = 0
                while True:
                    start, status = SK.upsert(part, vals, start, self._keys, self._rows, self._nb, self._seed,
                                              self._emb, self._nxt, self._meta,
                                              int(self._rows.shape[0] * self.max_load))
                    if status == K.OK:
                        break
                    if status == K.NEED_ARENA:
                        self._grow_arena(int(self._meta[K.M_LIVE]) + part.shape[0] - start)
                    else:
                        self._grow_index()

    def delete(self, ids) -> int:
        """Remove ids (absent ones ignored); returns the number removed."""
        ids = self._ids(ids)
        with self._lock:
            return int(SK.delete(ids, self._keys, self._rows, self._nb, self._seed, self._nxt, self._meta))

    def lookup_found(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(rows, found): unknown ids read as zeros and are not inserted."""
        ids = self._ids(ids)
        out = np.empty((ids.shape[0], self.dim), np.float32)
        sel = np.empty(ids.shape[0], np.int64)
        with self._lock:
            K.resolve(ids, self._keys, self._rows, self._nb, self._seed, sel)
            K.gather(ids, sel, self._emb, self._seed, False, 0.0, out)
        return out, sel >= 0

    def lookup(self, ids) -> np.ndarray:
        return self.lookup_found(ids)[0]

    def contains(self, ids) -> np.ndarray:
        return self.lookup_found(ids)[1]

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, rows) of every live row, in index order (copies)."""
        with self._lock:
            live = self._rows >= 0
            ids, rows = self._keys[live].copy(), self._rows[live].astype(np.int64)
            return ids, self._emb[rows]

    def __getstate__(self) -> dict:
        """Picklable (the trainer's evaluator, which keeps counts in one, travels in snapshots)."""
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self._meta[K.M_LIVE])

    @property
    def nbytes(self) -> int:
        return int(self._keys.nbytes + self._rows.nbytes + self._emb.nbytes + self._nxt.nbytes)
