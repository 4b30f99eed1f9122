"""TrainingExamples of a replay without Kafka: the join core driven in memory, in send order.

For tests, benchmarks and demos of the trainer alone. The records are exactly what the joiner
would produce from the same events (same rules, same example ids), in emission order.
"""

from __future__ import annotations

import heapq
from typing import Any

from joiner.config import JoinerConfig
from joiner.core import WATERMARK_MIN, Joiner
from replay.config import ReplayConfig


def join_events(events: list[Any], cfg: JoinerConfig) -> list[dict[str, Any]]:
    """Feed ReplayEvents (``role``, ``key``, ``record``) to the join; flush every window at the end."""
    joiner = Joiner(cfg)
    states: dict[str, Any] = {}
    timers: list[tuple[int, str]] = []
    out: list[dict[str, Any]] = []
    max_ts = WATERMARK_MIN

    def fire(wm: int) -> None:
        while timers and timers[0][0] <= wm:
            t, key = heapq.heappop(timers)
            st = states.get(key)
            if st is None:
                continue
            apply(key, joiner.on_timer(st, wm))

    def apply(key: str, step: Any) -> None:
        out.extend(step.examples)
        if step.state is None:
            states.pop(key, None)
        else:
            states[key] = step.state
        if step.timer is not None:
            heapq.heappush(timers, (step.timer, key))

    for e in events:
        ts = e.record["ts_ms"]
        max_ts = max(max_ts, ts)
        wm = max_ts - cfg.allowed_lateness_ms - 1
        st = states.get(e.key)
        step = (joiner.on_features(st, e.record, wm) if e.role == "features"
                else joiner.on_action(st, e.record, wm))
        apply(e.key, step)
        fire(wm)
    fire(max_ts + cfg.ttl_ms + cfg.tombstone_ms + 1)
    return out


def movielens_examples(limit: int, seed: int = 7, speed: float = 3600.0, window_ms: int = 60_000,
                       keep_rate: float = 0.5) -> list[dict[str, Any]]:
    """``limit`` MovieLens ratings replayed and joined (in-memory)."""
    from replay.events import build_events

    rcfg = ReplayConfig(limit=limit, seed=seed, speed=speed)
    jcfg = JoinerConfig(window_ms=window_ms, negative_keep_rate=keep_rate, seed=seed)
    return join_events(build_events(rcfg, "movielens"), jcfg)


def synthetic_examples(n: int, users: int = 200, items: int = 100, seed: int = 0, t0_ms: int = 1_700_000_000_000,
                       step_ms: int = 100, keep_rate: float = 1.0, prefix: str = "s") -> list[dict[str, Any]]:
    """``n`` small TrainingExamples with a learnable click pattern (user group x item group).

    For unit-sized tests of the trainer: ids repeat often, clicks depend on both sides, event
    time advances ``step_ms`` per example.
    """
    import numpy as np

    from schemas.fid import fid

    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    i = rng.integers(0, items, n)
    p = np.where((u % 3) == (i % 3), 0.6, 0.08)
    click = rng.random(n) < p
    keep = click | (rng.random(n) < keep_rate)
    out = []
    for k in np.flatnonzero(keep).tolist():
        uu, ii = int(u[k]), int(i[k])
        out.append({
            "example_id": f"{prefix}{seed}-{k}", "request_id": f"{prefix}{seed}-r{k}", "item_id": ii, "user_id": uu,
            "ts_ms": t0_ms + k * step_ms,
            "sparse": {"user_id": [fid("user_id", uu)], "item_id": [fid("item_id", ii)],
                       "age": [fid("age", uu % 3)],  # the user's group, visible to the model
                       "genre": [fid("genre", f"g{ii % 3}"), fid("genre", f"x{ii % 7}")]},
            "dense": {"item_popularity": float(ii % 10)},
            "labels": {"click": int(click[k])}, "sample_rate": 1.0 if click[k] else keep_rate,
            "late": False, "join_delay_ms": 0, "kind": "window",
        })
    return out
