"""The replay: deterministic for a seed, with the configured shares of duplicates and early actions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from jobs.replay import encode_events, run_replay
from replay.config import ReplayConfig
from replay.events import ACTIONS, FEATURES, action_delays_ms, build_events, looped
from schemas.codec import default_codec
from streamrec.client import LogEncoder
from streamrec.config import Settings
from streamrec.kafka import drain
from tests.conftest import MOVIELENS_SPEC

N = 3000
ENCODER = LogEncoder(MOVIELENS_SPEC)


def rec(e) -> dict:
    """The record a replay event becomes once the client encodes it under the MovieLens spec."""
    return ENCODER.record(e.log) if e.role == FEATURES else e.log.record()


@pytest.fixture(scope="module")
def events():
    return build_events(ReplayConfig(limit=N, duplicate_share=0.08, early_share=0.06))


def multiset(evs) -> Counter:
    return Counter(encode_events(evs, MOVIELENS_SPEC))


def test_same_seed_same_messages_other_seed_differs(events) -> None:
    cfg = ReplayConfig(limit=N, duplicate_share=0.08, early_share=0.06)
    assert multiset(build_events(cfg)) == multiset(events)
    assert multiset(build_events(cfg.model_copy(update={"seed": cfg.seed + 1}))) != multiset(events)


def test_requests_are_unique_and_show_k_distinct_items(events) -> None:
    logs = [rec(e) for e in events if e.role == FEATURES]
    assert len(logs) == N
    assert len({r["request_id"] for r in logs}) == N
    for r in logs:
        ids = [i["item_id"] for i in r["items"]]
        assert len(ids) == 10 == len(set(ids))
        assert sorted(i["position"] for i in r["items"]) == list(range(10))
        assert {"user_id", "age", "gender", "occupation", "zip"} <= r["user_sparse"].keys()
        assert {"item_id", "genre", "year", "user_genre"} <= r["items"][0]["sparse"].keys()
        assert r["source"] == "movielens"


def test_actions_follow_the_ratings(events) -> None:
    originals = [e for e in events if e.role == ACTIONS]
    kinds = Counter(rec(e)["action"] for e in originals)
    distinct = {(e.key, rec(e)["item_id"], rec(e)["action"]) for e in originals}
    impressions = sum(1 for k in distinct if k[2] == "impression")
    assert impressions == N * 10  # every shown item
    clicks = {(k[0], k[1]) for k in distinct if k[2] == "click"}
    likes = {(k[0], k[1]) for k in distinct if k[2] == "like"}
    assert likes <= clicks  # rating 5 implies rating >= 4
    assert 0.4 * N < len(clicks) < 0.7 * N  # ~55% of MovieLens ratings are >= 4
    assert kinds["click"] >= len(clicks)


def test_measured_duplicate_and_early_shares_match_config(events) -> None:
    actions = [e for e in events if e.role == ACTIONS]
    counts = Counter((e.key, rec(e)["item_id"], rec(e)["action"], rec(e)["ts_ms"]) for e in actions)
    distinct = len(counts)
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates / distinct == pytest.approx(0.08, abs=0.005)

    order = {e.key: k for k, e in enumerate(events) if e.role == FEATURES}
    first_copy: dict[tuple, int] = {}
    for k, e in enumerate(events):
        if e.role == ACTIONS:
            first_copy.setdefault((e.key, rec(e)["item_id"], rec(e)["action"]), k)
    early = sum(1 for (key, *_), k in first_copy.items() if k < order[key])
    assert early / distinct == pytest.approx(0.06, abs=0.005)


def test_disorder_stays_within_its_bound(events) -> None:
    cfg = ReplayConfig()
    high = -(2**62)
    worst = 0
    for e in events:
        ts = rec(e)["ts_ms"]
        worst = max(worst, high - ts)
        high = max(high, ts)
    assert 0 < worst <= cfg.disorder_max_ms


def test_delays_are_heavy_tailed() -> None:
    d = action_delays_ms(np.random.default_rng(1), 200_000, ReplayConfig()) / 1000.0
    assert np.median(d) < 10  # most within seconds
    assert 0.01 < np.mean(d > 3600) < 0.1  # some hours
    assert 0 < np.mean(d > 86400) < 0.01  # a few over a day


def test_synthetic_generator_is_marked_and_shaped_alike() -> None:
    evs = build_events(ReplayConfig(limit=500, synthetic_users=200, synthetic_items=300), "synthetic")
    logs = [rec(e) for e in evs if e.role == FEATURES]
    assert len(logs) == 500 and all(r["source"] == "synthetic" for r in logs)
    assert any(rec(e)["action"] == "click" for e in evs if e.role == ACTIONS)


def test_replay_to_the_broker_reads_back_the_same_messages(settings: Settings) -> None:
    settings.replay.limit = 1500
    summary = run_replay(settings, "movielens", quiet=True, read_back=False)
    got = Counter()
    codec = default_codec()
    t = settings.kafka.topics
    for m in drain(settings.kafka, [t.features, t.actions], idle_s=1.5):
        name, rec = codec.decode(m.value())
        assert m.key().decode() == rec["request_id"]
        got[(m.topic(), m.value())] += 1
    want = Counter()
    evs = build_events(settings.replay)
    for e, payload in zip(evs, encode_events(evs, MOVIELENS_SPEC), strict=True):
        want[(t.features if e.role == FEATURES else t.actions, payload)] += 1
    assert got == want
    assert summary.messages == sum(want.values())


def test_cli_replay_paces_and_prints_the_counts_read_back(settings: Settings) -> None:
    """`streamrec replay movielens --limit N --rate R`: the user-facing command, end to end."""
    t = settings.kafka.topics
    sets = [f'kafka.bootstrap="{settings.kafka.bootstrap}"', f'kafka.topics.features="{t.features}"',
            f'kafka.topics.actions="{t.actions}"']
    cli = str(Path(sys.executable).parent / "streamrec")
    cmd = [cli, *(a for s in sets for a in ("--set", s)),
           "replay", "movielens", "--limit", "400", "--rate", "2000"]
    t0 = time.monotonic()
    env = {**os.environ, "COLUMNS": "160"}  # rich wraps tables at the terminal width
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stderr[-2000:]
    want = Counter(t.features if e.role == FEATURES else t.actions
                   for e in build_events(ReplayConfig(**{**settings.replay.model_dump(), "limit": 400})))
    text = out.stdout + out.stderr
    read_back = text.split("messages read back from", 1)[1]  # the table after the sent summary
    for topic, n in want.items():
        assert re.search(rf"{topic}\s*│\s*{n:,}\s*│", read_back), (topic, n, read_back)
    assert took >= sum(want.values()) / 2000 * 0.8  # --rate capped messages/s


def test_looped_laps_have_fresh_ids_and_later_times() -> None:
    pool = build_events(ReplayConfig(limit=200), "synthetic")
    laps = list(looped(pool, 3))
    assert len(laps) == 3 * len(pool)
    first, second = laps[:len(pool)], laps[len(pool):2 * len(pool)]
    assert {e.key for e in first}.isdisjoint({e.key for e in second})
    assert all(e.key == e.log.request_id for e in laps)
    assert min(e.log.ts_ms for e in second) > max(e.log.ts_ms for e in first)
    # the same traffic otherwise: roles, items and actions
    assert [(e.role, getattr(e.log, "action", None)) for e in first] == [(e.role, getattr(e.log, "action", None))
                                                                       for e in second]
    assert all(a.log.items is b.log.items for a, b in zip(first, second, strict=True) if a.role == FEATURES)
