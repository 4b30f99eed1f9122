"""On the MovieLens replay, progressive click AUC is clearly above the popularity baseline.

Examples come from the real replay generator and the real join rules (in memory, no Kafka);
every example is scored before it is trained on. Seeded: one worker gives identical numbers.
"""

from __future__ import annotations

import pytest

from jobs.replay_examples import movielens_examples
from tests.conftest import MOVIELENS_SPEC
from trainer.config import TrainerConfig
from trainer.loop import Trainer
from trainer.sources import MemorySource

RATINGS = 20_000


@pytest.fixture(scope="module")
def examples():
    return movielens_examples(MOVIELENS_SPEC, RATINGS, seed=7, speed=3600.0, window_ms=60_000, keep_rate=0.5)


def make_cfg(tmp_path, **over) -> TrainerConfig:
    base = dict(batch_size=64, dense_lr=0.003, seed=11, snapshot_dir=tmp_path / "snaps", snapshot_every_s=0,
                eval_window_ms=60_000, eval_lateness_ms=120_000, metrics_csv=tmp_path / "m.csv",
                plot=tmp_path / "auc.png")
    return TrainerConfig(**{**base, **over})


@pytest.mark.slow
def test_progressive_auc_beats_popularity(examples, tmp_path):
    t = Trainer(make_cfg(tmp_path, workers=2), MOVIELENS_SPEC)
    t.run(MemorySource(examples))
    s = t.finish()
    print(f"\nMovieLens {RATINGS} ratings, {s['examples']} examples: progressive click AUC {s['auc']:.4f}, "
          f"popularity baseline {s['baseline_auc']:.4f}")
    assert s["examples"] == len(examples) > 50_000
    assert s["auc"] > s["baseline_auc"] + 0.03 and s["auc"] > 0.6
    # the curve: one CSV row per event-time window, a PNG
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert len(lines) - 1 == s["windows"] >= 5
    assert (tmp_path / "auc.png").stat().st_size > 10_000
    # learning: later windows beat the first one
    rows = t.evaluator.rows
    assert max(r["auc"] for r in rows[len(rows) // 2:]) > rows[0]["auc"]


@pytest.mark.slow
def test_same_seed_same_numbers_with_one_worker(examples, tmp_path):
    part = examples[:12_000]
    a = Trainer(make_cfg(tmp_path / "a", workers=1), MOVIELENS_SPEC)
    a.run(MemorySource(part))
    b = Trainer(make_cfg(tmp_path / "b", workers=1), MOVIELENS_SPEC)
    b.run(MemorySource(part))
    sa, sb = a.finish(), b.finish()
    assert sa["auc"] == sb["auc"] and sa["rows"] == sb["rows"]
    assert [r["logloss"] for r in a.evaluator.rows] == [r["logloss"] for r in b.evaluator.rows]
