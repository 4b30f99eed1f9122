"""The archive's Parquet schema: TrainingExample flattened for columnar reads.

Layout (one row per example; written sorted by ``ts_ms`` then ``example_id``):

- scalars: ``example_id`` (string, the dedup key), ``request_id``, ``item_id`` (int64), ``user_id``,
  ``ts_ms`` (event time), ``sample_rate`` (float32), ``late`` (bool), ``join_delay_ms``, ``kind``;
- one ``list<int64>`` column per known slot, ``sparse_<slot>`` for every slot of ``schemas.fid.SLOTS``:
  the trainer gets a slot's FIDs for a whole batch as two numpy arrays (offsets, values) without
  touching a Python object (see ``slot_arrays``); null = slot absent, [] = present but empty;
- ``sparse_extra``: ``map<string, list<int64>>`` for slots outside the contract (kept, not dropped);
- ``dense``: ``map<string, float32>``; ``labels``: ``map<string, int32>`` (one key per task; read a task's
  labels as a column with ``pyarrow.compute.map_lookup``).

Files written before a slot was added lack its column; the reader fills it with nulls.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.fid import SLOTS

SLOT_NAMES: tuple[str, ...] = tuple(SLOTS)
SPARSE_PREFIX = "sparse_"

SCALARS: list[tuple[str, pa.DataType]] = [
    ("example_id", pa.string()),
    ("request_id", pa.string()),
    ("item_id", pa.int64()),
    ("user_id", pa.int64()),
    ("ts_ms", pa.int64()),
    ("sample_rate", pa.float32()),
    ("late", pa.bool_()),
    ("join_delay_ms", pa.int64()),
    ("kind", pa.string()),
]
FIDS = pa.list_(pa.int64())
SCHEMA = pa.schema(
    [pa.field(n, t, nullable=False) for n, t in SCALARS]
    + [pa.field(SPARSE_PREFIX + s, FIDS) for s in SLOT_NAMES]
    + [
        pa.field("sparse_extra", pa.map_(pa.string(), FIDS)),
        pa.field("dense", pa.map_(pa.string(), pa.float32())),
        pa.field("labels", pa.map_(pa.string(), pa.int32())),
    ]
)
_KNOWN = frozenset(SLOT_NAMES)


def _map(dicts: list[dict], keys: pa.DataType, values: pa.DataType) -> pa.MapArray:
    offsets = np.zeros(len(dicts) + 1, dtype=np.int32)
    np.cumsum([len(d) for d in dicts], out=offsets[1:])
    k = pa.array(list(itertools.chain.from_iterable(dicts)), keys)
    v = pa.array(list(itertools.chain.from_iterable(d.values() for d in dicts)), values)
    return pa.MapArray.from_arrays(pa.array(offsets), k, v)


def to_table(records: list[dict[str, Any]]) -> pa.Table:
    """TrainingExample dicts (as the codec decodes them) -> a table with ``SCHEMA``.

    Column by column (one comprehension per column, maps from flat keys/values): ~4x faster than
    handing pyarrow a list of row dicts.
    """
    arrays = [pa.array([r[n] for r in records], t) for n, t in SCALARS]
    sparses = [r["sparse"] for r in records]
    arrays += [pa.array([sp.get(s) for sp in sparses], FIDS) for s in SLOT_NAMES]
    extra_type = SCHEMA.field("sparse_extra").type
    if any(not _KNOWN.issuperset(sp) for sp in sparses):
        extra = [[(k, v) for k, v in sp.items() if k not in _KNOWN] or None for sp in sparses]
        arrays.append(pa.array(extra, extra_type))
    else:
        arrays.append(pa.nulls(len(records), extra_type))
    arrays.append(_map([r["dense"] for r in records], pa.string(), pa.float32()))
    arrays.append(_map([r["labels"] for r in records], pa.string(), pa.int32()))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def to_records(batch: pa.RecordBatch | pa.Table) -> list[dict[str, Any]]:
    """The inverse of ``to_table`` (for tests, tools and consumers that want dicts)."""
    rows = batch.to_pylist()
    out = []
    for row in rows:
        sparse = {s: row[SPARSE_PREFIX + s] for s in SLOT_NAMES if row.get(SPARSE_PREFIX + s) is not None}
        sparse.update(dict(row.get("sparse_extra") or []))
        rec = {n: row[n] for n, _ in SCALARS}
        rec["sparse"] = sparse
        rec["dense"] = dict(row["dense"] or [])
        rec["labels"] = dict(row["labels"] or [])
        out.append(rec)
    return out


def conform(table: pa.Table) -> pa.Table:
    """Bring a table read from an older file to ``SCHEMA`` (missing slot columns -> nulls)."""
    if table.schema.equals(SCHEMA):
        return table
    arrays = []
    for f in SCHEMA:
        if f.name in table.column_names:
            arrays.append(table.column(f.name).cast(f.type))
        else:
            arrays.append(pa.nulls(table.num_rows, f.type))
    return pa.table(arrays, schema=SCHEMA)


def slot_arrays(batch: pa.RecordBatch, slot: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, fids) of one slot over a batch, zero-copy: row i's FIDs are fids[offsets[i]:offsets[i+1]]."""
    col = batch.column(SPARSE_PREFIX + slot)
    offsets = col.offsets.to_numpy()  # respects a slice; .values does not, hence the re-basing
    values = col.values.to_numpy()
    base = int(offsets[0])
    return offsets - base, values[base: int(offsets[-1])]


def label_array(batch: pa.RecordBatch, task: str, missing: int = 0) -> np.ndarray:
    """One task's labels over a batch as an int32 numpy array (``missing`` where the task is absent)."""
    col = pc.map_lookup(batch.column("labels"), pa.scalar(task, pa.string()), "first")
    return col.fill_null(missing).to_numpy().astype(np.int32, copy=False)


def sort_by_time(table: pa.Table) -> pa.Table:
    """Event-time order within an hour (ties broken by example_id, so the order is deterministic)."""
    idx = pc.sort_indices(table, sort_keys=[("ts_ms", "ascending"), ("example_id", "ascending")])
    return table.take(idx)
