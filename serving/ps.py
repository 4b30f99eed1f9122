"""The serving parameter server: embeddings and dense weights only, fed by the trainer's deltas.

It never holds optimizer state and never inserts on lookup (an unknown id reads as zeros, which
is what the trainer's pooled model sees for an id that has not passed its frequency filter).
Rows live per slot in a ``ServingTable`` (collisionless cuckoo index over an embedding arena),
so a delta of k touched rows costs O(k) whatever the table's size.

The same object serves two places: inside the trainer's process (a sync is a method call: tests,
``Trainer.score`` comparisons) and in a serving replica (``serving.replica``), where the calls
come from the deltas on the params topic. Every push is an idempotent overwrite or delete, so
replaying deltas in order rebuilds the same state.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from schemas.fid import slot_of
from serving.table import ServingTable


class ServingPS:
    """Per-slot embedding rows + dense weights + what the last syncs reflected (freshness)."""

    needs_full_sync = True  # after a trainer restore, push every row (an in-process copy starts empty)

    def __init__(self, slot_dims: dict[int, int], chunk_rows: int = 65536) -> None:
        self.slot_dims = dict(slot_dims)
        self.chunk_rows = chunk_rows
        self.tables = {s: ServingTable(d, chunk_rows=chunk_rows) for s, d in self.slot_dims.items()}
        self.dense_state: dict[str, Any] | None = None
        self.meta: dict[str, Any] = {}
        self.sparse_syncs = 0
        self.dense_syncs = 0
        self.rows_pushed = 0
        self.rows_deleted = 0
        self.newest_event_ms = 0  # event time of the newest example whose update serving holds
        self.newest_ingest_ms = 0  # wall time that example entered the pipeline (produce/read time)
        self.synced_at_ms = 0
        self._lock = threading.RLock()

    # ---- pushes from the trainer (or from deltas) ------------------------------------------
    def push_sparse(self, ids: np.ndarray, rows: dict[int, np.ndarray] | np.ndarray,
                    newest_event_ms: int = 0, newest_ingest_ms: int = 0) -> None:
        """Overwrite the rows of ``ids`` (any slots; ``rows`` per slot number or one matrix)."""
        ids = np.asarray(ids, dtype=np.int64)
        slots = slot_of(ids)
        for s in np.unique(slots).tolist():
            m = slots == s
            self.push_slot(s, ids[m], rows[s] if isinstance(rows, dict) else rows[m])
        self.mark_synced(newest_event_ms, newest_ingest_ms)

    def _table(self, slot: int, dim: int) -> ServingTable:
        t = self.tables.get(slot)
        if t is None:  # a replica learns its slots from the deltas
            with self._lock:
                t = self.tables.setdefault(slot, ServingTable(dim, chunk_rows=self.chunk_rows))
                self.slot_dims.setdefault(slot, dim)
        return t

    def push_slot(self, slot: int, ids: np.ndarray, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float32)
        self._table(slot, rows.shape[1]).upsert(ids, rows)  # the table locks itself, in chunks
        with self._lock:
            self.rows_pushed += len(ids)

    def delete_rows(self, slot: int, ids: np.ndarray) -> int:
        """Drop rows training evicted (TTL); absent ids are ignored."""
        t = self.tables.get(slot)
        n = t.delete(ids) if t is not None else 0
        with self._lock:
            self.rows_deleted += n
        return n

    def mark_synced(self, newest_event_ms: int, newest_ingest_ms: int, oldest_ingest_ms: int = 0) -> None:
        with self._lock:
            self.sparse_syncs += 1
            self.newest_event_ms = max(self.newest_event_ms, int(newest_event_ms))
            self.newest_ingest_ms = max(self.newest_ingest_ms, int(newest_ingest_ms))
            self.synced_at_ms = int(time.time() * 1000)

    def push_dense(self, state: dict[str, Any], meta: dict[str, Any]) -> None:
        with self._lock:
            self.dense_state = state
            self.meta = dict(meta)
            self.dense_syncs += 1

    # ---- reads ------------------------------------------------------------------------------
    def lookup(self, slot: int, ids: np.ndarray, dim: int | None = None) -> np.ndarray:
        """Rows of ``ids`` of one slot; unknown ids read as zeros and are not inserted.

        A slot no delta has named yet reads as zeros of ``dim`` (default: its known dim)."""
        t = self.tables.get(slot)
        if t is None:
            return np.zeros((len(ids), dim if dim is not None else self.slot_dims[slot]), np.float32)
        return t.lookup(ids)

    def contains(self, slot: int, ids: np.ndarray) -> np.ndarray:
        t = self.tables.get(slot)
        return t.contains(ids) if t is not None else np.zeros(len(ids), bool)

    def num_rows(self) -> int:
        return sum(len(t) for t in self.tables.values())

    def freshness_ms(self, now_ms: int | None = None) -> int:
        """Wall time since the newest example reflected in serving entered the pipeline."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return now_ms - self.newest_ingest_ms if self.newest_ingest_ms else -1
