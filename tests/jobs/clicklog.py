"""A SYNTHETIC shop's click log, with none of MovieLens's names: the second dataset of the end-to-end test.

Not real data. Visitors belong to one of five segments, items to one of five categories; a
hidden affinity between segment and category (plus a little item quality) decides clicks, and a
third of the clicks become likes. The popularity baseline sees only items, so a model beats it
only by learning the segment x category signal, which the spec makes visible through its slots
and its cross. Everything is drawn from one seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from streamrec.client import ActionLog, FeatureLog

SPEC_V1 = """\
# a shop's feature spec: 3 user slots, 4 item slots, a cross, 2 dense features, click and like
unknown = "drop"

[embedding]
dim = 8

[slots]
visitor    = { number = 101, side = "user", type = "int" }
segment    = { number = 102, side = "user" }
region     = { number = 103, side = "user" }
sku        = { number = 201, side = "item", type = "int", filter_threshold = 2 }
category   = { number = 202, side = "item" }
brand      = { number = 203, side = "item" }
price_band = { number = 204, side = "item" }

[crosses]
segment_x_category = { number = 301, of = ["segment", "category"] }

[dense]
visitor_visits = { side = "user", normalize = "log1p" }
sku_price      = { side = "item", default = 20.0, normalize = "standard", mean = 20.0, std = 10.0 }

[actions]
labels = ["click", "like"]
ignored = ["view"]
"""

# the spec a month later: one item slot added (the rest unchanged)
SPEC_V2 = SPEC_V1.replace("[crosses]", 'colour     = { number = 205, side = "item" }\n\n[crosses]')

SEGMENTS = CATEGORIES = 5
VISITORS, SKUS, SHOWN = 1500, 400, 8
COLOURS = ["red", "blue", "green", "black"]


class Shop:
    """The shop's hidden truth: who likes what (fixed by ``seed``)."""

    def __init__(self, seed: int = 5):
        rng = np.random.default_rng(seed)
        self.affinity = rng.normal(0.0, 1.0, (SEGMENTS, CATEGORIES))
        self.segment = rng.integers(0, SEGMENTS, VISITORS)
        self.region = rng.integers(0, 12, VISITORS)
        self.category = rng.integers(0, CATEGORIES, SKUS)
        self.brand = rng.integers(0, 30, SKUS)
        self.price = np.round(rng.gamma(2.0, 10.0, SKUS), 2)
        self.quality = rng.normal(0.0, 0.3, SKUS)
        pop = 1.0 / np.arange(1, SKUS + 1) ** 0.8
        self.popularity = pop / pop.sum()

    def p_click(self, visitor: int, sku: int) -> float:
        z = -2.2 + 1.4 * self.affinity[self.segment[visitor], self.category[sku]] + self.quality[sku]
        return 1.0 / (1.0 + math.exp(-z))

    def user(self, visitor: int) -> dict:
        return {"visitor": visitor, "segment": f"s{self.segment[visitor]}", "region": f"r{self.region[visitor]}"}

    def item(self, sku: int, colours: bool) -> dict:
        raw = {"sku": sku, "category": f"c{self.category[sku]}", "brand": f"b{self.brand[sku]}",
               "price_band": str(min(int(self.price[sku] // 10), 5))}
        if colours:
            raw["colour"] = COLOURS[sku % len(COLOURS)]
        return raw


def click_log(shop: Shop, first: int, n: int, t0_ms: int, step_ms: int, colours: bool,
              seed: int) -> Iterator[FeatureLog | ActionLog]:
    """Requests ``first .. first + n - 1`` as the client logs them: each feature log, then its views,
    clicks and likes (seconds later), in event-time order of sending."""
    rng = np.random.default_rng(seed)
    visits = np.zeros(VISITORS, np.int64)
    pending: list[tuple[int, ActionLog]] = []
    for r in range(first, first + n):
        ts = t0_ms + (r - first) * step_ms
        ready = [a for t, a in pending if t <= ts]
        pending = [(t, a) for t, a in pending if t > ts]
        yield from sorted(ready, key=lambda a: a.ts_ms)
        v = int(rng.integers(0, VISITORS))
        shown = rng.choice(SKUS, SHOWN, replace=False, p=shop.popularity)
        rid = f"shop-{r:06d}"
        log = FeatureLog(rid, v, ts, shop.user(v), {"visitor_visits": float(visits[v])}, source="shop")
        for sku in shown.tolist():
            log.add_item(sku, shop.item(sku, colours), {"sku_price": float(shop.price[sku])})
        visits[v] += 1
        yield log
        for sku in shown.tolist():
            pending.append((ts + 50, ActionLog(rid, sku, "view", ts + 50)))
            if rng.random() < shop.p_click(v, sku):
                delay = int(rng.integers(1_000, 30_000))
                pending.append((ts + delay, ActionLog(rid, sku, "click", ts + delay)))
                if rng.random() < 1 / 3:
                    pending.append((ts + delay + 5_000, ActionLog(rid, sku, "like", ts + delay + 5_000)))
    yield from (a for _, a in sorted(pending, key=lambda p: p[0]))
