"""Benchmark: the collisionless embedding table vs libcuckoo and vs a Python dict of numpy rows.

Same run, same keys: 2 M random int64 ids, dim 16, Adagrad, one thread.
- streamrec ``CuckooTable``: batched calls of 64 Ki keys — ``insert`` (insert-or-init, rows get
  the per-id initializer), ``lookup(out=buffer)`` (copy 16 floats per key), ``apply_gradients``
  (Adagrad inside the table, plus timestamp, count and touched mark per row).
- libcuckoo (Debian ``libcuckoo-dev``, the map Monolith's table is built on): a C++ harness
  (``bench/libcuckoo/harness.cc``, g++ -O2) doing per-key ``insert`` of a constant row,
  ``find_fn`` copying the 16 embedding floats into a buffer, ``update_fn`` applying Adagrad.
- Python dict of numpy rows (key -> float32[32]: embedding + accumulator), per-key Python loop,
  on the first ``--dict-keys`` keys only (rates are per key, so the ratio is fair).

Times are CPU seconds of the working thread (``time.thread_time`` / ``CLOCK_THREAD_CPUTIME_ID``),
best of ``--rounds`` alternating rounds, so other load on a shared machine distorts neither side.
Both tables grow from their default sizes (no reservation).

Memory: payload = what libcuckoo stores per row = int64 key + 2 x 16 float32 = 136 bytes.
Ours: ``CuckooTable.nbytes`` (allocated index + arena capacity, not just live rows) per live row;
libcuckoo: heap bytes (mallinfo2) after the inserts per row; dict: tracemalloc bytes per row.
Goal: >= 1.0x libcuckoo on insert, find and update; memory <= 1.25x payload.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.embedding.table import CuckooTable  # noqa: E402

DIM = 16
LR, EPS, ACC0 = 0.05, 1e-8, 0.1
PAYLOAD = 8 + 2 * DIM * 4
HARNESS = ROOT / "bench" / "libcuckoo" / "harness.cc"
HEADER = Path("/usr/include/libcuckoo/cuckoohash_map.hh")


def ensure_libcuckoo() -> str | None:
    """Install libcuckoo-dev if missing (bench only). Returns a reason string when unavailable."""
    if HEADER.exists():
        return None
    cmd = ["apt-get", "install", "-y", "libcuckoo-dev"]
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            return "libcuckoo-dev is not installed and there is no root/sudo to install it"
        cmd = ["sudo", "-n", *cmd]
    print(f"installing libcuckoo-dev: {' '.join(cmd)}", flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not HEADER.exists():
        return f"apt-get install libcuckoo-dev failed: {r.stderr.strip()[-300:]}"
    return None


def build_harness(source: Path = HARNESS) -> Path:
    """Compile a harness into .vendor/bench/ (cached by source hash)."""
    src = source.read_bytes() + (source.parent / "common.h").read_bytes()
    out_dir = ROOT / ".vendor" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / f"libcuckoo_{source.stem}-{hashlib.sha1(src).hexdigest()[:10]}"
    if not exe.exists():
        tmp = exe.with_suffix(".tmp")
        subprocess.run(["g++", "-O2", "-std=c++17", "-o", str(tmp), str(source), "-lpthread"], check=True)
        tmp.replace(exe)
    return exe


def run_libcuckoo(exe: Path, keys_file: Path, grads_file: Path) -> dict:
    r = subprocess.run([str(exe), str(keys_file), str(grads_file)], capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_ours(keys: np.ndarray, grads: np.ndarray, batch: int) -> dict:
    t = CuckooTable(DIM, "adagrad", learning_rate=LR, adagrad_eps=EPS, initial_accumulator=ACC0)
    n = len(keys)
    per_row = []  # bytes per row after each batch: memory along the whole growth path
    w0, c0 = time.perf_counter(), time.thread_time()
    for i in range(0, n, batch):
        t.insert(keys[i:i + batch], now=1)
        per_row.append((len(t), t.nbytes))
    w1, c1 = time.perf_counter(), time.thread_time()
    worst = max(b / r for r, b in per_row if r >= min(100_000, n // 2))
    out = np.empty((batch, DIM), np.float32)
    checksum = 0.0
    for i in range(0, n, batch):
        k = keys[i:i + batch]
        t.lookup(k, out=out[:len(k)])
        checksum += float(out[0, 0])
    w2, c2 = time.perf_counter(), time.thread_time()
    for i in range(0, n, batch):
        k = keys[i:i + batch]
        t.apply_gradients(k, grads[:len(k)], now=2)
    w3, c3 = time.perf_counter(), time.thread_time()
    assert len(t) == n, f"table holds {len(t)} rows, expected {n}"
    return {"insert_s": c1 - c0, "find_s": c2 - c1, "update_s": c3 - c2, "insert_wall": w1 - w0,
            "find_wall": w2 - w1, "update_wall": w3 - w2, "bytes": t.nbytes,
            "rows": len(t), "slots": t.index_slots, "arena": t.arena_capacity, "worst_row": worst}


def run_dict(keys: np.ndarray, grads: np.ndarray) -> dict:
    """The naive baseline: a dict of numpy rows, one Python step per key."""
    keys = keys.tolist()
    pool = len(grads)
    init = np.concatenate([np.full(DIM, 0.01, np.float32), np.full(DIM, ACC0, np.float32)])
    tracemalloc.start()
    m0 = tracemalloc.get_traced_memory()[0]
    c0 = time.thread_time()
    d = {}
    for k in keys:
        d[k] = init.copy()
    c1 = time.thread_time()
    mem = tracemalloc.get_traced_memory()[0] - m0
    tracemalloc.stop()
    out = np.empty((pool, DIM), np.float32)
    for i, k in enumerate(keys):
        out[i % pool] = d[k][:DIM]
    c2 = time.thread_time()
    for i, k in enumerate(keys):
        row = d[k]
        g = grads[i % pool]
        acc = row[DIM:]
        acc += g * g
        row[:DIM] -= LR * g / (np.sqrt(acc) + EPS)
    c3 = time.thread_time()
    return {"insert_s": c1 - c0, "find_s": c2 - c1, "update_s": c3 - c2, "bytes": mem, "rows": len(d)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=2_000_000, help="distinct random int64 keys")
    ap.add_argument("--batch", type=int, default=65_536, help="keys per batched call (ours)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; best time per op")
    ap.add_argument("--dict-keys", type=int, default=200_000, help="keys for the dict baseline")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    keys = np.unique(rng.integers(-(2**63), 2**63 - 1, size=args.keys + 1000, dtype=np.int64))
    keys = rng.permutation(keys)[: args.keys]
    grads = (rng.standard_normal((args.batch, DIM)) * 0.1).astype(np.float32)
    print(f"keys={len(keys):,} dim={DIM} batch={args.batch:,} rounds={args.rounds} "
          f"loadavg={os.getloadavg()[0]:.2f} cpus={os.cpu_count()}", flush=True)

    why_not = ensure_libcuckoo()
    exe = None
    if why_not is None:
        exe = build_harness()
    else:
        print(f"WARNING: no libcuckoo baseline: {why_not}", flush=True)

    # compile the numba kernels outside the timed rounds
    warm = CuckooTable(DIM)
    warm.insert(keys[:100])
    warm.lookup(keys[:100], out=np.empty((100, DIM), np.float32))
    warm.apply_gradients(keys[:100], grads[:100])

    ops = ("insert", "find", "update")
    best: dict[str, dict[str, float]] = {"ours": {}, "libcuckoo": {}}
    wall: dict[str, dict[str, float]] = {"ours": {}, "libcuckoo": {}}
    ours_last = lc_last = None
    with tempfile.TemporaryDirectory() as tmp:
        keys_file, grads_file = Path(tmp) / "keys.bin", Path(tmp) / "grads.bin"
        keys.tofile(keys_file)
        grads.tofile(grads_file)
        for r in range(args.rounds):
            runs = [("ours", lambda: run_ours(keys, grads, args.batch))]
            if exe is not None:
                runs.append(("libcuckoo", lambda: run_libcuckoo(exe, keys_file, grads_file)))
            if r % 2:
                runs.reverse()
            for name, fn in runs:
                res = fn()
                for op in ops:
                    best[name][op] = min(best[name].get(op, float("inf")), res[f"{op}_s"])
                    wall[name][op] = min(wall[name].get(op, float("inf")), res[f"{op}_wall"])
                if name == "ours":
                    ours_last = res
                else:
                    lc_last = res
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    dict_res = run_dict(keys[: args.dict_keys], grads)

    n = len(keys)
    rate = {name: {op: n / best[name][op] / 1e6 for op in best[name]} for name in best}
    rate["dict"] = {op: len(keys[: args.dict_keys]) / dict_res[f"{op}_s"] / 1e6 for op in ops}

    print()
    print("CPU-time rates (best round):")
    print(f"{'operation':<10}{'ours M/s':>11}{'libcuckoo M/s':>15}{'dict M/s':>11}"
          f"{'vs libcuckoo':>14}{'vs dict':>10}")
    met = True
    for op in ops:
        lc = rate["libcuckoo"].get(op)
        ratio = rate["ours"][op] / lc if lc else None
        met &= ratio is not None and ratio >= 1.0
        lc_s = f"{lc:15.2f}" if lc else f"{'n/a':>15}"
        ratio_s = f"{ratio:13.2f}x" if ratio else f"{'n/a':>14}"
        print(f"{op:<10}{rate['ours'][op]:11.2f}{lc_s}{rate['dict'][op]:11.2f}{ratio_s}"
              f"{rate['ours'][op] / rate['dict'][op]:9.1f}x")
    if wall["libcuckoo"]:
        print("wall-clock (best round; noisier on a shared machine): " + ", ".join(
            f"{op} {n / wall['ours'][op] / 1e6:.2f} vs {n / wall['libcuckoo'][op] / 1e6:.2f} M/s "
            f"({wall['libcuckoo'][op] / wall['ours'][op]:.2f}x)" for op in ops))
    print()
    ours_row = ours_last["bytes"] / ours_last["rows"]
    print(f"payload per row (int64 key + 2x{DIM} float32): {PAYLOAD} bytes")
    print(f"ours:      {ours_row:7.1f} bytes/row = {ours_row / PAYLOAD:.3f}x payload "
          f"(index slots {ours_last['slots']:,} for {ours_last['rows']:,} rows, "
          f"load {ours_last['rows'] / ours_last['slots']:.3f}; arena capacity {ours_last['arena']:,}; "
          f"row = 16 emb + 16 acc floats + 4 B last-update + 4 B count|touched)")
    print(f"ours, worst after any insert batch from 100K to {n:,} rows: {ours_last['worst_row']:.1f} "
          f"bytes/row = {ours_last['worst_row'] / PAYLOAD:.3f}x payload")
    if lc_last:
        lc_row = lc_last["heap_bytes"] / lc_last["size"]
        print(f"libcuckoo: {lc_row:7.1f} bytes/row = {lc_row / PAYLOAD:.3f}x payload "
              f"(bucket slots {lc_last['bucket_slots']:,})")
    dict_row = dict_res["bytes"] / dict_res["rows"]
    print(f"dict:      {dict_row:7.1f} bytes/row = {dict_row / PAYLOAD:.3f}x payload "
          f"(tracemalloc, {dict_res['rows']:,} rows)")
    mem_ok = max(ours_row, ours_last["worst_row"]) <= 1.25 * PAYLOAD
    print()
    print(f"goal >= 1.0x libcuckoo on insert/find/update: {'MET' if met else 'NOT MET'}; "
          f"memory <= 1.25x payload (at {n:,} rows and worst on the way): {'MET' if mem_ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
