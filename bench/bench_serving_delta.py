"""Benchmark: applying a parameter delta to a serving replica's table, vs today's sorted-array RowMap.

Same run, same keys: a table of ``--rows`` (10 M) rows of dim 16, then one delta of ``--touched``
(1 M) touched rows, ``--new-share`` of them ids the table has not seen (new items, new users),
the rest overwrites of existing rows. One thread.

- streamrec ``ServingTable`` through the replica's path: the delta's messages (``serving.delta``,
  split at the configured message size) decoded and applied by ``Replica.apply``.
- ``RowMap``: the serving table before this change (sorted int64 keys + positions into a row
  buffer; an upsert with a new id concatenates and re-sorts every key), copied here verbatim.

The same 1 M rows are also applied as ``--syncs`` (50) deltas of 20 K rows, as a 1 s sync interval
delivers them: the sorted array re-sorts all its keys on every delta that brings a new id.

Times are CPU seconds of the working thread (``time.thread_time``), best of ``--rounds``, so other
load on a shared machine does not distort either side. Goal: the 1 M-row delta in <= 1 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving import delta  # noqa: E402
from serving.replica import Replica  # noqa: E402
from streamrec.config import load_config  # noqa: E402

DIM = 16


class RowMap:
    """int64 id -> float32 row; sorted keys + positions into a growing buffer (the old serving table)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.keys = np.empty(0, dtype=np.int64)
        self.pos = np.empty(0, dtype=np.int64)
        self.buf = np.zeros((1024, dim), dtype=np.float32)
        self.n = 0

    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i = np.searchsorted(self.keys, ids)
        i_c = np.minimum(i, max(len(self.keys) - 1, 0))
        found = (i < len(self.keys)) & (self.keys[i_c] == ids) if len(self.keys) else np.zeros(len(ids), bool)
        return i_c, found

    def upsert(self, ids: np.ndarray, rows: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.float32).reshape(len(ids), self.dim)
        ids, first = np.unique(ids[::-1], return_index=True)  # last write of an id wins
        rows = rows[::-1][first]
        i, found = self._find(ids)
        self.buf[self.pos[i[found]]] = rows[found]
        new = ~found
        k = int(new.sum())
        if k:
            while self.n + k > len(self.buf):
                self.buf = np.concatenate([self.buf, np.zeros_like(self.buf)])
            slots = np.arange(self.n, self.n + k, dtype=np.int64)
            self.buf[slots] = rows[new]
            self.n += k
            keys = np.concatenate([self.keys, ids[new]])
            pos = np.concatenate([self.pos, slots])
            o = np.argsort(keys, kind="stable")
            self.keys, self.pos = keys[o], pos[o]

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        if len(self.keys):
            i, found = self._find(ids)
            out[found] = self.buf[self.pos[i[found]]]
        return out


def timed(fn) -> float:
    t = time.thread_time()
    fn()
    return time.thread_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--touched", type=int, default=1_000_000)
    ap.add_argument("--new-share", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--syncs", type=int, default=50)
    a = ap.parse_args()
    rng = np.random.default_rng(5)
    slot = 6
    base = (np.int64(slot) << 56) | rng.integers(0, 1 << 55, a.rows, dtype=np.int64)
    base = np.unique(base)
    base_rows = rng.normal(size=(len(base), DIM)).astype(np.float32)
    n_new = int(a.touched * a.new_share)
    fresh = (np.int64(slot) << 56) | rng.integers(0, 1 << 55, n_new, dtype=np.int64)
    touched = np.concatenate([rng.choice(base, a.touched - n_new, replace=False), fresh])
    rng.shuffle(touched)
    vals = rng.normal(size=(len(touched), DIM)).astype(np.float32)
    settings = load_config(None, [])
    msgs = delta.encode_rows(2, slot, touched, vals, (settings.serving.delta_message_bytes - 512) // (8 + 4 * DIM))
    print(f"table {len(base):,} rows x dim {DIM}; delta {len(touched):,} rows ({n_new:,} new) in {len(msgs)} "
          f"messages; CPU seconds of one thread, best of {a.rounds}", flush=True)

    ours, old, ours_n, old_n = [], [], [], []
    parts = [msgs[k::a.syncs] for k in range(a.syncs)]  # messages of each small delta
    cut = np.array_split(np.arange(len(touched)), a.syncs)
    for _ in range(a.rounds):
        r = Replica(settings)
        r.ps.push_slot(slot, base, base_rows)  # the table as a snapshot left it
        ours.append(timed(lambda r=r: [r.apply(delta.decode(m)) for m in msgs]))
        probe = touched[:1000]
        assert np.array_equal(r.ps.lookup(slot, probe), vals[:1000])
        del r
        r = Replica(settings)
        r.ps.push_slot(slot, base, base_rows)
        ours_n.append(timed(lambda r=r: [r.apply(delta.decode(m)) for p in parts for m in p]))
        assert np.array_equal(r.ps.lookup(slot, probe), vals[:1000])
        del r
        m = RowMap(DIM)
        m.upsert(base, base_rows)
        old.append(timed(lambda m=m: m.upsert(touched, vals)))
        assert np.array_equal(m.lookup(probe), vals[:1000])
        del m
        m = RowMap(DIM)
        m.upsert(base, base_rows)
        old_n.append(timed(lambda m=m: [m.upsert(touched[c], vals[c]) for c in cut]))
        assert np.array_equal(m.lookup(probe), vals[:1000])
        del m
    t_ours, t_old = min(ours), min(old)
    print(f"ServingTable via Replica.apply: {t_ours:.3f} s ({len(touched) / t_ours / 1e6:.2f} M rows/s)")
    print(f"RowMap.upsert (today's path):   {t_old:.3f} s ({len(touched) / t_old / 1e6:.2f} M rows/s)")
    print(f"speed-up vs RowMap: {t_old / t_ours:.2f}x; goal <= 1 s: {'met' if t_ours <= 1.0 else 'NOT met'}")
    tn, on = min(ours_n), min(old_n)
    print(f"as {a.syncs} deltas of {len(touched) // a.syncs:,} rows: ServingTable {tn:.3f} s, RowMap {on:.3f} s "
          f"({on / tn:.1f}x)")


if __name__ == "__main__":
    main()
