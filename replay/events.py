"""Turn a rating stream into the two logs a served feed produces, in the order they are sent.

Each rating becomes one served request: the rated item plus K-1 items drawn by popularity are
shown (positions shuffled); each shown item gets an impression, the rated item a click when the
rating is high enough (and a like when higher still), after a heavy-tailed delay: a log-normal
body of seconds, a Pareto tail of hours to days. Event time follows the dataset's timestamps
compressed by ``speed``; messages are sent in event-time order, except a configured share of
actions sent *before* their feature log and a share sent twice. Both strays are bounded by
``disorder_max_ms`` of event time, so a joiner with that much allowed lateness sees no late data.
Everything is drawn from one seeded generator: same seed, same messages.

The logs are ``streamrec.applog`` logs of raw values, as an application would write them: the
client turns them into FIDs as the feature spec says when they are sent. Besides the dataset's
features, the replay logs two dense ones it counts itself: ``user_activity`` and
``item_popularity`` (log1p of how often the user / item was seen before).
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
from streamrec.applog.logs import ActionLog, FeatureLog

FEATURES = "features"
ACTIONS = "actions"


@dataclass(slots=True)
class ReplayEvent:
    send_ms: int  # position in the send order (event-time ms, or earlier for early actions)
    seq: int  # tie-breaker: generation order
    role: str  # FEATURES | ACTIONS
    key: str  # request_id: both topics are keyed by it, so a request's logs share a partition
    log: FeatureLog | ActionLog  # raw values; the client encodes it as the spec says


def load_dataset(cfg: ReplayConfig, source: str) -> Dataset:
    if source == "movielens":
        from examples.movielens.dataset import load_movielens

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


def _raw(ds: Dataset) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each user's and each item's raw features, built once (logs share them, as a server's cache would)."""
    users = [{slot: values[u] for slot, values in ds.user_raw.items()} for u in range(len(ds.user_ids))]
    items = [{slot: values[i] for slot, values in ds.item_raw.items()} for i in range(len(ds.item_ids))]
    return users, items


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
    user_raw, item_raw = _raw(ds)
    item_ids = ds.item_ids.tolist()
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
        log = FeatureLog(request_id, int(ds.user_ids[u]), ts, user_raw[u],
                         {"user_activity": math.log1p(user_seen[u])}, source=ds.name)
        for i in shown:
            log.add_item(item_ids[i], item_raw[i], {"item_popularity": math.log1p(item_seen[i])})
        user_seen[u] += 1
        item_seen[rated] += 1
        push(ReplayEvent(ts, 0, FEATURES, request_id, log))

        actions = []
        imp_delays = rng.integers(0, cfg.impression_delay_max_ms + 1, len(shown))
        for i, d in zip(shown, imp_delays, strict=True):
            actions.append(_action(request_id, item_ids[i], "impression", ts + int(d)))
        if rating >= cfg.click_min_rating:
            click_delay, like_extra = action_delays_ms(rng, 2, cfg)
            actions.append(_action(request_id, item_ids[rated], "click", ts + int(click_delay)))
            if rating >= cfg.like_min_rating:
                actions.append(_action(request_id, item_ids[rated], "like",
                                       ts + int(click_delay) + int(like_extra)))
        for a in actions:
            for e in disorder.apply(a, ts):
                push(e)
    while heap:
        yield heapq.heappop(heap)[2]


def _action(request_id: str, item_id: int, action: str, ts: int) -> ReplayEvent:
    return ReplayEvent(ts, 0, ACTIONS, request_id, ActionLog(request_id, item_id, action, ts))


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
        if a.log.ts_ms - log_ts <= self.quarter:
            self.eligible += 1
            p_early = min(1.0, self.cfg.early_share * self.seen / self.eligible)
            if self.rng.random() < p_early:
                a.send_ms = log_ts - int(self.rng.integers(1, self.quarter + 1))
        out = [a]
        if self.rng.random() < self.cfg.duplicate_share:
            lag = int(self.rng.integers(1, 2 * self.quarter + 1))
            out.append(ReplayEvent(a.send_ms + lag, 0, ACTIONS, a.key, a.log))  # the same log sent again
        return out


def looped(events: list[ReplayEvent], laps: int) -> Iterator[ReplayEvent]:
    """``events`` again and again, each lap with fresh request ids (``<id>~<lap>``) and its times
    shifted past the previous lap's: sustained load for as long as needed, at the cost of
    sending, not of generating (generation is several times slower than the client)."""
    if not events:
        return
    first = min(e.log.ts_ms for e in events)
    span = max(e.log.ts_ms for e in events) - first + 1
    for lap in range(laps):
        suffix, shift = f"~{lap}", lap * span
        for e in events:
            log, rid = e.log, e.key + suffix
            if type(log) is ActionLog:
                new: FeatureLog | ActionLog = ActionLog(rid, log.item_id, log.action, log.ts_ms + shift, log.value)
            else:
                new = FeatureLog(rid, log.user_id, log.ts_ms + shift, log.user, log.user_dense, log.items, log.source)
            yield ReplayEvent(e.send_ms + shift, e.seq, e.role, rid, new)
