"""Batch building, dedup and the DeepFM module (pure logic, no services)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from schemas.spec import FeatureSpec
from trainer.batch import Deduper, _build_arrow, build_batch, build_batch_python
from trainer.model import DeepFM, pool

SPEC = FeatureSpec.model_validate({
    "slots": {"genre": {"number": 7, "side": "item"}, "user_id": {"number": 1, "side": "user"}},
    "dense": {"a": {"side": "item"}, "missing": {"side": "user", "default": -1.5},
              "count": {"side": "item", "normalize": "log1p"}, "z": {"side": "user", "normalize": "standard",
                                                                     "mean": 2.0, "std": 4.0}},
    "actions": {"labels": ["click", "like"]}})


def rec(i: int, sparse: dict, click: int = 0, rate: float = 1.0) -> dict:
    return {"example_id": f"e{i}", "ts_ms": 1000 + i, "item_id": i, "sparse": sparse,
            "dense": {"a": float(i), "count": float(i * 10 - 10), "z": 6.0}, "labels": {"click": click},
            "sample_rate": rate}


def test_build_batch_reads_what_the_spec_says_in_its_order():
    g1, g2, u = SPEC.fid("genre", "a"), SPEC.fid("genre", "b"), SPEC.fid("user_id", 1)
    records = [rec(0, {"genre": [g1, g2], "user_id": [u]}, 1), rec(1, {"user_id": [u]}), rec(2, {"genre": [g2]})]
    b = build_batch(records, SPEC)
    assert list(b.bags) == ["user_id", "genre"]  # by slot number
    fids, offsets = b.bags["genre"]
    assert fids.tolist() == [g1, g2, g2] and offsets.tolist() == [0, 2, 2]
    assert b.bags["user_id"][1].tolist() == [0, 1, 2]
    # dense in the spec's order: a as is, missing -> its default, count signed log1p, z standardized
    want = [[i, -1.5, np.sign(i * 10 - 10) * np.log1p(abs(i * 10 - 10)), 1.0] for i in range(3)]
    np.testing.assert_allclose(b.dense, np.array(want, np.float32), rtol=1e-6)
    assert b.labels.tolist() == [[1, 0], [0, 0], [0, 0]]
    assert b.ts_ms.tolist() == [1000, 1001, 1002]


def assert_same_batch(a, b) -> None:
    assert a.example_ids == b.example_ids and list(a.bags) == list(b.bags)
    for k in ("ts_ms", "item_ids", "dense", "labels", "sample_rate"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), k
    for slot in a.bags:
        for x, y in zip(a.bags[slot], b.bags[slot], strict=True):
            assert x.dtype == y.dtype == np.int64 and np.array_equal(x, y), slot


def random_records(rng: np.random.Generator, n: int) -> list[dict]:
    """Records as the joiner writes them, with every optional part absent or empty somewhere."""
    out = []
    for i in range(n):
        sparse = {s: rng.integers(0, 2**62, int(rng.integers(0, 4))).tolist()
                  for s in ("genre", "user_id") if rng.random() < 0.8}
        dense = {f: (float(rng.normal()) if rng.random() < 0.7 else int(rng.integers(-5, 5)))
                 for f in ("a", "missing", "count", "z") if rng.random() < 0.7}
        r = {"example_id": f"e{i}", "ts_ms": int(rng.integers(0, 2**40)), "item_id": int(rng.integers(0, 1000)),
             "sparse": sparse, "dense": dense, "labels": {lb: int(rng.integers(0, 2)) for lb in ("click", "like")
                                                          if rng.random() < 0.6},
             "request_id": "extra keys are ignored", "kind": "window"}
        if rng.random() < 0.5:
            r["sample_rate"] = float(rng.uniform(0.01, 1))
        out.append(r)
    return out


@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_arrow_batch_equals_the_python_walk(n):
    records = random_records(np.random.default_rng(n), n)
    assert_same_batch(_build_arrow(records, SPEC, 5), build_batch_python(records, SPEC, 5))


def test_records_arrow_cannot_take_go_the_python_way():
    good = random_records(np.random.default_rng(1), 3)
    odd = [dict(good[0], labels={"click": True}), dict(good[1], sparse={"genre": [1.5]}), good[2]]
    assert_same_batch(build_batch(odd, SPEC), build_batch_python(odd, SPEC))  # bools, floats: as numpy takes them
    no_time = [{k: v for k, v in good[0].items() if k != "ts_ms"}]
    with pytest.raises(KeyError, match="ts_ms"):
        build_batch(no_time, SPEC)


def test_deduper_drops_repeats_and_forgets_the_oldest():
    d = Deduper(capacity=3)
    out = d.filter([{"example_id": x} for x in "abca"])
    assert [r["example_id"] for r in out] == ["a", "b", "c"] and d.dropped == 1
    d.filter([{"example_id": "d"}])  # "a" is forgotten now
    assert [r["example_id"] for r in d.filter([{"example_id": "a"}, {"example_id": "d"}])] == ["a"]
    d2 = Deduper(3)
    d2.load(d.state())
    assert d2.filter([{"example_id": "a"}]) == []


def test_pool_sums_rows_per_bag_and_routes_gradients_to_rows():
    rows = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    out = pool(rows, torch.tensor([0, 1, 1]), torch.tensor([0, 2, 2]))  # bags: {0,1}, {}, {1}
    assert out.tolist() == [[1.0, 2.0], [0.0, 0.0], [0.0, 2.0]]
    out.sum().backward()
    assert rows.grad.tolist() == [[1.0, 1.0], [2.0, 2.0]]


def test_deepfm_fm_term_is_the_pairwise_interaction_and_heads_are_separate():
    torch.manual_seed(0)
    m = DeepFM([2, 2, 3], n_dense=1, hidden=[4], n_heads=2, fm_dim=2)
    assert m.fm_slots == [0, 1]
    e = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]]), torch.zeros(1, 3)]
    d = torch.zeros(1, 1)
    with torch.no_grad():
        base = m(e, d)
        m.fm_scale.add_(1.0)  # the FM term enters once more: <e0, e1> = 11
        assert torch.allclose(m(e, d) - base, torch.full((1, 2), 11.0))
    assert base.shape == (1, 2)


def test_empty_slot_in_a_batch_pools_to_zeros():
    rows = torch.zeros((0, 4), requires_grad=True)
    out = pool(rows, torch.zeros(0, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    assert out.shape == (3, 4) and float(out.detach().abs().sum()) == 0.0
    assert np.all(out.detach().numpy() == 0)


def test_stacked_pooling_equals_per_slot_pooling_and_routes_gradients():
    from trainer.model import stacked_index, stacked_pool

    rng = np.random.default_rng(0)
    n, d = 5, 3
    invs = [np.array([0, 1, 0, 2, 1]), np.array([1, 0, 0]), np.array([], dtype=np.int64)]
    offs = [np.arange(5), np.array([0, 1, 1, 3, 3]), np.zeros(5, dtype=np.int64)]
    counts = [3, 2, 0]
    rows = [torch.tensor(rng.normal(size=(c, d)), dtype=torch.float32, requires_grad=True) for c in counts]
    per_slot = torch.stack([pool(r, torch.from_numpy(i), torch.from_numpy(o))
                            for r, i, o in zip(rows, invs, offs, strict=True)], dim=1)
    gather, owner = stacked_index(invs, offs, n, counts)
    leaf = torch.cat([r.detach() for r in rows]).requires_grad_(True)
    stacked = stacked_pool(leaf, torch.from_numpy(gather), torch.from_numpy(owner), n, 3)
    assert torch.allclose(stacked, per_slot)
    w = torch.tensor(rng.normal(size=(n, 3, d)), dtype=torch.float32)
    (stacked * w).sum().backward()
    (per_slot * w).sum().backward()
    assert torch.allclose(leaf.grad, torch.cat([r.grad for r in rows]))
