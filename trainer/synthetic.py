"""SYNTHETIC TrainingExamples for unit-sized tests and benchmarks of the trainer, under any feature spec.

Not a dataset: users and items are numbers, and the first label is 1 with probability 0.6 when
the user's group equals the item's group (``u % 3 == i % 3``), 0.08 otherwise. The groups are
visible to the model through the slots, so there is something to learn:

- user-side slots: the first carries the user number, the second its group, any further one
  ``u % (5 + k)``; item-side slots: the first the item number, the second ``["g<i % 3>",
  "x<i % 7>"]``, further ones ``i % (5 + k)``; crosses from their sources' FIDs;
- dense features: item-side ``i % 10``, user-side ``u % 10``; any further label is 1 for half
  of the positives of the first (a second task like "like" after "click").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from schemas.spec import FeatureSpec


def _values(k: int, n: int, item: bool) -> list[Any]:
    if k == 0:
        return [n]
    if k == 1:
        return [f"g{n % 3}", f"x{n % 7}"] if item else [n % 3]
    return [n % (5 + k)]


def synthetic_examples(spec: FeatureSpec, n: int, users: int = 200, items: int = 100, seed: int = 0,
                       t0_ms: int = 1_700_000_000_000, step_ms: int = 100, keep_rate: float = 1.0,
                       prefix: str = "s") -> list[dict[str, Any]]:
    """``n`` shown items as TrainingExamples (negatives kept with ``keep_rate``), event time
    advancing ``step_ms`` per example. Same arguments, same examples."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    i = rng.integers(0, items, n)
    click = rng.random(n) < np.where((u % 3) == (i % 3), 0.6, 0.08)
    keep = click | (rng.random(n) < keep_rate)
    second = click & (rng.random(n) < 0.5)
    slots = {side: [s for s in spec.slots if not spec.slots[s].retired and spec.slots[s].side == side]
             for side in ("user", "item")}
    first, *others = spec.labels
    out = []
    for k in np.flatnonzero(keep).tolist():
        uu, ii = int(u[k]), int(i[k])
        sparse = {}
        for side, num in (("user", uu), ("item", ii)):
            for j, s in enumerate(slots[side]):
                sparse[s] = [spec.fid(s, v) for v in _values(j, num, side == "item")]
        for c, cs in spec.crosses.items():
            a, b = cs.of
            if not cs.retired and a in sparse and b in sparse:
                sparse[c] = [spec.cross_fid(c, fa, fb) for fa in sparse[a] for fb in sparse[b]]
        dense = {d: float((ii if ds.side == "item" else uu) % 10) for d, ds in spec.dense.items()}
        out.append({
            "example_id": f"{prefix}{seed}-{k}", "request_id": f"{prefix}{seed}-r{k}", "item_id": ii, "user_id": uu,
            "ts_ms": t0_ms + k * step_ms, "sparse": sparse, "dense": dense,
            "labels": {first: int(click[k]), **dict.fromkeys(others, int(second[k]))},
            "sample_rate": 1.0 if click[k] else keep_rate, "late": False, "join_delay_ms": 0, "kind": "window",
        })
    return out
