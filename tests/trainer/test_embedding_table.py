"""CuckooTable against a dict model, plus the semantics the trainer relies on."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.embedding import _kernels as K
from trainer.embedding.table import CuckooTable

DIM = 4
LR, ACC0, EPS = 0.05, 0.1, 1e-8


def check_invariants(t: CuckooTable) -> None:
    """Distinct ids own distinct rows; live + free rows account for the whole high-water mark."""
    ids, rows = K.collect(t._keys, t._rows, t._tc, -1, False, False, len(t))
    assert len(ids) == len(t)
    assert len(np.unique(ids)) == len(ids), "an id is in the index twice"
    assert len(np.unique(rows)) == len(rows), "two ids share a row"
    high = int(t._meta[K.M_HIGH])
    assert rows.max(initial=-1) < high
    free, r = 0, int(t._meta[K.M_FREE])
    while r >= 0:
        assert r not in set(rows.tolist())
        free += 1
        r = int(t._tc[r, 1]) - 1
    assert free + len(t) == high
    # every live id is found in one of its two buckets
    sel = np.empty(len(ids), np.int64)
    assert K.resolve(ids, t._keys, t._rows, t._nb, t._useed, sel) == len(ids)
    assert np.array_equal(sel, rows)


def init_rows(t: CuckooTable, ids) -> np.ndarray:
    out = np.empty((len(ids), t.dim), np.float32)
    K.init_values(np.asarray(ids, np.int64), t._useed, t.init_std, out)
    return out


class Model:
    """The reference: a dict id -> [emb, acc, last_update, count] with the same Adagrad arithmetic."""

    def __init__(self, table: CuckooTable) -> None:
        self.t = table
        self.rows: dict[int, list] = {}

    def insert(self, ids, now):
        for key in ids:
            if key not in self.rows:
                self.rows[key] = [init_rows(self.t, [key])[0], np.full(DIM, ACC0, np.float32), now, 0]

    def apply(self, ids, grads, now):
        summed: dict[int, np.ndarray] = {}
        counts: dict[int, int] = {}
        for key, g in zip(ids, grads, strict=True):
            if key in self.rows:
                summed[key] = summed.get(key, np.zeros(DIM, np.float32)) + g
                counts[key] = counts.get(key, 0) + 1
        for key, g in summed.items():
            emb, acc, _, cnt = self.rows[key]
            acc = (acc + g * g).astype(np.float32)
            emb = (emb - LR * g / (np.sqrt(acc) + EPS)).astype(np.float32)
            self.rows[key] = [emb, acc, now, cnt + counts[key]]
        return sum(counts.values())

    def delete(self, ids):
        n = 0
        for key in set(ids):
            n += self.rows.pop(key, None) is not None
        return n

    def evict(self, now, ttl):
        dead = [k for k, v in self.rows.items() if now - v[2] > ttl]
        for k in dead:
            del self.rows[k]
        return len(dead)


def assert_same(t: CuckooTable, m: Model) -> None:
    check_invariants(t)
    assert len(t) == len(m.rows)
    ex = t.export()
    got = {int(k): i for i, k in enumerate(ex["ids"])}
    assert set(got) == set(m.rows)
    for key, (emb, acc, ts, cnt) in m.rows.items():
        i = got[key]
        np.testing.assert_allclose(ex["emb"][i], emb, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ex["state"][i], acc, rtol=1e-5)
        assert ex["ts"][i] == ts and ex["count"][i] == cnt


keys_st = st.one_of(
    st.integers(-3, 40),  # a small pool so operations meet the same ids (0 and -1 included)
    st.integers(-(2**63), 2**63 - 1),
)
batch_st = st.lists(keys_st, min_size=0, max_size=40)
op_st = st.one_of(
    st.tuples(st.just("insert"), batch_st),
    st.tuples(st.just("apply"), batch_st),
    st.tuples(st.just("delete"), batch_st),
    st.tuples(st.just("evict"), st.integers(0, 6)),
    st.tuples(st.just("saveload"), st.integers(0, 200)),
    st.tuples(st.just("lookup"), batch_st),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op_st, min_size=1, max_size=25), max_load=st.sampled_from([0.6, 0.96, 0.99]))
def test_random_operations_match_dict_model(ops, max_load, tmp_path):
    t = CuckooTable(DIM, capacity=16, init_std=0.1, seed=3, learning_rate=LR, initial_accumulator=ACC0,
                    adagrad_eps=EPS, max_load=max_load, arena_growth=0.125)
    m = Model(t)
    for now, (op, arg) in enumerate(ops, start=1):
        if op == "insert":
            got = t.lookup(np.array(arg, np.int64), insert=True, now=now)
            m.insert(arg, now)
            want = np.array([m.rows[k][0] for k in arg], np.float32).reshape(-1, DIM)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        elif op == "apply":
            rng = np.random.default_rng(len(arg) + now)
            grads = rng.standard_normal((len(arg), DIM)).astype(np.float32)
            assert t.apply_gradients(np.array(arg, np.int64), grads, now=now) == m.apply(arg, grads, now)
        elif op == "delete":
            assert t.delete(np.array(arg, np.int64)) == m.delete(arg)
        elif op == "evict":
            assert t.evict_expired(now, arg) == (m.evict(now, arg) if arg > 0 else 0)
        elif op == "saveload":
            path = tmp_path / "t.npz"
            t.save(path)
            t = CuckooTable.load(path, capacity=arg)
            m.t = t
        elif op == "lookup":
            ids = np.array(arg, np.int64)
            got, found = t.lookup_found(ids, init_missing=True)
            for i, key in enumerate(arg):
                assert found[i] == (key in m.rows)
                want = m.rows[key][0] if key in m.rows else init_rows(t, [key])[0]
                np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-7)
            assert len(t) == len(m.rows)  # lookups never insert
    assert_same(t, m)


def test_growth_to_many_keys_keeps_every_row_distinct():
    rng = np.random.default_rng(1)
    ids = np.unique(rng.integers(-(2**63), 2**63 - 1, size=60_000, dtype=np.int64))
    t = CuckooTable(8, capacity=16, max_load=0.99, arena_growth=0.05)
    t.insert(ids[:30_000], now=1)
    t.insert(ids, now=2)  # half present already
    assert len(t) == len(ids)
    check_invariants(t)
    rows, found = t.lookup_found(ids, init_missing=False)
    assert found.all()
    np.testing.assert_array_equal(rows, init_rows(t, ids))
    # the index load stays high: at most one growth step (1.5x) below max_load
    assert 0.99 / 1.5 - 0.01 < len(t) / t.index_slots <= 0.99


def test_deleted_rows_are_reused_and_memory_is_near_payload():
    t = CuckooTable(16, capacity=1000)
    t.insert(np.arange(1000), now=1)
    cap = t.arena_capacity
    t.delete(np.arange(0, 1000, 2))
    t.insert(np.arange(5000, 5500), now=2)
    assert t.arena_capacity == cap and len(t) == 1000
    check_invariants(t)
    payload = 8 + 2 * 16 * 4
    assert t.nbytes / len(t) < 1.5 * payload


def test_duplicate_ids_in_a_batch_sum_their_gradients():
    a = CuckooTable(DIM, seed=5)
    b = CuckooTable(DIM, seed=5)
    ids = np.array([7, 9, 7, 7], np.int64)
    a.insert(ids)
    b.insert(ids)
    g = np.arange(16, dtype=np.float32).reshape(4, DIM) / 10
    assert a.apply_gradients(ids, g, now=3) == 4
    b.apply_gradients(np.array([7, 9]), np.stack([g[0] + g[2] + g[3], g[1]]), now=3)
    np.testing.assert_allclose(a.lookup([7, 9]), b.lookup([7, 9]), rtol=1e-6)
    counts = dict(zip(a.export()["ids"].tolist(), a.export()["count"].tolist(), strict=True))
    assert counts == {7: 3, 9: 1}


def test_missing_ids_are_skipped_by_gradients_and_not_inserted_by_lookup():
    t = CuckooTable(DIM)
    assert t.apply_gradients(np.array([1, 2]), np.ones((2, DIM), np.float32), now=1) == 0
    assert len(t) == 0
    z = t.lookup(np.array([1, 2]), init_missing=False)
    assert not z.any() and len(t) == 0
    init = t.lookup(np.array([1, 2]))
    assert init.any() and len(t) == 0
    np.testing.assert_array_equal(t.lookup(np.array([1, 2]), insert=True), init)


def test_initializer_is_deterministic_and_has_the_configured_std():
    ids = np.arange(20_000)
    a = CuckooTable(16, init_std=0.05, seed=1).lookup(ids, insert=True)
    b = CuckooTable(16, init_std=0.05, seed=1).lookup(ids[::-1], insert=True)[::-1]
    np.testing.assert_array_equal(a, b)
    assert abs(a.std() - 0.05) < 0.002 and abs(a.mean()) < 0.002
    c = CuckooTable(16, init_std=0.05, seed=2).lookup(ids, insert=True)
    assert not np.array_equal(a, c)
    assert not CuckooTable(16, init_std=0.0).lookup(ids, insert=True).any()


def test_ftrl_matches_reference_formula():
    alpha, beta, l1, l2 = 0.1, 1.0, 0.001, 0.01
    t = CuckooTable(2, optimizer="ftrl", init_std=0.1, learning_rate=alpha, ftrl_beta=beta,
                    ftrl_l1=l1, ftrl_l2=l2)
    ids = np.array([11, 12])
    w = t.lookup(ids, insert=True).astype(np.float64)
    z = -w * (beta / alpha + l2) - np.sign(w) * l1
    n = np.zeros_like(w)
    # the initial weight is what FTRL's closed form gives for the initial z
    np.testing.assert_allclose(-(z - np.sign(z) * l1) / (beta / alpha + l2), w, rtol=1e-5)
    rng = np.random.default_rng(0)
    for step in range(5):
        g = rng.standard_normal(w.shape).astype(np.float32) * 0.3
        t.apply_gradients(ids, g, now=step)
        g = g.astype(np.float64)
        n1 = n + g * g
        z = z + g - (np.sqrt(n1) - np.sqrt(n)) / alpha * w
        n = n1
        w = np.where(np.abs(z) <= l1, 0.0, -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / alpha + l2))
        np.testing.assert_allclose(t.lookup(ids), w, rtol=1e-4, atol=1e-7)


def test_expiry_is_exact_by_timestamp():
    t = CuckooTable(DIM)
    t.insert(np.array([1, 2, 3]), now=100)
    t.apply_gradients(np.array([2]), np.ones((1, DIM), np.float32), now=150)
    t.insert(np.array([4]), now=152)
    assert t.clock == 152
    assert t.evict_expired(now=200, ttl=100) == 0  # 200 - 100 == ttl: not longer than ttl
    assert t.evict_expired(now=201, ttl=100) == 2  # ids 1 and 3 (last update 100)
    assert sorted(t.items()[0].tolist()) == [2, 4]
    assert t.evict_expired(ttl=0) == 0  # ttl 0 = never
    assert t.evict_expired(ttl=1) == 1  # now defaults to the clock (152): id 2 (150) goes
    assert t.items()[0].tolist() == [4]


def test_drain_touched_returns_updated_rows_once():
    t = CuckooTable(DIM)
    t.insert(np.arange(10), now=1)
    assert len(t.drain_touched()[0]) == 0  # inserting is not an update
    t.apply_gradients(np.array([3, 5, 3]), np.ones((3, DIM), np.float32), now=2)
    ids, rows = t.drain_touched()
    assert sorted(ids.tolist()) == [3, 5]
    np.testing.assert_array_equal(rows, t.lookup(ids))
    assert len(t.drain_touched()[0]) == 0
    t.apply_gradients(np.array([7]), np.ones((1, DIM), np.float32), now=3)
    t.delete(np.array([7]))
    assert len(t.drain_touched()[0]) == 0  # deleted rows are not reported


def test_save_is_atomic_versioned_skips_expired_and_loads_into_any_capacity(tmp_path):
    t = CuckooTable(DIM, optimizer="ftrl", seed=9)
    t.insert(np.arange(100), now=10)
    t.apply_gradients(np.arange(50), np.ones((50, DIM), np.float32), now=50)
    path = tmp_path / "slot.npz"
    assert t.save(path, now=100, ttl=60) == 50  # rows last updated at 10 are expired at 100
    assert [p.name for p in tmp_path.iterdir()] == ["slot.npz"]  # no temp file left
    for cap in (None, 16, 100_000):
        u = CuckooTable.load(path, capacity=cap)
        assert len(u) == 50 and u.optimizer == "ftrl" and u.clock == 50
        np.testing.assert_array_equal(u.lookup(np.arange(50)), t.lookup(np.arange(50)))
        check_invariants(u)
    assert CuckooTable.load(path).drain_touched()[0].shape == (50,)  # touched marks survive
    header_path = tmp_path / "bad.npz"
    np.savez(header_path, header=np.frombuffer(b'{"format": "streamrec.cuckoo_table", "version": 99}',
                                               np.uint8))
    with pytest.raises(ValueError, match="version 99"):
        CuckooTable.load(header_path)


def test_concurrent_workers_lose_no_updates():
    t = CuckooTable(DIM, capacity=16)
    ids = np.arange(2000)
    per_thread = 30

    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(per_thread):
            batch = rng.choice(ids, 256)
            t.lookup(batch, insert=True, now=1)
            t.apply_gradients(batch, np.full((256, DIM), 1e-3, np.float32), now=2)
            t.lookup(batch)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    check_invariants(t)
    assert int(t.export()["count"].sum()) == 4 * per_thread * 256


def test_bad_arguments_are_errors():
    t = CuckooTable(DIM)
    with pytest.raises(ValueError, match="now"):
        t.insert(np.array([1]), now=-1)
    with pytest.raises(ValueError, match="grads shape"):
        t.apply_gradients(np.array([1, 2]), np.ones((2, DIM + 1), np.float32))
    with pytest.raises(ValueError, match="optimizer"):
        CuckooTable(DIM, optimizer="sgd")
