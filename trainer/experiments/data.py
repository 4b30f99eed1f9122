"""MovieLens ratings as TrainingExample records, one per rating, in time order.

The offline experiments of the paper train on rated (user, movie) pairs, not on a served feed, so
here every rating is one example (what the replay would log if it showed only the rated movie):
features as the replay logs them, FIDs as the client computes them (``LogEncoder``), labels as
the replay derives them (``replay.click_min_rating`` ...). Every action arrives, however late:
an offline dataset has all its labels. No joiner and no Kafka are involved.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from replay.config import ReplayConfig
from replay.events import FEATURES, iter_events
from schemas.spec import FeatureSpec
from streamrec.applog import LogEncoder


def rating_examples(spec: FeatureSpec, replay: ReplayConfig, limit: int = 0) -> list[dict[str, Any]]:
    """The first ``limit`` ratings (0 = all) by time, each a record the trainer reads."""
    cfg = replay.model_copy(update={"items_per_request": 1, "speed": 1.0, "limit": limit,
                                    "duplicate_share": 0.0, "early_share": 0.0})
    enc = LogEncoder(spec)
    labels = spec.labels
    out: dict[str, dict[str, Any]] = {}
    for e in iter_events(cfg, "movielens"):
        if e.role == FEATURES:
            log = enc.record(e.log)
            item = log["items"][0]
            out[e.key] = {
                "example_id": e.key, "request_id": e.key, "user_id": log["user_id"], "item_id": item["item_id"],
                "ts_ms": log["ts_ms"], "sparse": {**log["user_sparse"], **item["sparse"]},
                "dense": {**log["user_dense"], **item["dense"]}, "labels": dict.fromkeys(labels, 0),
                "sample_rate": 1.0,
            }
        elif e.log.action in out[e.key]["labels"]:
            out[e.key]["labels"][e.log.action] = 1
    return sorted(out.values(), key=lambda r: r["ts_ms"])  # stable: ties keep the dataset's order


def first_labels(records: list[dict[str, Any]], spec: FeatureSpec) -> np.ndarray:
    """The evaluated (first) label of each record."""
    first = spec.labels[0]
    return np.fromiter((r["labels"][first] for r in records), dtype=np.float64, count=len(records))


def slot_ids(records: list[dict[str, Any]], slot: str) -> np.ndarray:
    """Distinct FIDs of one slot in the records."""
    return np.unique(np.fromiter((f for r in records for f in r["sparse"].get(slot, ())), dtype=np.int64))
