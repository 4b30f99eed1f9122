"""Compiled (numba) kernels of the serving table: upsert and delete over the trainer's cuckoo index.

The index (8-way buckets, two hashes, random-walk kick-out, rehash on growth) and its probe are
the training table's (``trainer.embedding._kernels``), so a key is found by exact comparison and
distinct ids never share a row. What differs is the arena: embeddings only (no optimizer state,
no timestamps), and a free list of its own (``nxt``) for rows freed by TTL deletions.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from trainer.embedding._kernels import M_FREE, M_HIGH, M_LIVE, MAX_KICKS, OK, PF, _prefetch_key, claim_row, find_slot


@njit(cache=True, nogil=True)
def upsert(ids, vals, start, keys, rows, nb, seed, emb, nxt, meta, max_live):
    """Overwrite (or insert) the row of each of ``ids[start:]`` with ``vals``; a repeated id: the last wins.

    Returns (next index, status): NEED_INDEX / NEED_ARENA ask the caller to grow and call again
    from that index (rows before it are written)."""
    dim = emb.shape[1]
    cap = emb.shape[0]
    n = ids.shape[0]
    path = np.empty(MAX_KICKS, np.int64)
    for i in range(start, n):
        if i + PF < n:
            _prefetch_key(keys, rows, nb, seed, ids[i + PF])
        key = ids[i]
        s = find_slot(keys, rows, nb, seed, key)
        if s >= 0:
            r = np.int64(rows[s])
        else:
            r = claim_row(keys, rows, nb, seed, key, meta, cap, max_live, path)
            if r < 0:
                return i, -r
            if r == meta[M_FREE]:
                meta[M_FREE] = nxt[r]
            else:
                meta[M_HIGH] += 1
            meta[M_LIVE] += 1
        for j in range(dim):
            emb[r, j] = vals[i, j]
    return n, OK


@njit(cache=True, nogil=True)
def delete(ids, keys, rows, nb, seed, nxt, meta):
    """Remove ids (absent ones ignored); their rows go on the free list. Returns rows freed."""
    freed = 0
    n = ids.shape[0]
    for i in range(n):
        if i + PF < n:
            _prefetch_key(keys, rows, nb, seed, ids[i + PF])
        s = find_slot(keys, rows, nb, seed, ids[i])
        if s >= 0:
            r = np.int64(rows[s])
            rows[s] = -1
            nxt[r] = meta[M_FREE]
            meta[M_FREE] = r
            meta[M_LIVE] -= 1
            freed += 1
    return freed
