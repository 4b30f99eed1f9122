"""Small hand-built feature logs and actions for the join tests (no dataset needed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from joiner.config import JoinerConfig
from tests.conftest import MOVIELENS_SPEC

SPEC = MOVIELENS_SPEC  # the join tests' logs use MovieLens's slots


def feature_log(rid: str, ts: int, items: list[int], user: int = 1) -> dict[str, Any]:
    return {
        "request_id": rid, "user_id": user, "ts_ms": ts,
        "user_sparse": {"user_id": [SPEC.fid("user_id", user)], "age": [SPEC.fid("age", 30)]},
        "user_dense": {"user_activity": 0.5},
        "items": [{"item_id": i, "position": p, "sparse": {"item_id": [SPEC.fid("item_id", i)]},
                   "dense": {"item_popularity": float(i % 7) / 4}} for p, i in enumerate(items)],
        "source": "test",
    }


def action(rid: str, item: int, kind: str, ts: int) -> dict[str, Any]:
    return {"request_id": rid, "item_id": item, "action": kind, "ts_ms": ts, "value": None}


@pytest.fixture
def small_cfg() -> JoinerConfig:
    """Short windows so tests stay tiny: window 1 s, lateness 0.5 s, TTL 10 s, tombstone 5 s."""
    return JoinerConfig(window_ms=1000, allowed_lateness_ms=500, ttl_ms=10_000, tombstone_ms=5000,
                        negative_keep_rate=0.5, seed=3)


@pytest.fixture
def make_feature_log() -> Callable[..., dict[str, Any]]:
    return feature_log


@pytest.fixture
def make_action() -> Callable[..., dict[str, Any]]:
    return action


class Msg:
    """What ``process_batch`` reads of a confluent-kafka Message."""

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 error: Any = None, timestamp: int | None = None):
        self._t, self._p, self._o, self._k, self._v, self._e = topic, partition, offset, key, value, error
        self._ts = timestamp

    def timestamp(self) -> tuple[int, int]:
        """(type, ms) as confluent-kafka gives it: (0, -1) when there is none."""
        return (0, -1) if self._ts is None else (1, self._ts)

    def error(self) -> Any:
        return self._e

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v
