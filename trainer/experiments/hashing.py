"""Fixed-size hashed tables, simulated on the collisionless one, sized to a target collision rate.

A hashed table of ``M`` rows maps an id to row ``h(id) mod M``: distinct ids that land on the same
row share its embedding. Rewriting each FID of a slot to ``slot | h(fid) mod M`` before training
gives exactly that on the collisionless table (which then holds at most ``M`` rows of the slot),
so both arms train the same model with the same code; only the ids differ.

Collision rate (how it is measured here): the share of a slot's distinct ids that share their row
with at least one other id. The paper gives rates, not its definition; with this one a rate ``c``
needs about ``n / -ln(1 - c)`` rows for ``n`` ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.fid import HASH_BITS

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def buckets_of(fids: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Row of each FID in a hashed table of ``size`` rows (splitmix64 of the FID, seeded)."""
    with np.errstate(over="ignore"):
        x = np.asarray(fids, dtype=np.int64).view(np.uint64) + _GOLD * np.uint64(seed + 1)
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        x ^= x >> np.uint64(31)
    return (x % np.uint64(size)).astype(np.int64)


def collision_rate(ids: np.ndarray, size: int, seed: int) -> float:
    """Share of the distinct ``ids`` that share their row with another id."""
    ids = np.unique(ids)
    if ids.size == 0:
        return 0.0
    _, inverse, counts = np.unique(buckets_of(ids, size, seed), return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).mean())


def size_for(ids: np.ndarray, target: float, seed: int, candidates: int = 400) -> int:
    """The table size whose measured collision rate (with this seed) is closest to ``target``.

    Sizes around the expected one (``n / -ln(1 - target)``, from half to twice it) are tried; the
    measured rate of a given hash varies around its expectation, so the closest is picked."""
    n = len(np.unique(ids))
    expected = n / -math.log(1.0 - target)
    sizes = np.unique(np.geomspace(max(2.0, expected / 2), expected * 2, candidates).astype(np.int64))
    rates = np.array([collision_rate(ids, int(m), seed) for m in sizes])
    best = np.flatnonzero(np.abs(rates - target) == np.abs(rates - target).min())
    return int(sizes[best[-1]])  # the largest among equally close ones


@dataclass(frozen=True)
class HashedSlot:
    slot: str
    number: int
    size: int
    seed: int
    ids: int  # distinct ids of the slot in the data
    target: float
    rate: float  # measured

    @classmethod
    def fit(cls, slot: str, number: int, ids: np.ndarray, target: float, seed: int) -> HashedSlot:
        size = size_for(ids, target, seed)
        return cls(slot, number, size, seed, len(np.unique(ids)), target, collision_rate(ids, size, seed))

    def mapping(self, ids: np.ndarray) -> dict[int, int]:
        """FID -> the FID of its row in the hashed table (same slot number, the row below)."""
        rows = buckets_of(ids, self.size, self.seed)
        return dict(zip(ids.tolist(), ((self.number << HASH_BITS) | rows).tolist(), strict=True))


def hashed_records(records: list[dict[str, Any]], maps: dict[str, dict[int, int]]) -> list[dict[str, Any]]:
    """The records with each hashed slot's FIDs replaced by their rows' FIDs (crosses left as they are)."""
    out = []
    for r in records:
        sparse = dict(r["sparse"])
        for slot, m in maps.items():
            if slot in sparse:
                sparse[slot] = [m[f] for f in sparse[slot]]
        out.append({**r, "sparse": sparse})
    return out
