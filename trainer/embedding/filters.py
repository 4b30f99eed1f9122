"""Frequency filters: an id gets a table row only after it has been seen often enough.

The long tail of feature ids (most ids occur once or twice) would otherwise fill the tables with
rows that never train. Two kinds, both batched and numba-compiled, both thread-safe:

- ``CountMinFilter`` — a count-min sketch of ``depth`` rows x ``width`` saturating uint8 counters
  with conservative update. ``admit(ids)`` counts every occurrence and admits an occurrence once
  the id's estimated count reaches ``threshold``. Estimates never undercount, so a frequent id is
  always admitted on time; a *false admission* (an id admitted before ``threshold`` real
  occurrences) needs every one of its ``depth`` counters to have been raised by other ids. With
  ``n`` distinct ids counted and independent rows that has probability at most ``(n / width) ** depth``,
  so ``width = capacity / fp_rate ** (1 / depth)`` bounds the false-admission rate by ``fp_rate``
  while at most ``capacity`` distinct ids are in the sketch. ``decay_every`` > 0 halves every
  counter after that many increments so old counts fade in an endless stream.
- ``ProbabilisticFilter`` — no per-id state: each occurrence of a missing id is admitted with
  probability ``1 / threshold`` (an id seen ``k`` times has a row with probability
  ``1 - (1 - 1/threshold) ** k``; expected occurrences before admission: ``threshold``). Its RNG is
  counter-based, so the saved state is one integer.

``state()`` / ``from_state()`` give plain dicts of numpy arrays (saved inside the store's snapshot).
"""

from __future__ import annotations

import math
import threading

import numpy as np

from trainer.embedding import _kernels as K


class CountMinFilter:
    kind = "count_min"

    def __init__(self, threshold: int, capacity: int = 1_000_000, fp_rate: float = 0.01, depth: int = 4,
                 seed: int = 7, decay_every: int = 0) -> None:
        if not 1 <= threshold <= 255:
            raise ValueError(f"threshold must be in [1, 255] (uint8 counters), got {threshold}")
        if not 0 < fp_rate < 1:
            raise ValueError(f"fp_rate must be in (0, 1), got {fp_rate}")
        self.threshold = int(threshold)
        self.capacity = int(capacity)
        self.fp_rate = float(fp_rate)
        self.depth = int(depth)
        self.seed = int(seed)
        self.decay_every = int(decay_every)
        self.width = self.width_for(self.capacity, self.fp_rate, self.depth)
        self.counters = np.zeros((self.depth, self.width), np.uint8)
        self.seeds = np.array([K.mix64(np.uint64(self.seed * 1000 + d + 1)) for d in range(self.depth)],
                              np.uint64)
        self.increments = 0
        self._lock = threading.Lock()

    @staticmethod
    def width_for(capacity: int, fp_rate: float, depth: int) -> int:
        """Counters per row so that ``(capacity / width) ** depth <= fp_rate``."""
        return max(64, math.ceil(capacity / fp_rate ** (1.0 / depth)))

    def admit(self, ids: np.ndarray) -> np.ndarray:
        """Count each occurrence in ``ids``; True where the id's estimate has reached the threshold."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        out = np.empty(ids.shape[0], np.bool_)
        with self._lock:
            K.cms_admit(ids, self.counters, self.seeds, self.threshold, out)
            self.increments += int(ids.shape[0])
            if self.decay_every and self.increments >= self.decay_every:
                self.counters >>= 1
                self.increments = 0
        return out

    def estimate(self, ids: np.ndarray) -> np.ndarray:
        """Current count estimates (no counting)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        h = np.empty((self.depth, ids.shape[0]), np.int64)
        u = ids.view(np.uint64)
        for d in range(self.depth):
            x = _mix64_np(u ^ self.seeds[d])
            h[d] = ((x >> np.uint64(32)) * np.uint64(self.width)) >> np.uint64(32)
        with self._lock:
            return np.min(self.counters[np.arange(self.depth)[:, None], h], axis=0)

    @property
    def nbytes(self) -> int:
        return int(self.counters.nbytes)

    def state(self) -> dict[str, np.ndarray]:
        with self._lock:
            return {"kind": np.array(self.kind), "counters": self.counters.copy(),
                    "params": np.array([self.threshold, self.capacity, self.depth, self.seed,
                                        self.decay_every, self.increments], np.int64),
                    "fp_rate": np.array(self.fp_rate)}

    @classmethod
    def from_state(cls, st: dict[str, np.ndarray]) -> CountMinFilter:
        threshold, capacity, depth, seed, decay_every, increments = (int(x) for x in st["params"])
        f = cls(threshold, capacity, float(st["fp_rate"]), depth, seed, decay_every)
        if st["counters"].shape != f.counters.shape:
            raise ValueError("count-min state does not match its parameters")
        f.counters[:] = st["counters"]
        f.increments = increments
        return f


class ProbabilisticFilter:
    kind = "probabilistic"

    def __init__(self, threshold: int, seed: int = 7) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        self.threshold = int(threshold)
        self.seed = int(seed)
        self.counter = 0
        self._useed = np.uint64(K.mix64(np.uint64(self.seed)))
        self._lock = threading.Lock()

    def admit(self, ids: np.ndarray) -> np.ndarray:
        """True for each occurrence admitted (probability ``1 / threshold`` each)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        out = np.empty(ids.shape[0], np.bool_)
        with self._lock:
            self.counter = int(K.prob_admit(ids, self._useed, self.counter, 1.0 / self.threshold, out))
        return out

    @property
    def nbytes(self) -> int:
        return 0

    def state(self) -> dict[str, np.ndarray]:
        with self._lock:
            return {"kind": np.array(self.kind),
                    "params": np.array([self.threshold, self.seed, self.counter], np.int64)}

    @classmethod
    def from_state(cls, st: dict[str, np.ndarray]) -> ProbabilisticFilter:
        threshold, seed, counter = (int(x) for x in st["params"])
        f = cls(threshold, seed)
        f.counter = counter
        return f


Filter = CountMinFilter | ProbabilisticFilter


def _mix64_np(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer over a uint64 array (same function as the kernels' ``mix64``)."""
    with np.errstate(over="ignore"):
        z = x + K._GOLD
        z = (z ^ (z >> np.uint64(30))) * K._MIX1
        z = (z ^ (z >> np.uint64(27))) * K._MIX2
        return z ^ (z >> np.uint64(31))


def make_filter(slot_cfg, seed: int, capacity_share: float = 1.0) -> Filter | None:
    """The filter a slot's ``schemas.spec.EmbeddingSettings`` ask for, or None for
    ``filter_threshold == 1`` (admit all)."""
    c = slot_cfg
    if c.filter_threshold <= 1:
        return None
    if c.filter_kind == "probabilistic":
        return ProbabilisticFilter(c.filter_threshold, seed)
    capacity = max(1, math.ceil(c.filter_capacity * capacity_share))
    return CountMinFilter(c.filter_threshold, capacity, c.filter_fp_rate, c.filter_depth, seed,
                          c.filter_decay_every)


def filter_from_state(st: dict[str, np.ndarray]) -> Filter:
    kind = str(st["kind"])
    if kind == CountMinFilter.kind:
        return CountMinFilter.from_state(st)
    if kind == ProbabilisticFilter.kind:
        return ProbabilisticFilter.from_state(st)
    raise ValueError(f"unknown filter kind {kind!r}")
