"""Which rank owns a FID, and how a batch's FIDs are laid out for the exchange with their owners.

Pure numpy, no torch.distributed: the arithmetic of sharding, tested on its own.

Ownership is a hash of the whole FID (slot bits included) modulo the world size, so every slot's
table is spread over every rank (each rank holds a shard of each slot) and a hot slot never lands
on one rank. The multiplier differs from the one ``EmbeddingStore`` uses to split a slot into
lock shards inside a rank; with the same one, rank r would only ever fill the lock shards that are
congruent to r.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MIX = np.uint64(0xD6E8FEB86659FD93)  # an odd 64-bit constant (splitmix/murmur family), not _GOLD


def owner_of(fids: np.ndarray, world: int) -> np.ndarray:
    """int64[n] rank that owns each FID."""
    if world == 1:
        return np.zeros(len(fids), np.int64)
    with np.errstate(over="ignore"):
        h = (np.ascontiguousarray(fids, np.int64).view(np.uint64) * _MIX) >> np.uint64(29)
    return (h % np.uint64(world)).astype(np.int64)


@dataclass
class Requests:
    """A rank's unique FIDs of one step, all slots together, ordered by owner for the exchange.

    ``table`` rows are (fid, occurrences in the batch, slot index), sent to the owners;
    ``order`` maps the send order back to ``uniq`` order; ``counts[r]`` rows go to rank r.
    """

    uniq: list[np.ndarray]  # per slot: unique FIDs (np.unique order)
    inv: list[np.ndarray]  # per slot: occurrence -> index into uniq
    table: np.ndarray  # int64[k, 3] in send (owner) order
    order: np.ndarray  # int64[k]: send position -> position in the concatenation of uniq
    counts: np.ndarray  # int64[world]


def requests(bags: list[np.ndarray], world: int) -> Requests:
    """Group one step's FID occurrences (a list per slot) into per-owner requests."""
    uniq, inv, cnt, sidx = [], [], [], []
    for s, fids in enumerate(bags):
        u, i, c = np.unique(fids, return_inverse=True, return_counts=True)
        uniq.append(u)
        inv.append(i.reshape(-1))
        cnt.append(c)
        sidx.append(np.full(len(u), s, np.int64))
    ids = np.concatenate(uniq) if uniq else np.zeros(0, np.int64)
    owners = owner_of(ids, world)
    order = np.argsort(owners, kind="stable")
    table = np.stack([ids, np.concatenate(cnt) if cnt else ids, np.concatenate(sidx) if sidx else ids], 1)[order]
    counts = np.bincount(owners, minlength=world).astype(np.int64)
    return Requests(uniq, inv, np.ascontiguousarray(table, np.int64), order, counts)


def unsort(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows received in send order -> rows in ``uniq`` concatenation order."""
    out = np.empty_like(rows)
    out[order] = rows
    return out


def split_slots(rows: np.ndarray, uniq: list[np.ndarray], dims: list[int]) -> list[np.ndarray]:
    """[k, max dim] rows in concatenation order -> one [len(uniq_s), dim_s] array per slot."""
    out, start = [], 0
    for u, d in zip(uniq, dims, strict=True):
        out.append(np.ascontiguousarray(rows[start:start + len(u), :d]))
        start += len(u)
    return out


def by_slot(slot_idx: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(slot index, positions) of each slot present in a received request table, in slot order."""
    if not len(slot_idx):
        return []
    order = np.argsort(slot_idx, kind="stable")
    keys, starts = np.unique(slot_idx[order], return_index=True)
    ends = np.r_[starts[1:], len(order)]
    return [(int(k), order[a:b]) for k, a, b in zip(keys, starts, ends, strict=True)]


def balance(rows_per_rank: list[int]) -> float:
    """Spread of rows over ranks: (max - min) / mean (0 = perfectly even)."""
    a = np.asarray(rows_per_rank, np.float64)
    return float((a.max() - a.min()) / a.mean()) if a.size and a.mean() > 0 else 0.0
