"""The distributed trainer in this process (world size 1 needs no process group: ``Comm(0, 1)``):
it equals the embedded trainer, an empty step is harmless, and re-sharding 1 -> 3 -> 1 ranks
loses no row and no state (the rows of the 3-way snapshot checked against their owners)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import movielens_with
from trainer import snapshot
from trainer.config import TrainerConfig
from trainer.distributed import routing
from trainer.distributed.comm import Comm
from trainer.distributed.loop import COUNTS, DistributedTrainer
from trainer.distributed.reshard import reshard
from trainer.embedding.table import CuckooTable
from trainer.sources import MemorySource
from trainer.synthetic import synthetic_examples

SPEC = movielens_with({}, keep=["user_id", "item_id", "genre"])


def make(tmp_path) -> DistributedTrainer:
    cfg = TrainerConfig(batch_size=64, snapshot_dir=tmp_path / "snaps", snapshot_every_s=0, metrics_csv=None,
                        plot=None, eval_window_ms=60_000, eval_lateness_ms=0)
    return DistributedTrainer(cfg, SPEC, Comm(0, 1))


def rows_of(snap) -> dict[str, dict[int, np.ndarray]]:
    m = json.loads((snap / "embedding" / "MANIFEST.json").read_text())
    out: dict[str, dict[int, np.ndarray]] = {}
    for name, slot in m["slots"].items():
        for e in slot["shards"]:
            ids, emb = CuckooTable.load(snap / "embedding" / e["table"]).items()
            out.setdefault(name, {}).update(zip(ids.tolist(), emb, strict=True))
    return out


def test_reshard_one_to_three_and_back(tmp_path):
    records = synthetic_examples(SPEC, 3000, users=200, items=100, seed=4, step_ms=500)
    t = make(tmp_path)
    t.run(MemorySource(records))
    first = t.snapshot()
    before = rows_of(first)
    assert sum(len(v) for v in before.values()) == t.ps.num_rows() > 300
    probe = records[:200]
    scores = t.score(probe)

    three = reshard(tmp_path / "snaps", 3)
    assert [p.parent.name for p in three] == ["shard-0-of-3", "shard-1-of-3", "shard-2-of-3"]
    assert all(p.name == first.name for p in three)
    merged: dict[str, dict[int, np.ndarray]] = {}
    for r, p in enumerate(three):
        for name, rows in rows_of(p).items():
            ids = np.array(list(rows), np.int64)
            assert (routing.owner_of(ids, 3) == r).all()  # each row on its owner
            merged.setdefault(name, {}).update(rows)
        st = json.loads((p / "state.json").read_text())
        assert st["world"] == 3 and st["rank"] == r and st["positions"] == {"memory": 3000}
    assert merged.keys() == before.keys()
    for name in before:
        assert merged[name].keys() == before[name].keys()
        assert all(np.array_equal(merged[name][k], before[name][k]) for k in before[name])

    # back to one rank: a world-1 trainer restores it and scores exactly as before
    for old in (tmp_path / "snaps").glob("shard-*-of-1"):
        import shutil

        shutil.rmtree(old)
    reshard(tmp_path / "snaps", 1)
    back = make(tmp_path)
    assert back.restore() is not None
    assert back.ps.num_rows() == t.ps.num_rows() and back.examples == 3000
    assert back.evaluator.examples == t.evaluator.examples  # the curve continues on rank 0
    assert np.allclose(back.score(probe), scores)


def test_restore_under_another_world_size_says_how_to_reshard(tmp_path):
    t = make(tmp_path)
    t.run(MemorySource(synthetic_examples(SPEC, 200, users=20, items=10, seed=1)))
    t.snapshot()
    (tmp_path / "snaps" / "shard-0-of-1").rename(tmp_path / "snaps" / "shard-0-of-2")
    assert snapshot.seqs(tmp_path / "snaps" / "shard-0-of-2")
    with pytest.raises(ValueError, match="another world size.*reshard"):
        make(tmp_path).restore()


def test_one_rank_trains_exactly_as_the_embedded_trainer(tmp_path):
    """The sharded path (requests by owner, occurrence counts, rows and gradients by slot, the dense
    gradient summed from the exchange) at world size 1 equals the one-worker embedded trainer."""
    from trainer.loop import Trainer

    records = synthetic_examples(SPEC, 4000, users=300, items=150, seed=8, step_ms=300)
    one = Trainer(TrainerConfig(batch_size=64, workers=1, snapshot_dir=tmp_path / "e", snapshot_every_s=0,
                                metrics_csv=None, plot=None, eval_window_ms=60_000, eval_lateness_ms=0), SPEC)
    one.run(MemorySource(records))
    dist = make(tmp_path)
    dist.run(MemorySource(records))
    a, b = one.finish(), dist.finish()
    assert a["auc"] == pytest.approx(b["auc"], abs=1e-9) and a["rows"] == b["rows"] > 300
    assert [r["logloss"] for r in one.evaluator.rows] == pytest.approx([r["logloss"] for r in dist.evaluator.rows])
    assert np.allclose(one.score(records[:300]), dist.score(records[:300]), atol=1e-6)


def test_an_empty_step_changes_no_row_and_scores_nothing(tmp_path):
    from trainer.batch import build_batch
    from trainer.ps import make_model

    t = make(tmp_path)
    t.run(MemorySource(synthetic_examples(SPEC, 300, users=30, items=20, seed=2)))
    before = {n: tbl[0].items()[1].copy() for n, tbl in t.ps.store.tables.items()}
    seen = t.evaluator.examples
    req = routing.requests([np.zeros(0, np.int64)] * len(SPEC.model_slots), 1)
    t.ps.open_step(np.zeros(COUNTS + 1, np.int64), req)
    assert len(t.step(make_model(t.cfg, SPEC), build_batch([], SPEC))) == 0
    t.ps.finish_step()
    assert t.evaluator.examples == seen
    for n, tbl in t.ps.store.tables.items():
        assert np.array_equal(tbl[0].items()[1], before[n])
