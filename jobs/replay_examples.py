"""TrainingExamples of a replay without Kafka: the replay's logs joined in memory, in send order.

For tests and benchmarks of the trainer alone: the records are exactly what the joiner would
produce from the same events (same rules, validation and example ids), in emission order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from joiner.config import JoinerConfig
from joiner.memory import MemoryJoin
from replay.config import ReplayConfig
from replay.events import FEATURES, ReplayEvent
from schemas.spec import FeatureSpec
from streamrec.applog import LogEncoder


def join_events(events: Iterable[ReplayEvent], cfg: JoinerConfig, spec: FeatureSpec) -> list[dict[str, Any]]:
    """Encode each log as the client does, join in memory, flush every window at the end."""
    enc = LogEncoder(spec)
    join = MemoryJoin(cfg, spec)
    for e in events:
        if e.role == FEATURES:
            join.add_features(enc.record(e.log))
        else:
            join.add_action(e.log.record())
    join.finish()
    return join.examples


def movielens_examples(spec: FeatureSpec, limit: int, seed: int = 7, speed: float = 3600.0,
                       window_ms: int = 60_000, keep_rate: float = 0.5) -> list[dict[str, Any]]:
    """``limit`` MovieLens ratings replayed and joined (in memory), under the MovieLens spec ``spec``."""
    from replay.events import iter_events

    rcfg = ReplayConfig(limit=limit, seed=seed, speed=speed)
    jcfg = JoinerConfig(window_ms=window_ms, negative_keep_rate=keep_rate, seed=seed)
    return join_events(iter_events(rcfg, "movielens"), jcfg, spec)
