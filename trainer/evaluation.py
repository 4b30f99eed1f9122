"""Progressive validation: every example is scored before it is trained on.

Scores land in event-time windows; when the watermark passes a window's end its exact weighted
AUC and log loss are computed and kept as one row (CSV + plot). A popularity baseline (the
item's click rate so far, also scored before its counts are updated) is evaluated on the same
examples, so the model's curve always has a reference. Weights are ``1 / sample_rate`` so the
numbers estimate the un-sampled traffic. The whole state pickles into snapshots, so a restored
trainer continues the same curve.
"""

from __future__ import annotations

import csv
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EPS = 1e-7
LOGIT_BINS = 1 << 14
LOGIT_RANGE = 16.0


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Exact ROC AUC with sample weights; ties count one half. NaN if one class is missing."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    w = np.ones_like(scores) if weights is None else np.asarray(weights, dtype=np.float64)
    if scores.size == 0:
        return math.nan
    o = np.argsort(scores)  # ties are grouped below, so no stable (slower) sort is needed
    s, y, w = scores[o], labels[o], w[o]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    gp = np.add.reduceat(w * y, starts)
    gn = np.add.reduceat(w * (1 - y), starts)
    den = gp.sum() * gn.sum()
    if den <= 0:
        return math.nan
    below = np.cumsum(gn) - gn
    return float(np.sum(gp * (below + 0.5 * gn)) / den)


def log_loss(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    p = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    tw = w.sum()
    if tw <= 0:
        return math.nan
    return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / tw)


def correct_sampled(p: np.ndarray, keep_rate: float) -> np.ndarray:
    """Log-odds correction for negatives kept with probability r: p / (p + (1 - p) / r)."""
    p = np.asarray(p, dtype=np.float64)
    if keep_rate >= 1.0:
        return p
    return p / (p + (1.0 - p) / keep_rate)


class HistogramAUC:
    """Bounded-memory AUC over an unbounded stream: weighted counts per logit bin and label."""

    def __init__(self) -> None:
        self.pos = np.zeros(LOGIT_BINS)
        self.neg = np.zeros(LOGIT_BINS)

    def add(self, scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> None:
        p = np.clip(scores, EPS, 1 - EPS)
        z = np.clip(np.log(p / (1 - p)), -LOGIT_RANGE, LOGIT_RANGE - 1e-9)
        b = ((z + LOGIT_RANGE) / (2 * LOGIT_RANGE) * LOGIT_BINS).astype(np.int64)
        self.pos += np.bincount(b, weights * labels, LOGIT_BINS)
        self.neg += np.bincount(b, weights * (1 - labels), LOGIT_BINS)

    def auc(self) -> float:
        den = self.pos.sum() * self.neg.sum()
        if den <= 0:
            return math.nan
        below = np.cumsum(self.neg) - self.neg
        return float(np.sum(self.pos * (below + 0.5 * self.neg)) / den)


class PopularityBaseline:
    """Score = the item's weighted positive rate so far, smoothed towards the global rate.

    Counts live in a vectorised id -> (positives, total) map, so a batch costs a few numpy calls.
    """

    def __init__(self, prior_strength: float = 10.0) -> None:
        from serving.table import ServingTable

        self.prior_strength = prior_strength
        self.counts = ServingTable(dim=2)
        self.gpos = 0.0
        self.gtot = 0.0

    def score(self, items: np.ndarray) -> np.ndarray:
        g = (self.gpos + 1.0) / (self.gtot + 2.0)
        a = self.prior_strength
        c = self.counts.lookup(np.asarray(items, dtype=np.int64)).astype(np.float64)
        return (c[:, 0] + a * g) / (c[:, 1] + a)

    def update(self, items: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> None:
        uniq, inv = np.unique(np.asarray(items, dtype=np.int64), return_inverse=True)
        add = np.stack([np.bincount(inv, weights * labels, len(uniq)), np.bincount(inv, weights, len(uniq))], 1)
        self.counts.upsert(uniq, self.counts.lookup(uniq) + add.astype(np.float32))
        self.gpos += float((weights * labels).sum())
        self.gtot += float(weights.sum())


@dataclass
class _Window:
    scores: list[np.ndarray] = field(default_factory=list)
    base: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)


CSV_FIELDS = ("window_start_ms", "window_end_ms", "examples", "positives", "auc", "logloss",
              "baseline_auc", "baseline_logloss", "cum_auc", "cum_baseline_auc")


class ProgressiveEvaluator:
    """Collects (event time, label, score, weight) of the first head and closes event-time windows."""

    def __init__(self, window_ms: int, lateness_ms: int = 0, baseline_prior: float = 10.0) -> None:
        self.window_ms = window_ms
        self.lateness_ms = lateness_ms
        self.baseline = PopularityBaseline(baseline_prior)
        self.cum = HistogramAUC()
        self.cum_base = HistogramAUC()
        self.open: dict[int, _Window] = {}
        self.rows: list[dict[str, float]] = []
        self.max_ts = -(1 << 62)
        self.next_key = -(1 << 62)  # every window before this one is closed
        self.examples = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        d.pop("_lock")
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def record(self, ts_ms: np.ndarray, items: np.ndarray, labels: np.ndarray, scores: np.ndarray,
               weights: np.ndarray) -> list[dict[str, float]]:
        """Add one scored batch (scores computed before training on it); return windows closed."""
        labels = labels.astype(np.float64)
        weights = weights.astype(np.float64)
        scores = scores.astype(np.float64)
        with self._lock:
            base = self.baseline.score(items)
            self.baseline.update(items, labels, weights)
            self.cum.add(scores, labels, weights)
            self.cum_base.add(base, labels, weights)
            self.examples += len(ts_ms)
            # an example of an already closed window (a late positive) counts in the oldest open one
            keys = np.maximum(ts_ms // self.window_ms, self.next_key)
            for k in np.unique(keys).tolist():
                m = keys == k
                w = self.open.setdefault(k, _Window())
                w.scores.append(scores[m])
                w.base.append(base[m])
                w.labels.append(labels[m])
                w.weights.append(weights[m])
            self.max_ts = max(self.max_ts, int(ts_ms.max()))
            return self._close(self.max_ts - self.lateness_ms)

    def flush(self) -> list[dict[str, float]]:
        with self._lock:
            return self._close(None)

    def _close(self, watermark: int | None) -> list[dict[str, float]]:
        closed = []
        for k in sorted(self.open):
            end = (k + 1) * self.window_ms
            if watermark is not None and end > watermark:
                break
            w = self.open.pop(k)
            self.next_key = k + 1
            s, b = np.concatenate(w.scores), np.concatenate(w.base)
            y, wt = np.concatenate(w.labels), np.concatenate(w.weights)
            row = {
                "window_start_ms": k * self.window_ms, "window_end_ms": end, "examples": int(s.size),
                "positives": int(y.sum()), "auc": weighted_auc(s, y, wt), "logloss": log_loss(s, y, wt),
                "baseline_auc": weighted_auc(b, y, wt), "baseline_logloss": log_loss(b, y, wt),
                "cum_auc": self.cum.auc(), "cum_baseline_auc": self.cum_base.auc(),
            }
            self.rows.append(row)
            closed.append(row)
        return closed

    def summary(self) -> dict[str, float]:
        return {"examples": self.examples, "auc": self.cum.auc(), "baseline_auc": self.cum_base.auc(),
                "windows": len(self.rows)}


def write_csv(rows: list[dict[str, float]], path: Path) -> None:
    """Rewrite the whole CSV (rows are few: one per window), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in CSV_FIELDS})
    tmp.replace(path)


def plot(rows: list[dict[str, float]], path: Path, title: str = "progressive validation") -> None:
    """AUC and log loss per event-time window, model vs popularity baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = rows[0]["window_start_ms"]
    x = [(r["window_start_ms"] - t0) / 60_000 for r in rows]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a1.plot(x, [r["auc"] for r in rows], ".-", label="DeepFM (window)")
    a1.plot(x, [r["baseline_auc"] for r in rows], ".-", label="popularity (window)", alpha=0.7)
    a1.plot(x, [r["cum_auc"] for r in rows], "--", label="DeepFM (cumulative)")
    a1.plot(x, [r["cum_baseline_auc"] for r in rows], ":", label="popularity (cumulative)")
    a1.set_ylabel("click AUC")
    a1.legend(loc="upper left", fontsize=8)
    a1.set_title(title)
    a2.plot(x, [r["logloss"] for r in rows], ".-", label="DeepFM")
    a2.plot(x, [r["baseline_logloss"] for r in rows], ".-", label="popularity", alpha=0.7)
    a2.set_ylabel("log loss")
    a2.set_xlabel("event time since the first window (min)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
