"""The simulated users: who they are, which arm they are in, what they are offered, how they react.

Everything here is pure and seeded (no Kafka, no HTTP), so the run's traffic is a function of the
config: the same seed offers the same users the same candidates; only the rankings, which come
from the live model, differ between runs.

A user's taste is their MovieLens ratings *after* the batch cut (``simulate.batch_share``): the
starting model was trained on the ratings before it, and no model ever sees the later ones; the
user reveals them only through clicks and likes on what the feed shows.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from replay.dataset import Dataset
from simulate.config import SimulateConfig

ONLINE, FROZEN = "online", "frozen"
ARMS = (ONLINE, FROZEN)


def arm_of(user_id: int, seed: int, online_share: float) -> str:
    """The user's arm: a hash of (seed, user id), so the split is stable across requests and runs and
    independent of the order users arrive in."""
    h = hashlib.blake2b(f"{seed}:{user_id}".encode(), digest_size=8).digest()
    return ONLINE if int.from_bytes(h, "big") / 2**64 < online_share else FROZEN


@dataclass
class SimUser:
    index: int  # into Dataset.user_ids
    user_id: int
    arm: str
    later: dict[int, float]  # item index -> rating, after the cut (the hidden taste)
    rated: set[int]  # item indexes rated at any time (never offered as "unrated")
    shown: set[int] = field(default_factory=set)  # item indexes shown so far (never offered again)
    requests: int = 0


@dataclass
class Action:
    """One reaction, due at event time ``ts_ms``."""

    ts_ms: int
    request_id: str
    item_id: int
    action: str


class Population:
    """The users of a run, the catalogue's raw features, and the seeded draws of the feed."""

    def __init__(self, ds: Dataset, cfg: SimulateConfig, labels: list[str]) -> None:
        self.ds, self.cfg = ds, cfg
        missing = [lb for lb in labels if lb not in cfg.min_rating or lb not in cfg.base_rate]
        if missing:
            raise ValueError(f"simulate.min_rating and simulate.base_rate need every label of the spec; "
                             f"missing {missing} (labels: {labels})")
        # labels from the most to the least frequent: a rating or draw that earns one earns those before it
        self.labels = sorted(labels, key=lambda lb: (cfg.min_rating[lb], -cfg.base_rate[lb]))
        self.rng = np.random.default_rng(cfg.seed)
        self.cut = int(len(ds) * cfg.batch_share)
        later = range(self.cut, len(ds))
        by_user: dict[int, dict[int, float]] = {}
        for r in later:
            by_user.setdefault(int(ds.r_user[r]), {})[int(ds.r_item[r])] = float(ds.r_rating[r])
        rated: dict[int, set[int]] = {}
        for u, i in zip(ds.r_user.tolist(), ds.r_item.tolist(), strict=True):
            rated.setdefault(u, set()).add(i)
        order = sorted((u for u, r in by_user.items() if len(r) >= cfg.min_ratings), key=lambda u: -len(by_user[u]))
        if cfg.users:
            order = order[: cfg.users]
        if not order:
            raise ValueError(f"no user has {cfg.min_ratings} ratings after the cut (simulate.min_ratings)")
        self.users = [SimUser(u, int(ds.user_ids[u]), arm_of(int(ds.user_ids[u]), cfg.seed, cfg.online_share),
                              by_user[u], rated[u]) for u in sorted(order)]
        # what the pipeline knows before the run: counts of the batch part (the dense features' "seen before")
        self.user_seen = np.bincount(ds.r_user[: self.cut], minlength=len(ds.user_ids)).astype(np.int64)
        self.item_seen = np.bincount(ds.r_item[: self.cut], minlength=len(ds.item_ids)).astype(np.int64)
        self.popularity = ds.item_popularity()
        self.user_raw = [{s: v[u] for s, v in ds.user_raw.items()} for u in range(len(ds.user_ids))]
        self.item_raw = [{s: v[i] for s, v in ds.item_raw.items()} for i in range(len(ds.item_ids))]

    # ---- a request ----------------------------------------------------------------------------------
    def next_user(self) -> SimUser:
        return self.users[int(self.rng.integers(len(self.users)))]

    def candidates(self, u: SimUser) -> list[int]:
        """Item indexes the user was not shown yet: up to ``rated_share`` of them among the items the user
        rated later, the rest among items the user never rated, drawn by popularity."""
        n = self.cfg.candidates
        fresh_rated = [i for i in u.later if i not in u.shown]
        k = min(len(fresh_rated), round(n * self.cfg.rated_share))
        picked = [fresh_rated[j] for j in self.rng.choice(len(fresh_rated), k, replace=False)] if k else []
        taken = set(picked)
        p = self.popularity.copy()
        p[list(u.rated | u.shown)] = 0.0
        if p.sum() > 0:
            want = min(n - k, int((p > 0).sum()))
            picked += [int(i) for i in self.rng.choice(len(p), want, replace=False, p=p / p.sum()) if i not in taken]
        self.rng.shuffle(picked)
        return picked

    def dense(self, spec: Any, side: str, index: int) -> dict[str, float]:
        """The side's dense features as the replay computes them: log1p of how often this user (item) was
        seen before (the batch part's ratings, then this run's requests (clicks))."""
        seen = self.user_seen if side == "user" else self.item_seen
        return dict.fromkeys(spec.dense_on(side), math.log1p(int(seen[index])))

    def request(self, spec: Any, u: SimUser, items: list[int], ts_ms: int) -> dict[str, Any]:
        """The model server's request body (raw values: the server's client encodes them)."""
        return {"user_id": u.user_id, "ts_ms": ts_ms, "user": self.user_raw[u.index],
                "user_dense": self.dense(spec, "user", u.index), "show": self.cfg.show,
                "candidates": [{"item_id": int(self.ds.item_ids[i]), "sparse": self.item_raw[i],
                                "dense": self.dense(spec, "item", i)} for i in items]}

    # ---- the reaction -------------------------------------------------------------------------------
    def react(self, u: SimUser, request_id: str, shown: list[int], ts_ms: int) -> list[Action]:
        """The user's actions on the shown items (indexes, in rank order): an impression each, and the
        labels their later rating earns (unrated: the base rates), each after a log-normal delay."""
        cfg = self.cfg
        u.requests += 1
        self.user_seen[u.index] += 1
        out = []
        for i in shown:
            u.shown.add(i)
            item_id = int(self.ds.item_ids[i])
            out.append(Action(ts_ms + int(self.rng.integers(0, cfg.impression_delay_max_ms + 1)), request_id,
                              item_id, cfg.impression_action))
            rating = u.later.get(i)
            draw = self.rng.random()
            t = ts_ms
            for lb in self.labels:
                earned = rating >= cfg.min_rating[lb] if rating is not None else draw < cfg.base_rate[lb]
                if not earned:
                    break
                t += self._delay_ms()
                out.append(Action(min(t, ts_ms + int(cfg.delay_max_s * 1000)), request_id, item_id, lb))
                if lb == self.labels[0]:
                    self.item_seen[i] += 1
        return out

    def _delay_ms(self) -> int:
        d = self.rng.lognormal(math.log(self.cfg.delay_median_s), self.cfg.delay_sigma)
        return 1 + int(min(d, self.cfg.delay_max_s) * 1000)
