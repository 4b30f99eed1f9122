"""Frequency filters: admission on time, measured false-admission rate within the configured bound."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.embedding.filters import CountMinFilter, ProbabilisticFilter, filter_from_state


def test_count_min_admits_exactly_at_threshold_when_alone():
    f = CountMinFilter(threshold=3, capacity=1000)
    ids = np.array([42, 42, 42, 42, 7])
    assert f.admit(ids).tolist() == [False, False, True, True, False]
    assert f.admit(np.array([7, 7])).tolist() == [False, True]


@pytest.mark.parametrize("threshold,fp_rate,depth", [(2, 0.01, 4), (5, 0.02, 3), (3, 0.001, 5)])
def test_count_min_false_admission_rate_within_bound(threshold, fp_rate, depth):
    """Fill the sketch to capacity with ids seen threshold-1 times (never truly admissible) and
    count how many were admitted anyway; frequent ids are never delayed (no undercount)."""
    capacity = 20_000
    f = CountMinFilter(threshold, capacity=capacity, fp_rate=fp_rate, depth=depth, seed=3)
    rng = np.random.default_rng(threshold)
    rare = np.unique(rng.integers(-(2**63), 2**63 - 1, size=capacity - 500, dtype=np.int64))
    frequent = np.unique(rng.integers(-(2**63), 2**63 - 1, size=500, dtype=np.int64))
    admitted_rare = np.zeros(len(rare), bool)
    for _ in range(threshold - 1):
        stream = np.concatenate([rare, frequent])
        order = rng.permutation(len(stream))
        got = f.admit(stream[order])
        admitted_rare |= got[order < len(rare)][np.argsort(order[order < len(rare)])]
    rate = admitted_rare.mean()
    assert rate <= fp_rate, f"false-admission rate {rate:.5f} > bound {fp_rate}"
    # the bound is not vacuous: a sketch 8x too small does exceed it
    small = CountMinFilter(threshold, capacity=capacity // 8, fp_rate=fp_rate, depth=depth, seed=3)
    for _ in range(threshold - 1):
        hit = small.admit(rare)
    assert hit.mean() > fp_rate
    assert f.admit(frequent).all()  # the threshold-th occurrence of every frequent id is admitted


def test_count_min_state_round_trip_and_decay():
    f = CountMinFilter(threshold=4, capacity=100, seed=1)
    f.admit(np.array([5, 5, 5]))
    g = filter_from_state(f.state())
    assert isinstance(g, CountMinFilter) and g.width == f.width
    assert g.admit(np.array([5])).tolist() == [True]  # the count survived the round trip
    d = CountMinFilter(threshold=4, capacity=100, seed=1, decay_every=3)
    d.admit(np.array([9, 9, 9]))  # 3 increments -> counters halved: 3 -> 1
    assert d.estimate(np.array([9])).tolist() == [1]
    assert d.admit(np.array([9, 9, 9])).tolist() == [False, False, True]


def test_probabilistic_admission_rate_is_one_over_threshold():
    n, threshold = 40_000, 8
    f = ProbabilisticFilter(threshold, seed=2)
    got = f.admit(np.arange(n))
    p = 1 / threshold
    assert abs(got.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    # the same id gets fresh draws per occurrence, and the stream is reproducible from the state
    again = filter_from_state(f.state())
    a, b = again.admit(np.full(1000, 7)), f.admit(np.full(1000, 7))
    assert np.array_equal(a, b) and 0 < a.sum() < 1000
