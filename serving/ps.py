"""The serving parameter server: embeddings and dense weights only, fed by the trainer's syncs.

It never holds optimizer state and never inserts on lookup (an unknown id reads as zeros, which
is what the trainer's pooled model sees for an id that has not passed its frequency filter).
Rows live per slot in a sorted key index over an append-only row buffer, so a sync of many
touched rows is a few vectorised numpy operations.

Here it is an object in the trainer's process and ``push_*`` are method calls. As a separate
process the same object would sit behind a tiny RPC (or consume a Kafka topic of deltas: each
sync is one message of (slot, ids, rows) plus a dense message), since every push is an
idempotent overwrite of rows and replaying deltas in order rebuilds the same state.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from schemas.fid import slot_of


class RowMap:
    """int64 id -> float32 row; sorted keys + positions into a growing buffer."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.keys = np.empty(0, dtype=np.int64)
        self.pos = np.empty(0, dtype=np.int64)
        self.buf = np.zeros((1024, dim), dtype=np.float32)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i = np.searchsorted(self.keys, ids)
        i_c = np.minimum(i, max(len(self.keys) - 1, 0))
        found = (i < len(self.keys)) & (self.keys[i_c] == ids) if len(self.keys) else np.zeros(len(ids), bool)
        return i_c, found

    def upsert(self, ids: np.ndarray, rows: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.float32).reshape(len(ids), self.dim)
        ids, first = np.unique(ids[::-1], return_index=True)  # last write of an id wins
        rows = rows[::-1][first]
        i, found = self._find(ids)
        self.buf[self.pos[i[found]]] = rows[found]
        new = ~found
        k = int(new.sum())
        if k:
            while self.n + k > len(self.buf):
                self.buf = np.concatenate([self.buf, np.zeros_like(self.buf)])
            slots = np.arange(self.n, self.n + k, dtype=np.int64)
            self.buf[slots] = rows[new]
            self.n += k
            keys = np.concatenate([self.keys, ids[new]])
            pos = np.concatenate([self.pos, slots])
            o = np.argsort(keys, kind="stable")
            self.keys, self.pos = keys[o], pos[o]

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        if len(self.keys):
            i, found = self._find(ids)
            out[found] = self.buf[self.pos[i[found]]]
        return out

    def contains(self, ids: np.ndarray) -> np.ndarray:
        if not len(self.keys):
            return np.zeros(len(ids), bool)
        return self._find(np.asarray(ids, dtype=np.int64))[1]


class ServingPS:
    """Per-slot embedding rows + dense weights + what the last syncs reflected (freshness)."""

    def __init__(self, slot_dims: dict[int, int]) -> None:
        self.slot_dims = dict(slot_dims)
        self.tables = {s: RowMap(d) for s, d in self.slot_dims.items()}
        self.dense_state: dict[str, Any] | None = None
        self.meta: dict[str, Any] = {}
        self.sparse_syncs = 0
        self.dense_syncs = 0
        self.rows_pushed = 0
        self.newest_event_ms = 0  # event time of the newest example whose update serving holds
        self.newest_ingest_ms = 0  # wall time that example entered the pipeline (produce/read time)
        self.synced_at_ms = 0
        self._lock = threading.RLock()

    # ---- pushes from the trainer ------------------------------------------------------------
    def push_sparse(self, ids: np.ndarray, rows: dict[int, np.ndarray] | np.ndarray,
                    newest_event_ms: int = 0, newest_ingest_ms: int = 0) -> None:
        """Overwrite the rows of ``ids`` (any slots; ``rows`` per slot number or one matrix)."""
        ids = np.asarray(ids, dtype=np.int64)
        with self._lock:
            slots = slot_of(ids)
            for s in np.unique(slots).tolist():
                m = slots == s
                part = rows[s] if isinstance(rows, dict) else rows[m]
                self.tables[s].upsert(ids[m], part)
            self.rows_pushed += len(ids)
            self.sparse_syncs += 1
            self._mark(newest_event_ms, newest_ingest_ms)

    def push_slot(self, slot: int, ids: np.ndarray, rows: np.ndarray) -> None:
        with self._lock:
            self.tables[slot].upsert(ids, rows)
            self.rows_pushed += len(ids)

    def mark_synced(self, newest_event_ms: int, newest_ingest_ms: int) -> None:
        with self._lock:
            self.sparse_syncs += 1
            self._mark(newest_event_ms, newest_ingest_ms)

    def _mark(self, event_ms: int, ingest_ms: int) -> None:
        self.newest_event_ms = max(self.newest_event_ms, int(event_ms))
        self.newest_ingest_ms = max(self.newest_ingest_ms, int(ingest_ms))
        self.synced_at_ms = int(time.time() * 1000)

    def push_dense(self, state: dict[str, Any], meta: dict[str, Any]) -> None:
        with self._lock:
            self.dense_state = state
            self.meta = dict(meta)
            self.dense_syncs += 1

    # ---- reads ------------------------------------------------------------------------------
    def lookup(self, slot: int, ids: np.ndarray) -> np.ndarray:
        """Rows of ``ids`` of one slot; unknown ids read as zeros and are not inserted."""
        with self._lock:
            return self.tables[slot].lookup(ids)

    def num_rows(self) -> int:
        return sum(len(t) for t in self.tables.values())

    def freshness_ms(self, now_ms: int | None = None) -> int:
        """Wall time since the newest example reflected in serving entered the pipeline."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return now_ms - self.newest_ingest_ms if self.newest_ingest_ms else -1
