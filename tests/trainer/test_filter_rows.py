"""With filter threshold k, the tables hold at most as many rows as ids seen at least k times."""

from __future__ import annotations

from collections import Counter

import numpy as np

from tests.conftest import movielens_with
from trainer.config import TrainerConfig
from trainer.loop import Trainer
from trainer.sources import MemorySource
from trainer.synthetic import synthetic_examples


def test_rows_bounded_by_ids_seen_k_times(tmp_path):
    k = 4
    slot_cfg = {"filter_threshold": k}
    spec = movielens_with({"slots": {"user_id": slot_cfg, "item_id": slot_cfg}}, keep=["user_id", "item_id", "genre"])
    cfg = TrainerConfig(batch_size=50, snapshot_dir=tmp_path / "s", snapshot_every_s=0, metrics_csv=None, plot=None)
    # long tail: 3000 users over 4000 examples -> most users are seen once or twice
    recs = synthetic_examples(spec, 4000, users=3000, items=400, seed=5)
    t = Trainer(cfg, spec)
    t.run(MemorySource(recs))
    rows = t.ps.store.num_rows()
    for slot in ("user_id", "item_id"):
        counts = Counter(f for r in recs for f in r["sparse"][slot])
        seen_k = sum(1 for c in counts.values() if c >= k)
        assert 0 < rows[slot] <= seen_k < len(counts), (slot, rows[slot], seen_k, len(counts))
    # threshold 1 (genre): every id seen gets a row
    assert rows["genre"] == len({f for r in recs for f in r["sparse"]["genre"]})
    # serving never got rows the training tables do not have
    assert t.serving.num_rows() == sum(rows.values())


def test_rows_past_their_slot_ttl_are_evicted_while_training(tmp_path):
    spec = movielens_with({"slots": {"user_id": {"ttl_s": 30}}}, keep=["user_id", "item_id"])
    cfg = TrainerConfig(batch_size=50, evict_interval_s=0.001, snapshot_dir=tmp_path / "s", snapshot_every_s=0,
                        metrics_csv=None, plot=None)
    early = synthetic_examples(spec, 2000, users=100, items=50, seed=6, step_ms=100)  # t0 .. t0+200 s
    late = synthetic_examples(spec, 2000, users=100, items=50, seed=7, step_ms=100, t0_ms=early[-1]["ts_ms"] + 1000,
                              prefix="late")
    for r in late:  # the late half has other users: the early users' rows go stale
        r["sparse"]["user_id"] = [r["sparse"]["user_id"][0] + 1]
    t = Trainer(cfg, spec)
    t.run(MemorySource(early + late))
    t.ps.store.evict_expired()
    early_users = np.unique([r["sparse"]["user_id"][0] for r in early])
    recent_users = np.unique([r["sparse"]["user_id"][0] for r in late[-100:]])  # last ~10 event-seconds
    assert not t.ps.rows("user_id", early_users)[1].any()  # expired: not updated for > 30 event-seconds
    assert t.ps.rows("user_id", recent_users)[1].all()
    assert t.ps.rows("item_id", np.unique([r["sparse"]["item_id"][0] for r in early]))[1].all()  # no TTL
