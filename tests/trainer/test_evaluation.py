"""Progressive evaluation: exact weighted AUC, log loss, windows, baseline, correction."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from trainer.evaluation import (
    HistogramAUC,
    PopularityBaseline,
    ProgressiveEvaluator,
    correct_sampled,
    log_loss,
    weighted_auc,
    write_csv,
)


def brute_auc(s, y, w):
    num = den = 0.0
    for i in range(len(s)):
        for j in range(len(s)):
            if y[i] == 1 and y[j] == 0:
                den += w[i] * w[j]
                num += w[i] * w[j] * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    return num / den


def test_weighted_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 6, 80) / 5.0  # many ties
    y = (rng.random(80) < 0.4).astype(float)
    w = rng.uniform(0.5, 2.0, 80)
    assert weighted_auc(s, y, w) == pytest.approx(brute_auc(s, y, w), abs=1e-12)
    assert weighted_auc(np.array([0.1, 0.9]), np.array([0, 1]), None) == 1.0
    assert np.isnan(weighted_auc(np.array([0.3, 0.4]), np.array([1, 1]), None))


def test_histogram_auc_is_close_to_exact():
    rng = np.random.default_rng(1)
    y = (rng.random(20000) < 0.2).astype(float)
    s = 1 / (1 + np.exp(-(rng.normal(size=20000) + y)))
    w = np.ones_like(s)
    h = HistogramAUC()
    h.add(s[:5000], y[:5000], w[:5000])
    h.add(s[5000:], y[5000:], w[5000:])
    assert h.auc() == pytest.approx(weighted_auc(s, y, w), abs=2e-3)


def test_log_loss_and_log_odds_correction():
    assert log_loss(np.array([0.5]), np.array([1]), np.array([1.0])) == pytest.approx(np.log(2))
    # a model trained with negatives kept at r sees odds / r; correction brings odds back
    p_true = np.array([0.01, 0.1, 0.5])
    r = 0.25
    odds_sampled = p_true / (1 - p_true) / r
    p_sampled = odds_sampled / (1 + odds_sampled)
    assert correct_sampled(p_sampled, r) == pytest.approx(p_true)
    assert correct_sampled(p_sampled, 1.0) == pytest.approx(p_sampled)


def test_popularity_baseline_scores_before_it_learns():
    b = PopularityBaseline(prior_strength=1.0)
    first = b.score(np.array([7, 8]))
    assert first[0] == first[1]  # nothing known yet
    b.update(np.array([7, 7, 8]), np.array([1.0, 1.0, 0.0]), np.ones(3))
    s = b.score(np.array([7, 8]))
    assert s[0] > s[1]


def test_windows_close_by_event_time_and_late_examples_go_to_the_open_window(tmp_path):
    ev = ProgressiveEvaluator(window_ms=1000, lateness_ms=0)
    ts = np.array([100, 200, 900, 1100])
    ones = np.ones(4)
    closed = ev.record(ts, np.arange(4), np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.8, 0.2]), ones)
    assert [r["window_start_ms"] for r in closed] == [0]
    assert closed[0]["examples"] == 3 and closed[0]["auc"] == 1.0
    # a late example of window 0 arrives: counted in window 1, window 0 is not reopened
    ev.record(np.array([50]), np.array([9]), np.array([1]), np.array([0.7]), np.ones(1))
    rows = ev.flush()
    assert [r["window_start_ms"] for r in rows] == [1000]
    assert rows[0]["examples"] == 2
    starts = [r["window_start_ms"] for r in ev.rows]
    assert starts == sorted(set(starts))
    restored = pickle.loads(pickle.dumps(ev))
    assert restored.rows == ev.rows and restored.summary()["examples"] == 5
    write_csv(ev.rows, tmp_path / "m.csv")
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0].startswith("window_start_ms,") and len(lines) == 3
