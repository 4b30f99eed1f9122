"""Turn a rating stream into the two logs a served feed produces, in the order they are sent.

Each rating becomes one served request: the rated item plus K-1 items drawn by popularity are
shown (positions shuffled); each shown item gets an impression, the rated item a click when the
rating is high enough (and a like when higher still), after a heavy-tailed delay: a log-normal
body of seconds, a Pareto tail of hours to days. Event time follows the dataset's timestamps
compressed by ``speed``; messages are sent in event-time order, except a configured share of
actions sent *before* their feature log and a share sent twice. Both strays are bounded by
``disorder_max_ms`` of event time, so a joiner with that much allowed lateness sees no late data.
Everything is drawn from one seeded generator: same seed, same messages.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from replay.config import ReplayConfig
from replay.dataset import Dataset
from schemas.fid import fid

FEATURES = "features"
ACTIONS = "actions"


@dataclass(slots=True)
class ReplayEvent:
    send_ms: int  # position in the send order (event-time ms, or earlier for early actions)
    seq: int  # tie-breaker: generation order
    role: str  # FEATURES | ACTIONS
    key: str  # request_id: both topics are keyed by it, so a request's logs share a partition
    record: dict[str, Any]


def load_dataset(cfg: ReplayConfig, source: str) -> Dataset:
    if source == "movielens":
        from replay.movielens import load_movielens

        return load_movielens()
    if source == "synthetic":
        from replay.synthetic import synthetic_dataset

        return synthetic_dataset(cfg)
    raise ValueError(f"unknown replay source {source!r} (movielens | synthetic)")


def action_delays_ms(rng: np.random.Generator, n: int, cfg: ReplayConfig) -> np.ndarray:
    """Heavy-tailed user reaction delays: mostly seconds, some hours, a few over a day."""
    body = rng.lognormal(math.log(cfg.delay_median_s), cfg.delay_sigma, n)
    tail = cfg.delay_tail_min_s * (1.0 + rng.pareto(cfg.delay_tail_alpha, n))
    delay_s = np.where(rng.random(n) < cfg.delay_tail_share, tail, body)
    return np.minimum(delay_s, cfg.delay_max_s).__mul__(1000.0).astype(np.int64) + 1


class _Features:
    """FIDs of users and items, computed once per entity."""

    def __init__(self, ds: Dataset):
        self.ds = ds
        self._user: dict[int, dict[str, list[int]]] = {}
        self._item: dict[int, dict[str, list[int]]] = {}
        self._cross: dict[tuple[int, str], int] = {}

    def user(self, u: int) -> dict[str, list[int]]:
        got = self._user.get(u)
        if got is None:
            got = {"user_id": [fid("user_id", int(self.ds.user_ids[u]))]}
            for slot, values in self.ds.user_raw.items():
                got[slot] = [fid(slot, values[u])]
            self._user[u] = got
        return got

    def item(self, u: int, i: int) -> dict[str, list[int]]:
        base = self._item.get(i)
        if base is None:
            base = {
                "item_id": [fid("item_id", int(self.ds.item_ids[i]))],
                "genre": [fid("genre", g) for g in self.ds.item_genres[i]],
                "year": [fid("year", self.ds.item_year[i])],
            }
            self._item[i] = base
        cross = []
        for g in self.ds.item_genres[i]:
            key = (u, g)
            f = self._cross.get(key)
            if f is None:
                f = self._cross[key] = fid("user_genre", f"{self.ds.user_ids[u]}:{g}")
            cross.append(f)
        return {**base, "user_genre": cross}


def _shown_items(rng: np.random.Generator, cum_pop: np.ndarray, rated: int, k: int) -> list[int]:
    """The rated item plus k-1 distinct others drawn by popularity, in a random order."""
    picked = [rated]
    seen = {rated}
    while len(picked) < k and len(seen) < len(cum_pop):
        for c in np.searchsorted(cum_pop, rng.random(2 * k), side="right"):
            c = int(min(c, len(cum_pop) - 1))
            if c not in seen:
                seen.add(c)
                picked.append(c)
                if len(picked) == k:
                    break
    rng.shuffle(picked)
    return picked


def build_events(cfg: ReplayConfig, source: str = "movielens", dataset: Dataset | None = None) -> list[ReplayEvent]:
    """Every message of the replay, in send order."""
    return list(iter_events(cfg, source, dataset))


def iter_events(cfg: ReplayConfig, source: str = "movielens", dataset: Dataset | None = None) -> Iterator[ReplayEvent]:
    """The replay's messages in send order, generated as they are needed.

    Events wait in a heap until no later rating can produce one that sorts before them, so
    memory holds only the pending (mostly long-delayed) actions, not the whole replay.
    """
    ds = dataset or load_dataset(cfg, source)
    n = len(ds) if cfg.limit == 0 else min(cfg.limit, len(ds))
    rng = np.random.default_rng(cfg.seed)
    feats = _Features(ds)
    cum_pop = np.cumsum(ds.item_popularity())
    k = min(cfg.items_per_request, len(ds.item_ids))
    t0 = int(ds.r_ts_s[0])
    ts_ms = (t0 * 1000 + ((ds.r_ts_s[:n] - t0) * (1000.0 / cfg.speed))).astype(np.int64)
    user_seen = np.zeros(len(ds.user_ids), dtype=np.int64)
    item_seen = np.zeros(len(ds.item_ids), dtype=np.int64)
    prefix = f"{ds.name[:2]}{cfg.seed}-"
    disorder = _Disorder(rng, cfg)
    heap: list[tuple[int, int, ReplayEvent]] = []
    seq = 0

    def push(e: ReplayEvent) -> None:
        nonlocal seq
        e.seq = seq
        seq += 1
        heapq.heappush(heap, (e.send_ms, e.seq, e))

    for r in range(n):
        u, rated, rating, ts = int(ds.r_user[r]), int(ds.r_item[r]), float(ds.r_rating[r]), int(ts_ms[r])
        # nothing generated from now on is sent before ts - quarter (the earliest an early action goes)
        while heap and heap[0][0] < ts - disorder.quarter:
            yield heapq.heappop(heap)[2]
        request_id = f"{prefix}{r:07d}"
        shown = _shown_items(rng, cum_pop, rated, k)
        items = []
        for pos, i in enumerate(shown):
            items.append({
                "item_id": int(ds.item_ids[i]),
                "position": pos,
                "sparse": feats.item(u, i),
                "dense": {"item_popularity": float(math.log1p(item_seen[i]))},
            })
        log = {
            "request_id": request_id,
            "user_id": int(ds.user_ids[u]),
            "ts_ms": ts,
            "user_sparse": feats.user(u),
            "user_dense": {"user_activity": float(math.log1p(user_seen[u]))},
            "items": items,
            "source": ds.name,
        }
        user_seen[u] += 1
        item_seen[rated] += 1
        push(ReplayEvent(ts, 0, FEATURES, request_id, log))

        actions = []
        imp_delays = rng.integers(0, cfg.impression_delay_max_ms + 1, len(shown))
        for i, d in zip(shown, imp_delays, strict=True):
            actions.append(_action(request_id, int(ds.item_ids[i]), "impression", ts + int(d)))
        if rating >= cfg.click_min_rating:
            click_delay, like_extra = action_delays_ms(rng, 2, cfg)
            actions.append(_action(request_id, int(ds.item_ids[rated]), "click", ts + int(click_delay)))
            if rating >= cfg.like_min_rating:
                actions.append(_action(request_id, int(ds.item_ids[rated]), "like",
                                       ts + int(click_delay) + int(like_extra)))
        for a in actions:
            for e in disorder.apply(a, ts):
                push(e)
    while heap:
        yield heapq.heappop(heap)[2]


def _action(request_id: str, item_id: int, action: str, ts: int) -> ReplayEvent:
    record = {"request_id": request_id, "item_id": item_id, "action": action, "ts_ms": ts, "value": None}
    return ReplayEvent(ts, 0, ACTIONS, request_id, record)


class _Disorder:
    """Sends a share of actions early (before their feature log) and a share twice.

    An early action runs ahead of the send clock by at most 2*quarter and a duplicate lags it by
    at most 2*quarter, so no event is more than ``disorder_max_ms`` behind the newest one seen.
    Only actions within ``quarter`` of their request can go early; their probability is scaled
    by the running share of such actions so the measured early share meets the configured one.
    """

    def __init__(self, rng: np.random.Generator, cfg: ReplayConfig):
        self.rng = rng
        self.cfg = cfg
        self.quarter = max(cfg.disorder_max_ms // 4, 1)
        self.seen = 0
        self.eligible = 0

    def apply(self, a: ReplayEvent, log_ts: int) -> list[ReplayEvent]:
        self.seen += 1
        if a.record["ts_ms"] - log_ts <= self.quarter:
            self.eligible += 1
            p_early = min(1.0, self.cfg.early_share * self.seen / self.eligible)
            if self.rng.random() < p_early:
                a.send_ms = log_ts - int(self.rng.integers(1, self.quarter + 1))
        out = [a]
        if self.rng.random() < self.cfg.duplicate_share:
            lag = int(self.rng.integers(1, 2 * self.quarter + 1))
            out.append(ReplayEvent(a.send_ms + lag, 0, ACTIONS, a.key, dict(a.record)))
        return out
