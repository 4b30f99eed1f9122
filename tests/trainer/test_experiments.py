"""The offline experiments (issue 15): their pure parts exactly, then each command on tiny settings
(``--quick``), checking the report's structure and the invariants the results rest on."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from streamrec.config import ConfigError, load_config
from trainer.experiments import sync_interval
from trainer.experiments.config import ExperimentsConfig
from trainer.experiments.data import rating_examples
from trainer.experiments.hashing import HashedSlot, buckets_of, collision_rate, hashed_records, size_for
from trainer.experiments.run import run_experiment
from trainer.experiments.stats import mean_ci, t95


# ---- pure logic ------------------------------------------------------------------------------------
def test_collision_rate_counts_ids_that_share_a_row():
    ids = np.arange(1, 101, dtype=np.int64)
    assert collision_rate(ids, 1, seed=3) == 1.0  # one row: everyone shares
    rows = buckets_of(ids, 7, seed=3)
    _, inv, counts = np.unique(rows, return_inverse=True, return_counts=True)
    assert collision_rate(ids, 7, seed=3) == pytest.approx((counts[inv] > 1).mean())
    assert collision_rate(ids, 1 << 40, seed=3) == 0.0
    assert not np.array_equal(buckets_of(ids, 1000, 1), buckets_of(ids, 1000, 2))  # the seed picks the hash


@pytest.mark.parametrize("n,target", [(943, 0.0773), (1682, 0.0286), (5000, 0.0773)])
def test_table_sized_to_the_target_rate(n, target):
    ids = np.random.default_rng(n).integers(1, 1 << 62, n)
    for seed in (1, 2):
        size = size_for(ids, target, seed)
        # a rate is a count of ids over n, and colliding ids come at least in pairs
        assert abs(collision_rate(ids, size, seed) - target) <= 2 / n
        assert 0.5 * n / -math.log(1 - target) <= size <= 2 * n / -math.log(1 - target)


def test_hashed_records_share_rows_and_keep_the_slot():
    ids = np.arange(1, 51, dtype=np.int64) | (6 << 48)
    t = HashedSlot.fit("item_id", 6, ids, 0.3, seed=1)
    m = t.mapping(ids)
    assert len(set(m.values())) < len(ids) and all(v >> 48 == 6 for v in m.values())
    recs = [{"sparse": {"item_id": [int(i)], "genre": [9]}, "example_id": str(i)} for i in ids]
    out = hashed_records(recs, {"item_id": m})
    assert [r["sparse"]["item_id"][0] for r in out] == [m[int(i)] for i in ids]
    assert all(r["sparse"]["genre"] == [9] for r in out) and recs[0]["sparse"]["item_id"] == [int(ids[0])]


def test_t_interval():
    m, h = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 / math.sqrt(3))
    assert t95(1) == 12.706 and t95(100) == 1.96
    assert math.isnan(mean_ci([0.7])[1])


def test_chunks_cut_at_interval_boundaries():
    ts = np.array([0, 10, 999, 1000, 1500, 4200], dtype=np.int64) * 1000
    parts = sync_interval.chunks(ts, 0, 1000)
    assert [(p.start, p.stop) for p in parts] == [(0, 3), (3, 5), (5, 6)]


def test_bad_experiment_settings_name_the_field():
    with pytest.raises(ConfigError, match="experiments.sync_interval.intervals_s"):
        load_config(None, ["experiments.sync_interval.intervals_s=[0, 60]"])
    with pytest.raises(ConfigError, match="experiments.collisionless.seeds"):
        load_config(None, ["experiments.collisionless.seeds=[1, 1]"])
    with pytest.raises(ConfigError, match="experiments.collisionless.targets"):
        load_config(None, ["experiments.collisionless.targets.user=0.9"])
    s = load_config(None, ["experiments.collisionless.slots.user=genre"])
    with pytest.raises(ValueError, match="experiments.collisionless.slots.user"):
        run_experiment("collisionless", s, quick=True)


# ---- the data ----------------------------------------------------------------------------------------
def test_ratings_become_examples_in_time_order():
    s = load_config(None, [])
    recs = rating_examples(s.features, s.replay, limit=500)
    assert len(recs) == 500 == len({r["example_id"] for r in recs})
    ts = [r["ts_ms"] for r in recs]
    assert ts == sorted(ts)
    assert all(set(r["sparse"]) == set(s.features.model_slots) for r in recs)
    clicks = np.mean([r["labels"]["click"] for r in recs])
    assert 0.3 < clicks < 0.8  # ratings >= 4 on MovieLens: about half
    assert all(r["labels"]["click"] >= r["labels"]["like"] for r in recs)  # a like is a 5, also a click


# ---- the commands on tiny settings ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def settings():
    return load_config(None, [])


def test_collisionless_quick(settings, tmp_path):
    result, md = run_experiment("collisionless", settings, quick=True, out_dir=tmp_path)
    cfg = ExperimentsConfig().quick().collisionless
    assert {p.name for p in tmp_path.iterdir()} >= {"report.md", "report.json", "plot.png"}
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    text = md.read_text()
    assert "Test AUC per epoch" in text and "measured rate" in text and "**Result:**" in text
    assert json.loads((tmp_path / "report.json").read_text())["summary"] == json.loads(json.dumps(result["summary"]))
    runs = result["runs"]
    assert [r["seed"] for r in runs] == cfg.seeds
    assert result["slots"] == {"user": "user_id", "item": "item_id"}  # the id slots: most distinct values
    # the seeds differ: other splits and weights, other curves and hash functions
    curves = {tuple(r["auc"]["collisionless"]) for r in runs}
    assert len(curves) == len(runs)
    assert len({r["tables"]["user"]["size"] for r in runs}) > 1
    for r in runs:
        for side, t in r["tables"].items():
            assert abs(t["rate"] - cfg.targets[side]) <= 2 / t["ids"], (side, t)
            # the hashed arm's table of that slot has fewer rows than ids (shared rows), the other one a row per id
            slot = t["slot"]
            assert r["rows"]["hashed"][slot] < r["rows"]["collisionless"][slot]
        for arm in ("collisionless", "hashed"):
            assert len(r["auc"][arm]) == cfg.epochs and all(0.55 < a < 1 for a in r["auc"][arm])
    for row in result["summary"]:
        for key in ("collisionless", "hashed", "diff"):
            assert row[f"{key}_ci"] >= 0
            assert row[key] - row[f"{key}_ci"] <= row[key] <= row[key] + row[f"{key}_ci"]
        assert row["diff"] == pytest.approx(row["collisionless"] - row["hashed"])


def test_sync_interval_quick_through_the_cli(tmp_path):
    from streamrec.cli import app

    res = CliRunner().invoke(app, ["experiment", "sync-interval", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "Serving AUC" in res.output and "batch-only" in res.output
    result = json.loads((tmp_path / "report.json").read_text())
    cfg = ExperimentsConfig().quick().sync_interval
    assert result["batch_events"] + result["online_events"] == result["ratings"] == cfg.limit
    assert (tmp_path / "plot.png").stat().st_size > 10_000 and "paper Table 2" in (tmp_path / "report.md").read_text()
    scale = result["online_span_s"] / cfg.paper_span_s
    for run in result["runs"]:
        assert run["batch_weights_unchanged"]
        ts = [a["T_s"] for a in run["online"]]
        assert ts[:len(cfg.intervals_s)] == cfg.intervals_s
        assert ts[len(cfg.intervals_s):] == [round(t * scale) for t in cfg.paper_intervals_s]
        by_t = sorted(run["online"], key=lambda a: a["T_s"])
        syncs = [a["syncs"] for a in by_t]
        assert syncs == sorted(syncs, reverse=True) and syncs[0] > syncs[-1]  # shorter T, more syncs
        assert all(0.5 < a["auc"] < 1 for a in run["online"]) and 0.4 < run["batch-only"] < 1
    assert len({r["batch-only"] for r in result["runs"]}) == len(cfg.seeds)  # seeds differ
    rows = {(r["arm"], r["T_s"]) for r in result["summary"]}
    assert ("batch-only", None) in rows and len(rows) == 1 + len(cfg.intervals_s) + len(cfg.paper_intervals_s)


def test_serving_scores_each_interval_before_learning_it(settings, tmp_path):
    """With T longer than the stream, serving never syncs before the last event: its scores are the
    batch model's, exactly. With a short T the first interval is still scored by the batch model,
    and later ones are not."""
    from trainer.experiments.common import seeded_config, train_on
    from trainer.loop import Trainer

    recs = rating_examples(settings.features, settings.replay, limit=3000)
    batch, online = recs[:1500], recs[1500:]
    cfg = seeded_config(settings.trainer, 5, tmp_path / "snaps")
    base = Trainer(cfg, settings.features)
    train_on(base, batch, "batch")
    snap = base.snapshot()

    def served(interval):
        t = Trainer(cfg, settings.features)
        t.restore(snap)
        return sync_interval.served_scores(t, online, interval), t

    frozen, _ = served(None)
    whole, t = served(10 ** 9)
    np.testing.assert_array_equal(whole, frozen)
    # ... and it did learn them afterwards, then synced serving once (after the restore's full sync)
    assert t.steps == math.ceil(len(online) / cfg.batch_size) and t.serving.dense_syncs == 2
    short, _ = served(600)
    ts = np.array([r["ts_ms"] for r in online])
    first = sync_interval.chunks(ts, int(ts[0]), 600)[0]
    np.testing.assert_array_equal(short[first], frozen[first])
    assert not np.allclose(short[first.stop:], frozen[first.stop:])
