"""The arithmetic of sharding (pure numpy): owners, per-owner requests and their way back."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.fid import fid
from trainer.distributed import routing
from trainer.sources import own_partitions


def test_owner_is_deterministic_in_range_and_balanced():
    fids = np.array([fid(s, v) for s in (1, 6, 7) for v in range(20_000)], np.int64)
    for world in (2, 3, 4, 8):
        own = routing.owner_of(fids, world)
        assert own.min() >= 0 and own.max() == world - 1
        assert np.array_equal(own, routing.owner_of(fids.copy(), world))
        per = np.bincount(own, minlength=world)
        assert routing.balance(per.tolist()) < 0.05, (world, per)
        for s in (1, 6, 7):  # every slot is spread over every rank, not one slot per rank
            assert len(set(own[(fids >> 48) == s].tolist())) == world
    assert not routing.owner_of(fids, 1).any()


def test_rank_sharding_does_not_starve_lock_shards_inside_a_rank():
    """The store splits a slot into lock shards by another hash: a rank's FIDs still fill all of them."""
    from trainer.embedding import _kernels as K

    fids = np.array([fid(6, v) for v in range(8000)], np.int64)
    mine = fids[routing.owner_of(fids, 2) == 0]
    with np.errstate(over="ignore"):
        lock_shard = ((mine.view(np.uint64) * K._GOLD) >> np.uint64(40)) % np.uint64(2)
    assert 0.4 < lock_shard.mean() < 0.6


def test_requests_round_trip_through_owners():
    rng = np.random.default_rng(3)
    bags = [np.array([fid(1, v) for v in rng.integers(0, 50, 300)], np.int64),
            np.zeros(0, np.int64),
            np.array([fid(7, v) for v in rng.integers(0, 9, 40)], np.int64)]
    world = 3
    req = routing.requests(bags, world)
    assert req.counts.sum() == len(req.table) == sum(len(np.unique(b)) for b in bags)
    # send order is grouped by owner, and every row goes to the owner of its FID
    owners = routing.owner_of(req.table[:, 0], world)
    assert np.array_equal(owners, np.sort(owners))
    assert np.array_equal(np.bincount(owners, minlength=world), req.counts)
    # occurrences and slot indexes travel with each FID
    for f, n, s in req.table:
        assert (bags[s] == f).sum() == n
    # an owner answers with a row per FID (here: the FID itself in every column); back in slot order
    answer = np.repeat(req.table[:, :1].astype(np.float64), 4, axis=1)
    per_slot = routing.split_slots(routing.unsort(answer, req.order), req.uniq, [4, 4, 2])
    for s, b in enumerate(bags):
        assert per_slot[s].shape == (len(req.uniq[s]), [4, 4, 2][s])
        assert np.array_equal(per_slot[s][req.inv[s], 0], b.astype(np.float64))


def test_by_slot_groups_positions():
    groups = routing.by_slot(np.array([2, 0, 2, 1, 0], np.int64))
    assert [(s, p.tolist()) for s, p in groups] == [(0, [1, 4]), (1, [3]), (2, [0, 2])]
    assert routing.by_slot(np.zeros(0, np.int64)) == []


@pytest.mark.parametrize("parts,world", [(4, 2), (3, 2), (6, 4), (1, 2)])
def test_partitions_are_read_by_exactly_one_rank(parts, world):
    got = [own_partitions(list(range(parts)), r, world) for r in range(world)]
    flat = sorted(p for g in got for p in g)
    assert flat == list(range(parts))
