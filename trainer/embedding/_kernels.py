"""Compiled (numba) kernels of the cuckoo table: hashing, probe, insert with kick-out, optimizers, sweeps.

Layout (see ``table.py`` for the why): a bucketed cuckoo *index* maps keys to row numbers of a
dense row *arena* (struct of arrays). Index: ``keys int64[nslots]`` + ``rows int32[nslots]``
(-1 = empty), ``nslots = 8 * nb`` (8-way buckets: one bucket's keys fill exactly one 64-byte
cache line, its row numbers half of one; ``nb`` any count >= 2, buckets chosen by fastrange).
Each key has two candidate buckets from one 64-bit mix of (key, seed). Arena: ``emb float32[cap, dim]``,
``st float32[cap, k*dim]`` (Adagrad: accumulator; FTRL: z then n), ``tc uint32[cap, 2]``
(last-update event second; update count in the low 31 bits + "touched since last drain" in bit 31;
for a free row, column 1 is the free-list link). ``meta int64[5]``: live rows, arena high-water
mark, free-list head (-1 none), clock (largest event time seen), kick RNG state.

Batches are processed in passes with software prefetch (``PF`` keys ahead) so the cache misses of
many keys overlap: that, and not per-key cleverness, is where batching beats a per-key map.
Every kernel takes plain arrays so the Python side owns growth (it re-calls a kernel from the key
it stopped at after growing); no kernel allocates table state.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

WAYS = 8
EMPTY = -1
MAX_KICKS = 256
PF = 12  # prefetch distance in keys
# status codes of the insert kernels
OK = 0
NEED_INDEX = 1
NEED_ARENA = 2
# meta slots
M_LIVE, M_HIGH, M_FREE, M_CLOCK, M_RNG = 0, 1, 2, 3, 4
OPT_ADAGRAD = 0
OPT_FTRL = 1
TOUCHED = np.uint32(0x80000000)
CNT_MASK = np.uint32(0x7FFFFFFF)

_U30 = np.uint64(30)
_U27 = np.uint64(27)
_U31 = np.uint64(31)
_U32 = np.uint64(32)
_U16 = np.uint64(16)
_U48 = np.uint64(48)
_U11 = np.uint64(11)
_M16 = np.uint64(0xFFFF)
_M32 = np.uint64(0xFFFFFFFF)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_INIT_SALT = np.uint64(0x5851F42D4C957F2D)
# Irwin-Hall(4) over 16-bit uniforms: mean and std of the sum
_IH_MEAN = 4 * 32767.5
_IH_STD = 2.0 * 65536.0 / np.sqrt(12.0)


@intrinsic
def prefetch(typingctx, arr, idx):
    """Prefetch the cache line of ``arr[idx]`` (1-D) or ``arr[idx, 0]`` (2-D); no-op semantics."""
    sig = types.void(arr, types.intp)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        indices = [args[1]] + [zero] * (aryty.ndim - 1)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, indices, wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def mix64(x):
    """splitmix64 finalizer: a cheap bijective 64-bit mix (uint64 in, uint64 out)."""
    z = x + _GOLD
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return z ^ (z >> _U31)


@njit(cache=True, inline="always")
def _buckets(key, seed, nb):
    """Two distinct candidate buckets in [0, nb) from the two 32-bit halves of one mix (fastrange,
    so ``nb`` need not be a power of two and the index can grow by less than 2x)."""
    h = mix64(np.uint64(key) ^ seed)
    b1 = np.int64(((h & _M32) * nb) >> _U32)
    b2 = np.int64(((h >> _U32) * nb) >> _U32)
    if b2 == b1:
        b2 = b1 + 1 if b1 + 1 < np.int64(nb) else 0
    return b1, b2


@njit(cache=True, inline="always")
def _prefetch_key(keys, rows, nb, seed, key):
    b1, b2 = _buckets(key, seed, nb)
    prefetch(keys, b1 * WAYS)
    prefetch(rows, b1 * WAYS)
    prefetch(keys, b2 * WAYS)
    prefetch(rows, b2 * WAYS)


@njit(cache=True, inline="always")
def find_slot(keys, rows, nb, seed, key):
    b1, b2 = _buckets(key, seed, nb)
    base = b1 * WAYS
    for j in range(WAYS):
        s = base + j
        if keys[s] == key and rows[s] >= 0:
            return s
    base = b2 * WAYS
    for j in range(WAYS):
        s = base + j
        if keys[s] == key and rows[s] >= 0:
            return s
    return -1


@njit(cache=True, inline="always")
def _xorshift(meta):
    x = np.uint64(meta[M_RNG])
    x ^= x << np.uint64(13)
    x ^= x >> np.uint64(7)
    x ^= x << np.uint64(17)
    meta[M_RNG] = np.int64(x)
    return x


@njit(cache=True)
def index_put(keys, rows, nb, seed, key, row, meta, path):
    """Place (key, row) (key known absent) by random-walk kick-out; undo and return False on failure."""
    b1, b2 = _buckets(key, seed, nb)
    base = b1 * WAYS
    for j in range(WAYS):
        if rows[base + j] < 0:
            keys[base + j] = key
            rows[base + j] = row
            return True
    base = b2 * WAYS
    for j in range(WAYS):
        if rows[base + j] < 0:
            keys[base + j] = key
            rows[base + j] = row
            return True
    cur_key = key
    cur_row = row
    b = b1 if (_xorshift(meta) & np.uint64(1)) == 0 else b2
    n = 0
    while n < MAX_KICKS:
        s = b * WAYS + np.int64(_xorshift(meta) & np.uint64(WAYS - 1))
        k2 = keys[s]
        r2 = rows[s]
        keys[s] = cur_key
        rows[s] = cur_row
        cur_key = k2
        cur_row = r2
        path[n] = s
        n += 1
        c1, c2 = _buckets(cur_key, seed, nb)
        alt = c2 if c1 == b else c1
        base = alt * WAYS
        for j in range(WAYS):
            if rows[base + j] < 0:
                keys[base + j] = cur_key
                rows[base + j] = cur_row
                return True
        b = alt
    # undo the walk so the index is exactly as before
    for t in range(n - 1, -1, -1):
        s = path[t]
        k2 = keys[s]
        r2 = rows[s]
        keys[s] = cur_key
        rows[s] = cur_row
        cur_key = k2
        cur_row = r2
    return False


@njit(cache=True, inline="always")
def claim_row(keys, rows, nb, seed, key, meta, cap, max_live, path):
    """Index a key known to be absent on a free row: the free list's head, else the arena's next.

    Returns the row, or ``-NEED_INDEX`` / ``-NEED_ARENA`` (nothing changed) when the index or the
    arena must grow first. The caller then takes the row: ``meta[M_FREE]`` := the head's link
    (the free list's links live in the caller's arrays) if ``row == meta[M_FREE]``, else
    ``meta[M_HIGH] += 1``; and ``meta[M_LIVE] += 1``. Shared with the serving table's kernels."""
    if meta[M_LIVE] >= max_live:
        return -NEED_INDEX
    if meta[M_FREE] >= 0:
        r = meta[M_FREE]
    elif meta[M_HIGH] < cap:
        r = meta[M_HIGH]
    else:
        return -NEED_ARENA
    if not index_put(keys, rows, nb, seed, key, np.int32(r), meta, path):
        return -NEED_INDEX
    return r


@njit(cache=True, inline="always")
def _init_emb(key, seed, init_std, out, i):
    """Deterministic per-(seed, key) initializer: Irwin-Hall(4) ~ normal with std ``init_std``."""
    dim = out.shape[1]
    if init_std == 0.0:
        for j in range(dim):
            out[i, j] = 0.0
        return
    base = mix64(np.uint64(key) ^ seed ^ _INIT_SALT)
    scale = init_std / _IH_STD
    for j in range(dim):
        x = mix64(base + np.uint64(j))
        s = (x & _M16) + ((x >> _U16) & _M16) + ((x >> _U32) & _M16) + (x >> _U48)
        out[i, j] = (np.float64(s) - _IH_MEAN) * scale


@njit(cache=True, nogil=True)
def init_values(ids, seed, init_std, out):
    """The initializer's rows for ``ids`` without touching a table."""
    for i in range(ids.shape[0]):
        _init_emb(ids[i], seed, init_std, out, i)


@njit(cache=True, nogil=True)
def resolve(ids, keys, rows, nb, seed, out_rows):
    """Row number of each id (-1 if absent). Returns the number found."""
    n = ids.shape[0]
    nfound = 0
    for i in range(n):
        if i + PF < n:
            _prefetch_key(keys, rows, nb, seed, ids[i + PF])
        s = find_slot(keys, rows, nb, seed, ids[i])
        if s >= 0:
            out_rows[i] = rows[s]
            nfound += 1
        else:
            out_rows[i] = -1
    return nfound


@njit(cache=True, nogil=True)
def gather(ids, sel, emb, seed, init_missing, init_std, out):
    """``out[i] = emb[sel[i]]``; for ``sel[i] < 0`` the initializer (``init_missing``) or zeros."""
    dim = emb.shape[1]
    n = ids.shape[0]
    for i in range(n):
        if i + PF < n and sel[i + PF] >= 0:
            prefetch(emb, sel[i + PF])
        r = sel[i]
        if r >= 0:
            for j in range(dim):
                out[i, j] = emb[r, j]
        elif init_missing:
            _init_emb(ids[i], seed, init_std, out, i)
        else:
            for j in range(dim):
                out[i, j] = 0.0


@njit(cache=True, nogil=True)
def insert(ids, start, keys, rows, nb, seed, emb, st, tc, meta, max_live, now,
           opt, init_std, init_acc, ftrl_denom0, ftrl_l1, out_rows):
    """Insert-or-init ``ids[start:]``; row numbers (new or existing) go to ``out_rows``.

    Returns (next index, status): status NEED_INDEX / NEED_ARENA asks the caller to grow and call
    again from that index. Existing rows are left as they are (no timestamp refresh).
    """
    dim = emb.shape[1]
    cap = emb.shape[0]
    n = ids.shape[0]
    path = np.empty(MAX_KICKS, np.int64)
    t_now = np.uint32(now)
    for i in range(start, n):
        if i + PF < n:
            _prefetch_key(keys, rows, nb, seed, ids[i + PF])
        key = ids[i]
        s = find_slot(keys, rows, nb, seed, key)
        if s >= 0:
            out_rows[i] = rows[s]
            continue
        r = claim_row(keys, rows, nb, seed, key, meta, cap, max_live, path)
        if r < 0:
            return i, -r
        if r == meta[M_FREE]:
            meta[M_FREE] = np.int64(tc[r, 1]) - 1
        else:
            meta[M_HIGH] += 1
        meta[M_LIVE] += 1
        _init_emb(key, seed, init_std, emb, r)
        if opt == OPT_ADAGRAD:
            for j in range(dim):
                st[r, j] = init_acc
        else:
            for j in range(dim):
                w = np.float64(emb[r, j])
                z = -w * ftrl_denom0
                if w > 0:
                    z -= ftrl_l1
                elif w < 0:
                    z += ftrl_l1
                st[r, j] = z
                st[r, dim + j] = 0.0
        tc[r, 0] = t_now
        tc[r, 1] = 0
        out_rows[i] = r
    return n, OK


@njit(cache=True, nogil=True)
def apply_gradients(ids, grads, keys, rows, nb, seed, emb, st, tc, meta, now,
                    opt, lr, eps, beta, l1, l2):
    """Apply one optimizer step per distinct present id; grads of repeated ids are summed first.

    Ids without a row are skipped (filtered or evicted). Returns the number of ids applied.
    """
    n = ids.shape[0]
    dim = emb.shape[1]
    sw = st.shape[1]
    tsize = 16
    while tsize < 2 * n:
        tsize *= 2
    tmask = tsize - 1
    table = np.full(tsize, -1, np.int32)
    urow = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    dup_slot = np.full(n, -1, np.int64)  # per distinct id: its row in gsum, -1 = no duplicate
    gsum = np.empty((0, dim), np.float32)
    ndup = 0
    u = 0
    applied = 0
    for i in range(n):
        if i + PF < n:
            _prefetch_key(keys, rows, nb, seed, ids[i + PF])
        s = find_slot(keys, rows, nb, seed, ids[i])
        if s < 0:
            continue
        applied += 1
        r = np.int64(rows[s])
        h = np.int64((np.uint64(r) * _GOLD) >> _U32) & tmask
        while True:
            k = table[h]
            if k < 0:
                table[h] = u
                urow[u] = r
                first[u] = i
                u += 1
                break
            if urow[k] == r:
                if dup_slot[k] < 0:
                    if ndup == gsum.shape[0]:
                        grown = np.empty((max(16, 2 * ndup), dim), np.float32)
                        grown[:ndup] = gsum[:ndup]
                        gsum = grown
                    dup_slot[k] = ndup
                    for j in range(dim):
                        gsum[ndup, j] = grads[first[k], j]
                    ndup += 1
                d = dup_slot[k]
                for j in range(dim):
                    gsum[d, j] += grads[i, j]
                tc[r, 1] = (tc[r, 1] & TOUCHED) | min((tc[r, 1] & CNT_MASK) + 1, CNT_MASK)
                break
            h = (h + 1) & tmask
    t_now = np.uint32(now)
    for k in range(u):
        if k + PF < u:
            q = urow[k + PF]
            prefetch(emb, q)
            prefetch(st, q)
            if sw * 4 > 64:
                prefetch(st[q], 16)
            prefetch(tc, q)
        r = urow[k]
        d = dup_slot[k]
        g = grads[first[k]] if d < 0 else gsum[d]
        if opt == OPT_ADAGRAD:
            for j in range(dim):
                gj = g[j]
                a = st[r, j] + gj * gj
                st[r, j] = a
                emb[r, j] -= lr * gj / (np.sqrt(a) + eps)
        else:
            for j in range(dim):
                gj = np.float64(g[j])
                w = np.float64(emb[r, j])
                n0 = np.float64(st[r, dim + j])
                n1 = n0 + gj * gj
                sigma = (np.sqrt(n1) - np.sqrt(n0)) / lr
                z = np.float64(st[r, j]) + gj - sigma * w
                st[r, j] = z
                st[r, dim + j] = n1
                if abs(z) <= l1:
                    emb[r, j] = 0.0
                else:
                    sz = l1 if z > 0 else -l1
                    emb[r, j] = -(z - sz) / ((beta + np.sqrt(n1)) / lr + l2)
        tc[r, 0] = t_now
        tc[r, 1] = TOUCHED | min((tc[r, 1] & CNT_MASK) + 1, CNT_MASK)
    if now > meta[M_CLOCK]:
        meta[M_CLOCK] = now
    return applied


@njit(cache=True, inline="always")
def _free_slot(s, rows, tc, meta):
    r = np.int64(rows[s])
    rows[s] = EMPTY
    tc[r, 1] = np.uint32(meta[M_FREE] + 1)
    meta[M_FREE] = r
    meta[M_LIVE] -= 1


@njit(cache=True, nogil=True)
def delete(ids, keys, rows, nb, seed, tc, meta):
    """Remove ids (absent ones are ignored); their rows go to the free list. Returns rows freed."""
    freed = 0
    n = ids.shape[0]
    for i in range(n):
        if i + PF < n:
            _prefetch_key(keys, rows, nb, seed, ids[i + PF])
        s = find_slot(keys, rows, nb, seed, ids[i])
        if s >= 0:
            _free_slot(s, rows, tc, meta)
            freed += 1
    return freed


@njit(cache=True, nogil=True)
def evict_before(cutoff, rows, tc, meta):
    """Free every row whose last update is strictly before ``cutoff``. Returns rows freed."""
    freed = 0
    n = rows.shape[0]
    for s in range(n):
        if s + PF < n and rows[s + PF] >= 0:
            prefetch(tc, rows[s + PF])
        r = rows[s]
        if r >= 0 and np.int64(tc[r, 0]) < cutoff:
            _free_slot(s, rows, tc, meta)
            freed += 1
    return freed


@njit(cache=True, nogil=True)
def collect(keys, rows, tc, cutoff, touched_only, clear_touched, n_live):
    """(ids, row numbers) of live rows updated at or after ``cutoff`` (and touched, if asked)."""
    out_ids = np.empty(n_live, np.int64)
    out_rows = np.empty(n_live, np.int64)
    m = 0
    n = rows.shape[0]
    for s in range(n):
        if s + PF < n and rows[s + PF] >= 0:
            prefetch(tc, rows[s + PF])
        r = rows[s]
        if r < 0 or np.int64(tc[r, 0]) < cutoff:
            continue
        if touched_only:
            if (tc[r, 1] & TOUCHED) == 0:
                continue
            if clear_touched:
                tc[r, 1] &= CNT_MASK
        out_ids[m] = keys[s]
        out_rows[m] = r
        m += 1
    return out_ids[:m], out_rows[:m]


@njit(cache=True, nogil=True)
def rehash(old_keys, old_rows, old_nb, new_keys, new_rows, new_nb, seed, meta):
    """Re-place every entry of the old index into the (empty) new one; False if a placement fails.

    Buckets come from fastrange, which is monotonic in each hash half, so an entry that sat in
    its first (second) old bucket is tried first in its first (second) new bucket: walking the old
    index in order then writes the new one almost sequentially instead of at random.
    """
    path = np.empty(MAX_KICKS, np.int64)
    n = old_rows.shape[0]
    for s in range(n):
        r = old_rows[s]
        if r < 0:
            continue
        key = old_keys[s]
        o1, o2 = _buckets(key, seed, old_nb)
        b1, b2 = _buckets(key, seed, new_nb)
        first = b2 if (s // WAYS == o2 and s // WAYS != o1) else b1
        base = first * WAYS
        placed = False
        for j in range(WAYS):
            if new_rows[base + j] < 0:
                new_keys[base + j] = key
                new_rows[base + j] = r
                placed = True
                break
        if not placed and not index_put(new_keys, new_rows, new_nb, seed, key, r, meta, path):
            return False
    return True


@njit(cache=True, nogil=True)
def cms_admit(ids, counters, seeds, threshold, out):
    """Count-min sketch with conservative update: count each id once, admit when its estimate >= threshold.

    ``counters uint8[depth, width]`` saturate at 255. Returns the number of ids counted.
    """
    depth = counters.shape[0]
    width = np.uint64(counters.shape[1])
    pos = np.empty(depth, np.int64)
    for i in range(ids.shape[0]):
        key = np.uint64(ids[i])
        low = 255
        for d in range(depth):
            h = mix64(key ^ seeds[d])
            p = np.int64(((h >> _U32) * width) >> _U32)
            pos[d] = p
            c = np.int64(counters[d, p])
            if c < low:
                low = c
        new = low + 1 if low < 255 else 255
        for d in range(depth):
            if np.int64(counters[d, pos[d]]) < new:
                counters[d, pos[d]] = np.uint8(new)
        out[i] = new >= threshold
    return ids.shape[0]


@njit(cache=True, nogil=True)
def prob_admit(ids, seed, counter, p, out):
    """Admit each occurrence independently with probability ``p`` (counter-based RNG, reproducible)."""
    for i in range(ids.shape[0]):
        x = mix64(np.uint64(ids[i]) ^ mix64(seed + np.uint64(counter + i)))
        out[i] = np.float64(x >> _U11) * (1.0 / 9007199254740992.0) < p
    return counter + ids.shape[0]
