"""The scoring benchmark's baseline: a plain FastAPI + PyTorch endpoint, as one would write it.

The same DeepFM (same class, same dense weights) over fixed ``nn.EmbeddingBag`` tables (a raw value
is hashed into a fixed number of buckets per slot: collisions allowed, no delta updates, no
FeatureLog). It answers the same JSON request with per-head scores ranked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from fastapi import FastAPI
from pydantic import BaseModel
from torch import nn

from schemas.spec import FeatureSpec
from trainer.batch import normalize_dense
from trainer.model import DeepFM


class Cand(BaseModel):
    item_id: int
    sparse: dict[str, Any] = {}
    dense: dict[str, float] = {}


class Req(BaseModel):
    user_id: int
    ts_ms: int | None = None
    user: dict[str, Any] = {}
    user_dense: dict[str, float] = {}
    candidates: list[Cand]


def make_app(spec: FeatureSpec, model: DeepFM, buckets: int, seed: int) -> FastAPI:
    torch.manual_seed(seed)
    slots = [s for s in spec.model_slots if s not in spec.crosses]
    dims = {s: spec.settings(s).dim for s in spec.model_slots}
    bags = {s: nn.EmbeddingBag(buckets, dims[s], mode="sum") for s in spec.model_slots}
    for b in bags.values():
        nn.init.normal_(b.weight, std=0.01)
    crosses = {n: c.of for n, c in spec.crosses.items() if not c.retired and n in dims}
    user_side = {s for s in slots if spec.side(s) == "user"}
    dense_names = list(spec.dense)
    labels = spec.labels
    app = FastAPI()

    def idx(slot: str, v: Any) -> list[int]:
        vals = v if isinstance(v, list) else [v]
        return [hash((slot, x)) % buckets for x in vals]

    @app.post("/score")
    def score(req: Req) -> Any:
        n = len(req.candidates)
        user_idx = {s: idx(s, req.user[s]) for s in user_side if s in req.user}
        pooled = []
        per_slot: dict[str, list[list[int]]] = {s: [] for s in spec.model_slots}
        for c in req.candidates:
            for s in spec.model_slots:
                if s in crosses:
                    a, b = crosses[s]
                    va = user_idx.get(a) or (idx(a, c.sparse[a]) if a in c.sparse else [])
                    vb = user_idx.get(b) or (idx(b, c.sparse[b]) if b in c.sparse else [])
                    per_slot[s].append([(x * 1_000_003 + y) % buckets for x in va for y in vb])
                elif s in user_idx:
                    per_slot[s].append(user_idx[s])
                else:
                    per_slot[s].append(idx(s, c.sparse[s]) if s in c.sparse else [])
        for s in spec.model_slots:
            lists = per_slot[s]
            flat = torch.tensor([x for lst in lists for x in lst], dtype=torch.long)
            offsets = torch.tensor(np.cumsum([0] + [len(lst) for lst in lists[:-1]]), dtype=torch.long)
            pooled.append(bags[s](flat, offsets))
        dense = np.array([[{**req.user_dense, **c.dense}.get(f, spec.dense[f].default) for f in dense_names]
                          for c in req.candidates], np.float32).reshape(n, len(dense_names))
        with torch.no_grad():
            p = torch.sigmoid(model(pooled, torch.from_numpy(normalize_dense(spec, dense)))).numpy()
        order = np.argsort(-p[:, 0])
        return {"items": [{"item_id": req.candidates[i].item_id,
                           "scores": {lb: float(p[i, j]) for j, lb in enumerate(labels)}} for i in order.tolist()]}

    return app
