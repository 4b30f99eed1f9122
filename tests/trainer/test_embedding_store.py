"""EmbeddingStore: FID routing, filter on training lookups, per-slot TTL, drain, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import MOVIELENS_SPEC, movielens_with
from trainer.embedding.config import EmbeddingConfig
from trainer.embedding.store import EmbeddingStore

SPEC = movielens_with({"slots": {
    "item_id": {"dim": 8, "filter_threshold": 3, "filter_capacity": 10_000, "ttl_s": 100},
    "genre": {"filter_threshold": 4, "filter_kind": "probabilistic"},
}})


def fids(slot: str, values) -> np.ndarray:
    return np.array([MOVIELENS_SPEC.fid(slot, v) for v in values], np.int64)


def make_store(**overrides) -> EmbeddingStore:
    cfg = EmbeddingConfig(initial_capacity=64, **overrides)
    return EmbeddingStore(cfg, SPEC, slots=["user_id", "item_id", "genre"])


def test_tables_follow_the_spec():
    s = EmbeddingStore(EmbeddingConfig(), SPEC)
    assert s.slot_names == SPEC.model_slots
    assert s.dim("item_id") == 8 and s.dim("user_id") == 16
    assert s.slot_cfg["genre"].filter_kind == "probabilistic" and s.numbers["genre"] == 7


@pytest.mark.parametrize("shards", [1, 3])
def test_training_lookup_filters_and_serving_lookup_never_inserts(shards):
    s = make_store(shards=shards)
    users = fids("user_id", range(50))
    out = s.lookup(users, train=True, now=1)
    assert out.shape == (50, 16) and out.any(axis=1).all() and s.num_rows()["user_id"] == 50
    items = fids("item_id", range(20))
    for k in range(2):  # seen twice: below the threshold of 3
        emb, has = s.lookup(items, train=True, now=2 + k, with_mask=True)
        assert emb.shape == (20, 8) and not emb.any() and not has.any()
    assert s.num_rows()["item_id"] == 0
    assert s.apply_gradients(items, np.ones((20, 8), np.float32), now=4) == 0  # no rows: skipped
    assert not s.lookup(items, train=False).any() and s.num_rows()["item_id"] == 0  # no count
    emb, has = s.lookup(items, train=True, now=5, with_mask=True)  # third time: admitted
    assert has.all() and emb.any(axis=1).all() and s.num_rows()["item_id"] == 20
    np.testing.assert_array_equal(s.lookup(items), emb)
    unseen = fids("item_id", range(1000, 1010))
    assert not s.lookup(unseen).any() and s.num_rows()["item_id"] == 20


def test_routing_rejects_mixed_or_unknown_slots():
    s = make_store()
    with pytest.raises(ValueError, match="several slots"):
        s.lookup(np.concatenate([fids("user_id", [1]), fids("item_id", [1])]))
    with pytest.raises(KeyError, match="no table"):
        s.lookup(fids("zip", [1]))  # a real slot, but not in this store
    assert s.lookup(fids("item_id", [1]), slot="item_id").shape == (1, 8)


def test_gradients_expiry_drain_per_slot():
    s = make_store(shards=2)
    users = fids("user_id", range(10))
    items = fids("item_id", range(10))
    s.lookup(users, train=True, now=10)
    for t in range(3):
        s.lookup(items, train=True, now=10 + t)
    before = s.lookup(items)
    assert s.apply_gradients(items[:4], np.ones((4, 8), np.float32), now=50) == 4
    assert s.apply_gradients(users[:2], np.ones((2, 16), np.float32), now=60) == 2
    assert not np.allclose(s.lookup(items[:4]), before[:4])
    drained = s.drain_touched()
    assert sorted(drained) == ["item_id", "user_id"]
    assert sorted(drained["item_id"][0].tolist()) == sorted(items[:4].tolist())
    np.testing.assert_array_equal(s.lookup(drained["user_id"][0]), drained["user_id"][1])
    assert s.drain_touched() == {}
    assert s.clock == 60
    # item_id ttl 100: rows admitted (inserted) at 12 and never trained expire once now - 12 > 100
    assert s.evict_expired(now=112) == {"item_id": 0}
    assert s.evict_expired(now=113) == {"item_id": 6}
    assert s.num_rows() == {"user_id": 10, "item_id": 4, "genre": 0}
    assert s.evict_expired(now=151) == {"item_id": 4}
    assert s.num_rows()["user_id"] == 10  # user_id has no ttl


def test_probabilistic_slot_admits_some():
    s = make_store()
    g = fids("genre", range(4000))
    _, has = s.lookup(g, train=True, now=1, with_mask=True)
    assert 0.2 < has.mean() < 0.3  # 1 / threshold = 0.25
    assert s.num_rows()["genre"] == has.sum()


@pytest.mark.parametrize("shards_after", [2, 1])
def test_save_load_round_trip_with_filters_and_generations(tmp_path, shards_after):
    s = make_store(shards=2)
    users = fids("user_id", range(30))
    items = fids("item_id", range(30))
    s.lookup(users, train=True, now=5)
    s.lookup(items, train=True, now=5)
    s.lookup(items, train=True, now=6)  # twice: one short of admission
    s.apply_gradients(users, np.full((30, 16), 0.5, np.float32), now=200)
    d = tmp_path / "emb"
    assert s.save(d)["generation"] == 1
    m = s.save(d)  # user rows fine; nothing in item_id (no rows yet)
    assert m["generation"] == 2
    assert not [p for p in d.iterdir() if ".g1." in p.name or p.name.startswith(".")]
    assert json.loads((d / "MANIFEST.json").read_text())["clock"] == 200
    t = make_store(shards=shards_after)
    t.load(d)
    assert t.num_rows() == s.num_rows()
    np.testing.assert_array_equal(t.lookup(users), s.lookup(users))
    assert t.clock == 200
    if shards_after == 2:  # same shard layout: filter counts survive, the third sighting admits
        _, has = t.lookup(items, train=True, now=201, with_mask=True)
        assert has.all()
    narrower = movielens_with({"slots": {"item_id": {"dim": 4}}})
    mismatched = EmbeddingStore(EmbeddingConfig(), narrower, slots=["item_id"])
    with pytest.raises(ValueError, match="item_id"):
        mismatched.load(d)


def test_save_skips_rows_expired_at_save_time(tmp_path):
    s = make_store()
    items = fids("item_id", range(5))
    for t in range(3):
        s.lookup(items, train=True, now=t)
    s.apply_gradients(items[:2], np.ones((2, 8), np.float32), now=300)
    m = s.save(tmp_path / "e")
    rows = {e["table"]: e["rows"] for e in m["slots"]["item_id"]["shards"]}
    assert sum(rows.values()) == 2  # the 3 rows last updated at 2 are > 100 s old at 300
    t = make_store()
    t.load(tmp_path / "e")
    assert t.num_rows()["item_id"] == 2
