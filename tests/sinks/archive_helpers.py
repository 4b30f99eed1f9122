"""Example data for the archive tests (a module, not fixtures, so subprocesses and benches can use it too)."""

from __future__ import annotations

import random
from typing import Any

from examples.movielens import SPEC_FILE
from schemas.codec import default_codec
from schemas.spec import load_spec
from sinks.layout import HOUR_MS
from streamrec.config import KafkaConfig
from streamrec.kafka import producer

BASE_MS = 1_764_000_000_000 - 1_764_000_000_000 % HOUR_MS  # an hour boundary (2025-11-24T16:00Z)
SPEC = load_spec(SPEC_FILE)  # the examples have MovieLens's slots


def make_examples(n: int, start_ms: int = BASE_MS, step_ms: int = 1000, seed: int = 1,
                  tag: str = "") -> list[dict[str, Any]]:
    """``n`` TrainingExample records, ``step_ms`` apart in event time, 5 items per request."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        req = f"req{tag}-{seed}-{i // 5}"
        item = rng.randrange(1, 1700)
        user = rng.randrange(1, 950)
        click = int(rng.random() < 0.3)
        sparse = {
            "user_id": [SPEC.fid("user_id", user)],
            "item_id": [SPEC.fid("item_id", item)],
            "genre": [SPEC.fid("genre", g) for g in rng.sample(range(19), rng.randrange(0, 4))],
            "year": [SPEC.fid("year", 1990 + i % 5)],
        }
        if i % 7 == 0:
            sparse["unlisted_slot"] = [i, i + 1]
        out.append({
            "example_id": f"{req}:{item}:{i % 5}:window", "request_id": req, "item_id": item,
            "user_id": user, "ts_ms": start_ms + i * step_ms, "sparse": sparse,
            "dense": {"age": rng.random()} if i % 3 else {},
            "labels": {"click": click, "like": int(click and rng.random() < 0.5)},
            "sample_rate": 1.0 if click else 0.5, "late": False, "join_delay_ms": rng.randrange(0, 300_000),
            "kind": "window",
        })
    return out


def normalize(rec: dict[str, Any]) -> dict[str, Any]:
    """A record as it reads back from Avro (floats rounded through float32)."""
    return default_codec().decode(default_codec().encode("TrainingExample", rec), expect="TrainingExample")[1]


def produce(kafka: KafkaConfig, topic: str, records: list[dict[str, Any]]) -> None:
    codec = default_codec()
    p = producer(kafka)
    for i, r in enumerate(records):
        p.produce(topic, codec.encode("TrainingExample", r), key=r["request_id"].encode())
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(30) == 0
