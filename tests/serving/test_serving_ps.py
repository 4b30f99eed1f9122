"""Serving PS row storage: overwrite semantics, never inserts on lookup."""

from __future__ import annotations

import numpy as np

from schemas.fid import fid
from serving.ps import RowMap, ServingPS


def test_rowmap_upsert_overwrites_and_lookup_never_inserts():
    m = RowMap(dim=3)
    ids = np.array([5, 1, 9], dtype=np.int64)
    m.upsert(ids, np.arange(9, dtype=np.float32).reshape(3, 3))
    assert np.array_equal(m.lookup(np.array([1, 5, 9])), np.array([[3, 4, 5], [0, 1, 2], [6, 7, 8]]))
    # overwrite one, add two, one duplicated in the push: the last write wins
    m.upsert(np.array([9, 2, 2, 7]), np.array([[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4]], dtype=np.float32))
    got = m.lookup(np.array([9, 2, 7, 5, 42]))
    assert np.array_equal(got, np.array([[1, 1, 1], [3, 3, 3], [4, 4, 4], [0, 1, 2], [0, 0, 0]]))
    assert len(m) == 5
    assert not m.contains(np.array([42]))[0]


def test_rowmap_many_pushes_match_a_dict():
    rng = np.random.default_rng(3)
    m = RowMap(dim=2)
    truth: dict[int, np.ndarray] = {}
    for _ in range(30):
        ids = rng.integers(0, 5000, 400).astype(np.int64)
        rows = rng.normal(size=(400, 2)).astype(np.float32)
        m.upsert(ids, rows)
        for i, r in zip(ids.tolist(), rows, strict=True):
            truth[i] = r
    keys = np.array(sorted(truth), dtype=np.int64)
    assert np.array_equal(m.lookup(keys), np.stack([truth[k] for k in keys.tolist()]))
    assert len(m) == len(truth)


def test_serving_ps_routes_by_slot_and_tracks_freshness():
    ps = ServingPS({1: 2, 6: 4})
    u, i = fid(1, 1), fid(6, 1)
    ps.push_slot(1, np.array([u]), np.ones((1, 2), np.float32))
    ps.push_slot(6, np.array([i]), np.full((1, 4), 2, np.float32))
    ps.mark_synced(newest_event_ms=123, newest_ingest_ms=1000)
    assert ps.lookup(1, np.array([u])).tolist() == [[1.0, 1.0]]
    assert ps.lookup(6, np.array([i, fid(6, 2)])).tolist() == [[2.0] * 4, [0.0] * 4]
    assert ps.num_rows() == 2 and ps.newest_event_ms == 123
    assert ps.freshness_ms(now_ms=1500) == 500
