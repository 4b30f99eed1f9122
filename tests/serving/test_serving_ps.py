"""Serving table and PS: overwrite/delete semantics, never inserts on lookup, equal to a dict."""

from __future__ import annotations

import numpy as np

from schemas.fid import fid
from serving.ps import ServingPS
from serving.table import ServingTable


def test_upsert_overwrites_and_lookup_never_inserts():
    m = ServingTable(dim=3)
    ids = np.array([5, 1, 9], dtype=np.int64)
    m.upsert(ids, np.arange(9, dtype=np.float32).reshape(3, 3))
    assert np.array_equal(m.lookup(np.array([1, 5, 9])), np.array([[3, 4, 5], [0, 1, 2], [6, 7, 8]]))
    # overwrite one, add two, one duplicated in the push: the last write wins
    m.upsert(np.array([9, 2, 2, 7]), np.array([[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4]], dtype=np.float32))
    got = m.lookup(np.array([9, 2, 7, 5, 42]))
    assert np.array_equal(got, np.array([[1, 1, 1], [3, 3, 3], [4, 4, 4], [0, 1, 2], [0, 0, 0]]))
    assert len(m) == 5
    assert not m.contains(np.array([42]))[0] and len(m) == 5
    assert m.delete(np.array([9, 42])) == 1 and len(m) == 4
    assert not m.contains(np.array([9]))[0] and m.lookup(np.array([9])).tolist() == [[0, 0, 0]]


def test_many_pushes_and_deletes_match_a_dict_through_growth():
    rng = np.random.default_rng(3)
    m = ServingTable(dim=2, capacity=16, chunk_rows=300)  # small: index and arena grow many times
    truth: dict[int, np.ndarray] = {}
    for _ in range(30):
        ids = rng.integers(-5000, 5000, 700).astype(np.int64) << 40  # high bits set, like FIDs
        rows = rng.normal(size=(700, 2)).astype(np.float32)
        m.upsert(ids, rows)
        for i, r in zip(ids.tolist(), rows, strict=True):
            truth[i] = r
        gone = rng.choice(np.array(sorted(truth), np.int64), 100, replace=False)
        assert m.delete(gone) == 100
        for g in gone.tolist():
            del truth[g]
    keys = np.array(sorted(truth), dtype=np.int64)
    assert np.array_equal(m.lookup(keys), np.stack([truth[k] for k in keys.tolist()]))
    assert len(m) == len(truth)
    ids, rows = m.items()
    assert sorted(ids.tolist()) == keys.tolist()
    assert np.array_equal(rows[np.argsort(ids)], m.lookup(keys))


def test_serving_ps_routes_by_slot_deletes_and_tracks_freshness():
    ps = ServingPS({1: 2, 6: 4})
    u, i = fid(1, 1), fid(6, 1)
    ps.push_slot(1, np.array([u]), np.ones((1, 2), np.float32))
    ps.push_slot(6, np.array([i]), np.full((1, 4), 2, np.float32))
    ps.mark_synced(newest_event_ms=123, newest_ingest_ms=1000)
    assert ps.lookup(1, np.array([u])).tolist() == [[1.0, 1.0]]
    assert ps.lookup(6, np.array([i, fid(6, 2)])).tolist() == [[2.0] * 4, [0.0] * 4]
    assert ps.num_rows() == 2 and ps.newest_event_ms == 123
    assert ps.freshness_ms(now_ms=1500) == 500
    assert ps.delete_rows(6, np.array([i])) == 1 and ps.num_rows() == 1 and ps.rows_deleted == 1
