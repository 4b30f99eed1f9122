"""Touched-key sync: serving equals training for touched ids, untouched ids stay, no optimizer state."""

from __future__ import annotations

import numpy as np

from serving.model_server import ModelServer
from tests.conftest import movielens_with
from trainer.config import TrainerConfig
from trainer.loop import Trainer
from trainer.sources import MemorySource
from trainer.synthetic import synthetic_examples

SPEC = movielens_with({}, keep=["user_id", "item_id", "genre"])  # + the cross user_genre
SLOTS_USED = SPEC.model_slots


def cfg(tmp_path, **over) -> TrainerConfig:
    return TrainerConfig(batch_size=64, workers=2, snapshot_dir=tmp_path / "snaps", snapshot_every_s=0,
                         metrics_csv=None, plot=None, sparse_sync_interval_s=3600, dense_sync_interval_s=3600, **over)


def ids_by_slot(records, slot):
    return np.unique(np.array([f for r in records for f in r["sparse"].get(slot, [])], dtype=np.int64))


def test_sync_ships_touched_rows_exactly_and_leaves_the_rest(tmp_path):
    t = Trainer(cfg(tmp_path), SPEC)
    first = synthetic_examples(SPEC, 3000, users=100, items=60, seed=1)
    t.run(MemorySource(first, name="first"))  # ends with a sync
    before = {s: t.serving.lookup(SPEC.number(s), ids_by_slot(first, s)) for s in SLOTS_USED}
    # the second stream only has users 0..9 and items 0..9: every other id is untouched
    second = [r for r in synthetic_examples(SPEC, 3000, users=100, items=60, seed=2)
              if r["user_id"] < 10 and r["item_id"] < 10]
    assert len(second) > 50
    t.run(MemorySource(second, name="second"))
    for s in SLOTS_USED:
        slot = SPEC.number(s)
        all_ids = ids_by_slot(first, s)
        touched = ids_by_slot(second, s)
        train_rows, found = t.ps.rows(s, touched)
        assert found.all()
        assert np.array_equal(t.serving.lookup(slot, touched), train_rows), s
        untouched = np.setdiff1d(all_ids, touched)
        idx = np.searchsorted(all_ids, untouched)
        assert np.array_equal(t.serving.lookup(slot, untouched), before[s][idx]), s
        if s != "genre":  # genre ids appear everywhere; user/item (and cross) ids outside 0..9 exist, untouched
            assert len(untouched) > 0
        changed = ~np.all(t.serving.lookup(slot, touched) == before[s][np.searchsorted(all_ids, touched)], axis=1)
        assert changed.any(), f"{s}: touched rows did not move"
    # embeddings only: serving rows are exactly dim wide and hold no optimizer state
    for s in SLOTS_USED:
        table = t.serving.tables[SPEC.number(s)]
        assert table.dim == table.lookup([0]).shape[1] == SPEC.settings(s).dim
    assert not hasattr(t.serving, "opt") and set(vars(t.serving)) >= {"tables", "dense_state"}
    state_keys = set(t.serving.dense_state)
    assert state_keys == set(t.ps.model.state_dict())  # dense weights, not the optimizer's moments
    assert t.serving.sparse_syncs >= 2 and t.serving.newest_event_ms == max(r["ts_ms"] for r in second + first)


def test_model_server_scores_with_serving_weights_and_corrects_sampling(tmp_path):
    t = Trainer(cfg(tmp_path), SPEC)
    recs = synthetic_examples(SPEC, 4000, users=60, items=40, seed=3, keep_rate=0.25)
    t.run(MemorySource(recs))
    assert t.ps.keep_rate == 0.25
    server = ModelServer(t.serving)
    probe = recs[-50:]
    got = server.score_records(probe)["click"]
    # the same batch through the training replica, no update: raw p, then the log-odds correction
    raw = t.score(probe)
    assert np.allclose(got, raw / (raw + (1 - raw) / 0.25), atol=1e-5)
    assert np.all(got < raw)  # sampled negatives: corrected scores are lower
    # a request: FeatureLog-shaped, items ranked, unknown ids read as zeros and are not inserted
    r = probe[0]
    req = {"request_id": "q", "ts_ms": r["ts_ms"], "user_sparse": {"user_id": r["sparse"]["user_id"]},
           "user_dense": {}, "items": [{"item_id": 1, "sparse": {"item_id": probe[1]["sparse"]["item_id"]}},
                                       {"item_id": 2, "sparse": {"item_id": [12345]}}]}
    n_rows = t.serving.num_rows()
    ranked = server.score(req)
    assert {d["item_id"] for d in ranked} == {1, 2} and all(0 < d["click"] < 1 for d in ranked)
    assert t.serving.num_rows() == n_rows


class SlowSource(MemorySource):
    """Hands out records in small reads with a pause, like a live topic."""

    def read(self, max_records, timeout_s):
        import time

        time.sleep(0.02)
        return super().read(50, timeout_s)


def test_sparse_and_dense_sync_follow_their_own_intervals(tmp_path):
    c = cfg(tmp_path).model_copy(update={"sparse_sync_interval_s": 0.01, "dense_sync_interval_s": 3600.0})
    t = Trainer(c, SPEC)
    recs = synthetic_examples(SPEC, 1500, users=50, items=30, seed=8)
    t.run(SlowSource(recs))
    assert t.serving.sparse_syncs >= 10  # many touched-row pushes ...
    assert t.serving.dense_syncs == 1  # ... and the dense weights only once, at the end of the run
    assert t.serving.meta["spec"] == SPEC.model_dump(mode="json")  # serving reads the spec it was trained under
    assert len(t.freshness) >= 10 and all(f >= 0 for _, f in t.freshness)
    s = t.summary()
    assert s["freshness_p99_ms"] < 5000
