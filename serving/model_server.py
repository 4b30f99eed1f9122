"""The model: scores FeatureLog-shaped requests with the serving PS's weights, per head, ranked.

It reads only the serving PS (embeddings that deltas brought, dense weights of the last dense
delta) and never inserts: an id serving has not received reads as zeros. The feature spec it
reads is the one the weights were trained under, shipped with them (slots, dense features with
their defaults and normalization, labels). Each head is corrected for negative sampling with its
own keep rate, by log-odds: ``p / (p + (1 - p) / r_head)`` (the trainer ships one rate per head:
a click keep rate applied to the like head over-corrects it, since many like-negatives are
clicks, which were all kept).
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import numpy as np
import torch

from schemas.spec import FeatureSpec
from serving.ps import ServingPS
from trainer.batch import build_batch, normalize_dense
from trainer.evaluation import correct_sampled
from trainer.model import DeepFM, pool


class ModelServer:
    def __init__(self, ps: ServingPS) -> None:
        self.ps = ps
        self._model: DeepFM | None = None
        self._spec: FeatureSpec | None = None
        self._rates: list[float] = []
        self._version = -1
        self._lock = threading.Lock()

    def _current_model(self) -> tuple[DeepFM, FeatureSpec, list[float]]:
        with self._lock:
            meta, state = self.ps.meta, self.ps.dense_state
            if state is None:
                raise RuntimeError("the serving PS has no dense weights yet (no dense sync happened)")
            if self._model is None or meta["dense_version"] != self._version:
                m = DeepFM(**meta["model"])
                m.load_state_dict(state)
                m.eval()
                spec = FeatureSpec.model_validate(meta["spec"])
                # older trainers shipped one rate (the first head's): it belongs to that head only
                rates = meta.get("keep_rates") or [meta.get("keep_rate", 1.0)] + [1.0] * (len(spec.labels) - 1)
                self._model, self._spec, self._rates, self._version = m, spec, list(rates), meta["dense_version"]
            return self._model, self._spec, self._rates

    @property
    def spec(self) -> FeatureSpec:
        """The feature spec of the weights being served (requests are built against it)."""
        return self._current_model()[1]

    @property
    def keep_rates(self) -> dict[str, float]:
        _, spec, rates = self._current_model()
        return dict(zip(spec.labels, rates, strict=True))

    @staticmethod
    def examples_of(request: dict[str, Any]) -> list[dict[str, Any]]:
        """A FeatureLog -> one example-shaped record per shown item (user ∪ item features)."""
        out = []
        for it in request["items"]:
            out.append({
                "example_id": f"{request['request_id']}:{it['item_id']}", "ts_ms": request["ts_ms"],
                "item_id": it["item_id"], "sparse": {**request.get("user_sparse", {}), **it.get("sparse", {})},
                "dense": {**request.get("user_dense", {}), **it.get("dense", {})}, "labels": {},
            })
        return out

    def raw_scores(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Uncorrected probability per label (what the trainer's model outputs) of example-shaped records."""
        model, spec, _ = self._current_model()
        b = build_batch(records, spec)
        return self._forward(model, spec, b.bags, b.dense)

    def raw_scores_logs(self, logs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """``raw_scores`` of every item of FeatureLog records, without building a record per item:
        a user-side slot's FIDs are the same for all of a request's items (tiled, not copied per
        dict), an item-side slot's are read once. Equal to ``raw_scores(examples_of(log))``."""
        model, spec, _ = self._current_model()
        bags = {}
        for slot in spec.model_slots:
            user_side = spec.side(slot) == "user"
            fids, lens = [], []
            for log in logs:
                k = len(log["items"])
                if user_side:
                    f = np.asarray(log["user_sparse"].get(slot) or (), np.int64)
                    fids.append(np.tile(f, k))
                    lens.append(np.full(k, len(f), np.int64))
                else:
                    lists = [it["sparse"].get(slot) or () for it in log["items"]]
                    n = np.fromiter(map(len, lists), np.int64, k)
                    fids.append(np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(n.sum())))
                    lens.append(n)
            ln = np.concatenate(lens)
            offsets = np.zeros(len(ln), np.int64)
            np.cumsum(ln[:-1], out=offsets[1:])
            bags[slot] = (np.concatenate(fids), offsets)
        cols = []
        for name, d in spec.dense.items():
            if d.side == "user":
                cols.append(np.concatenate([np.full(len(log["items"]), log["user_dense"].get(name, d.default))
                                            for log in logs]))
            else:
                cols.append(np.array([it["dense"].get(name, d.default) for log in logs for it in log["items"]]))
        n = sum(len(log["items"]) for log in logs)
        dense = normalize_dense(spec, np.stack(cols, 1).astype(np.float32) if cols else np.zeros((n, 0), np.float32))
        return self._forward(model, spec, bags, dense)

    def _forward(self, model: DeepFM, spec: FeatureSpec, bags: dict[str, tuple[np.ndarray, np.ndarray]],
                 dense: np.ndarray) -> dict[str, np.ndarray]:
        pooled = []
        for slot in spec.model_slots:
            fids, offsets = bags[slot]
            uniq, inv = np.unique(fids, return_inverse=True)
            rows = torch.from_numpy(self.ps.lookup(spec.number(slot), uniq, spec.settings(slot).dim))
            pooled.append(pool(rows, torch.from_numpy(inv.astype(np.int64)), torch.from_numpy(offsets)))
        with torch.no_grad():
            p = torch.sigmoid(model(pooled, torch.from_numpy(dense))).double().numpy()
        return {lb: p[:, j] for j, lb in enumerate(spec.labels)}

    def correct(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rates = self.keep_rates
        return {lb: correct_sampled(p, rates[lb]) for lb, p in raw.items()}

    def score_records(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Corrected probability per label for example-shaped records."""
        return self.correct(self.raw_scores(records))

    def score(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """Items of a FeatureLog-shaped request with their scores, best first by the first label."""
        recs = self.examples_of(request)
        scores = self.score_records(recs)
        first = next(iter(scores))
        out = [{"item_id": r["item_id"], **{lb: float(s[i]) for lb, s in scores.items()}}
               for i, r in enumerate(recs)]
        return sorted(out, key=lambda d: -d[first])
