"""TrainingExamples of a replay without Kafka: the join core driven in memory, in send order.

For tests, benchmarks and demos of the trainer alone, and for the demo's reference join
(``MemoryJoin``, fed as the replay streams). The records are exactly what the joiner would
produce from the same events (same rules, same example ids), in emission order.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any

from joiner.config import JoinerConfig
from joiner.core import WATERMARK_MAX, WATERMARK_MIN, Joiner, Step, check_action, check_features
from replay import FEATURES
from replay.config import ReplayConfig


class MemoryJoin:
    """The join core driven in memory, one event at a time (``add``), then ``finish``.

    One global watermark, ``max event time seen - allowed_lateness_ms - 1``, and every timer due
    at it fired after each event; ``finish`` is the end of input (watermark at its maximum,
    every timer fired), as the embedded runner's drain and a bounded Flink source do. The join
    decides from event times only, so within the allowed lateness this gives what the streaming
    runtimes give, whatever their partitioning and per-partition watermarks.

    Collects the writer's examples (``examples``, emission order), the counts of ``Step``
    (positives, negatives_kept, negatives_dropped, late) and dead letters by reason.
    """

    def __init__(self, cfg: JoinerConfig, writer: Any = None):
        self.joiner = Joiner(cfg, writer)
        self.lateness = cfg.allowed_lateness_ms
        self.states: dict[str, Any] = {}
        self.timers: list[tuple[int, str]] = []
        self.max_ts = WATERMARK_MIN
        self.examples: list[Any] = []
        self.counts: Counter[str] = Counter()
        self.dead_reasons: Counter[str] = Counter()

    def add(self, e: Any) -> None:
        """One ReplayEvent (``role``, ``key``, ``record``), validated as the runtimes do."""
        rec = e.record
        features = e.role == FEATURES
        bad = check_features(rec) if features else check_action(rec)
        if bad is not None:
            self.dead_reasons[bad[0]] += 1
            return
        self.max_ts = max(self.max_ts, rec["ts_ms"])
        wm = self.max_ts - self.lateness - 1
        st = self.states.get(e.key)
        j = self.joiner
        self._apply(e.key, j.on_features(st, rec, wm) if features else j.on_action(st, rec, wm))
        self._fire(wm)

    def finish(self) -> None:
        """End of input: every window closes, waiting actions and states expire."""
        self._fire(WATERMARK_MAX)

    def _fire(self, wm: int) -> None:
        timers = self.timers
        while timers and timers[0][0] <= wm:
            _, key = heapq.heappop(timers)
            st = self.states.get(key)
            if st is not None:
                self._apply(key, self.joiner.on_timer(st, wm))

    def _apply(self, key: str, step: Step) -> None:
        self.examples.extend(step.examples)
        c = self.counts
        c["positives"] += step.positives
        c["negatives_kept"] += step.negatives_kept
        c["negatives_dropped"] += step.negatives_dropped
        c["late"] += step.late
        for d in step.dead_letters:
            self.dead_reasons[d.reason] += 1
        if step.state is None:
            self.states.pop(key, None)
        else:
            self.states[key] = step.state
        if step.timer is not None and step.changed:  # unchanged: that timer is in the heap already
            heapq.heappush(self.timers, (step.timer, key))


def join_events(events: list[Any], cfg: JoinerConfig) -> list[dict[str, Any]]:
    """Feed ReplayEvents (``role``, ``key``, ``record``) to the join; flush every window at the end."""
    join = MemoryJoin(cfg)
    for e in events:
        join.add(e)
    join.finish()
    return join.examples


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
