"""Benchmark: the distributed trainer at 1 and 2 processes, and the table under concurrent access.

1. Throughput (examples/s), same MovieLens examples, same run: ``DistributedTrainer`` with 1 rank
   and with 2 ranks (gloo on loopback; each rank its half of the examples, ``--batch`` examples per
   rank per step, snapshots off), and the single-process embedded trainer (``streamrec train``'s
   default: 2 async worker threads) as a reference. Goal: 2 ranks >= 1.6x 1 rank. This VM's
   capacity drifts within seconds, so everything runs inside one torchrun launch of 2 ranks (a
   round), on the examples cut into ``--segments``, each segment trained by every phase in turn,
   the order reversed every other segment, so drift hits the phases alike:

   - ``solo0``/``solo1``: 1 rank (a world of one) on core 0, then on core 1, the other rank idle;
     the faster core counts (the cores are not always equal);
   - ``duo``: 2 ranks, each its half of the segment (fresh and contiguous in memory, as if read from
     its own partitions), waiting on collectives as configured (``spin_wait_ms``);
   - ``blocking``: the same with ``spin_wait_ms = 0``, the spin's baseline;
   - ``ceiling``: each rank an independent 1-rank trainer on its half, both at once: what the
     machine allows 2 ranks at best at that moment.

   Each phase's trainer goes on across segments, so every phase trains all the examples. Every
   rank computes on one thread (``OMP_NUM_THREADS=1``, ``trainer.torch_threads = 1``; the table
   kernels are single-threaded numba) and is pinned to its core (``trainer.distributed.pin_cores``):
   1 rank is one core's work, 2 ranks two cores', so the ratio measures the distribution, not
   intra-op threading. Printed per round: each phase's examples/s, the segments' speed-ups and the
   steal of each phase (the share of its cores' time the hypervisor gave to others, ``/proc/stat``);
   then the medians, and per step on 2 ranks the time in collectives, bytes sent and CPU, for the
   cost model.
2. Concurrent table: lookups + Adagrad updates of 2 M keys from 2 threads (each thread every other
   batch of ``--table-batch`` keys), ``EmbeddingStore`` with ``--lock-shards`` lock shards per slot
   vs libcuckoo (``bench/libcuckoo/concurrent.cc``, 2 std::threads, per-key find_fn + update_fn).
   Wall time of the concurrent phase, best of ``--rounds``. Goal: >= 1.0x libcuckoo.

Wall-clock numbers on a shared 2-core machine whose spare capacity drifts: README "The trainer on
several processes or hosts" has the measurements.
Usage: python bench/bench_distributed.py [--ratings 100000] [--batch 1024] [--rounds 3] [--segments 8]
       [--only throughput]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from jobs.replay_examples import movielens_examples  # noqa: E402
from streamrec.config import load_config  # noqa: E402
from trainer.config import TrainerConfig  # noqa: E402

SPEC = load_config().features  # the MovieLens spec (the default)


def trainer_cfg(tmp: Path, batch: int, **over) -> TrainerConfig:
    return TrainerConfig(batch_size=batch, snapshot_dir=tmp / "snaps", snapshot_every_s=0, metrics_csv=None,
                         plot=None, eval_window_ms=60_000, eval_lateness_ms=120_000, torch_threads=1, **over)


# ---- 1. throughput --------------------------------------------------------------------------------
# 1 rank on core 0, on core 1; 2 ranks; 2 ranks blocking at once on collectives; 2 independent 1-rank jobs
PHASES = ("solo0", "solo1", "duo", "blocking", "ceiling")


def timed(trainer, records: list[dict], name: str) -> dict:
    """Train ``records`` (a fresh source: the trainer goes on from where its last segment ended)."""
    from trainer.sources import MemorySource

    s0, c0, t0 = trainer.steps, time.process_time(), time.perf_counter()
    trainer.run(MemorySource(records, name))
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "steps": trainer.steps - s0}


def worker(args: argparse.Namespace) -> None:
    """Both ranks of one launch, every phase of every segment: see the module's docstring."""
    from trainer.distributed.comm import Comm
    from trainer.distributed.loop import DistributedTrainer
    from trainer.sources import MemorySource

    comm = Comm.from_env(TrainerConfig().distributed)
    alone, blocking = Comm(0, 1), Comm(comm.rank, comm.world)  # a world of one (no collectives); no spinning
    records = pickle.loads(Path(args.records).read_bytes())
    bounds = np.linspace(0, len(records), args.segments + 1).astype(int)
    segments = [records[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    # as if read from its own partitions: a rank's half of each segment fresh and contiguous in memory,
    # not every other record of one list (that costs twice the cache lines a record)
    halves = [pickle.loads(pickle.dumps(s[comm.rank::2])) for s in segments]
    phases: dict[str, list[dict]] = {p: [] for p in PHASES}
    with tempfile.TemporaryDirectory() as tmp:
        def trainer(name: str, c: Comm) -> DistributedTrainer:
            return DistributedTrainer(trainer_cfg(Path(tmp) / name, args.batch), SPEC, c)

        trainer("warm", comm).run(MemorySource(records[comm.rank:4000:2]))  # numba compiles; the rank is pinned
        comm.stats.clear()
        # phase -> this rank's trainer and what it trains of each segment; the other rank's solo is
        # absent: this core stays idle meanwhile (its rank waits in the next barrier)
        jobs = {f"solo{comm.rank}": (trainer("solo", alone), segments), "duo": (trainer("duo", comm), halves),
                "blocking": (trainer("blocking", blocking), halves), "ceiling": (trainer("pair", alone), halves)}
        for k in range(len(segments)):
            for phase in PHASES if k % 2 == 0 else PHASES[::-1]:  # drift within a segment: order alternated
                comm.all_objects(None)  # one phase at a time, its ranks starting together
                if phase not in jobs:
                    continue
                ticks = cpu_ticks()
                t, data = jobs[phase]
                out = timed(t, data[k], f"seg-{k}")
                # the share of its cores' time the hypervisor gave to others
                used = (cpu_ticks() - ticks)[[comm.rank] if phase.startswith("solo") else slice(None)].sum(0)
                phases[phase].append({**out, "steal": used[0] / max(used[1], 1)})
        stats = {k: list(v) for k, v in comm.stats.items()}
        s_solo, s_duo = jobs[f"solo{comm.rank}"][0].finish(), jobs["duo"][0].finish()
    out = comm.all_objects({"phases": phases, "stats": stats, "auc_solo": s_solo["auc"], "latency": latency(comm)})
    if comm.rank == 0:
        print(json.dumps({"examples": len(records), "bounds": bounds.tolist(), "ranks": out, "auc_duo": s_duo["auc"],
                          "rows_per_shard": s_duo["rows_per_shard"]}), flush=True)
    comm.close()


def latency(comm, rounds: int = 200) -> dict[str, float]:
    """Seconds per small all_to_all (a step's sync point), nothing else running in the ranks."""
    one = np.ones(comm.world, np.int64)
    send = np.zeros((comm.world, 16), np.float32)
    comm.exchange(send, one, one)
    t0 = time.perf_counter()
    for _ in range(rounds):
        comm.exchange(send, one, one)
    return {"all_to_all": (time.perf_counter() - t0) / rounds}


def cpu_ticks() -> np.ndarray:
    """(stolen, all) CPU ticks of each core of this VM so far (/proc/stat; zeros where there is none)."""
    try:
        lines = [ln.split() for ln in Path("/proc/stat").read_text().splitlines() if ln[:3] == "cpu" and ln[3] != " "]
    except OSError:
        return np.zeros((os.cpu_count() or 1, 2), np.int64)
    f = [np.array(ln[1:], np.int64) for ln in lines]
    return np.array([[x[7] if len(x) > 7 else 0, x.sum()] for x in f])


def per_step(runs: list[dict], key: str) -> float:
    """Seconds of ``key`` (wall, cpu) a step over a phase's segments on one rank."""
    return sum(r[key] for r in runs) / max(sum(r["steps"] for r in runs), 1)


def run_launch(args: argparse.Namespace) -> dict:
    """One torchrun launch of 2 ranks running every phase; per phase, per segment: the wall time
    (the slower rank's where both train), CPU, steps and steal; the 1-rank reference is the core
    whose solo phases took less time in all."""
    from trainer.distributed.launch import RANK_ENV

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(Path(__file__).resolve()), "--worker", "--records", args.records, "--batch", str(args.batch),
           "--segments", str(args.segments)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **RANK_ENV}, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    ranks = [x["phases"] for x in r["ranks"]]
    solo = [ranks[c][f"solo{c}"] for c in (0, 1)]
    core = min((0, 1), key=lambda c: sum(s["wall"] for s in solo[c]))
    wall = {"solo0": [s["wall"] for s in solo[0]], "solo1": [s["wall"] for s in solo[1]]}
    for p in ("duo", "blocking", "ceiling"):
        wall[p] = [max(a["wall"], b["wall"]) for a, b in zip(ranks[0][p], ranks[1][p], strict=True)]
    wall[1] = wall[f"solo{core}"]
    eps = {p: r["examples"] / sum(w) for p, w in wall.items()}
    steal = {p: float(np.mean([s["steal"] for s in ranks[0 if p != "solo1" else 1][p]])) for p in PHASES}
    return {**r, "core": core, "wall": wall, "eps": eps, "steal": steal, "solo": solo[core],
            "segment_speedups": [a / b for a, b in zip(wall[1], wall["duo"], strict=True)],
            "auc_solo": r["ranks"][core]["auc_solo"]}


def run_embedded(args: argparse.Namespace, records: list[dict]) -> dict:
    from trainer.loop import Trainer
    from trainer.sources import MemorySource

    with tempfile.TemporaryDirectory() as tmp:
        Trainer(trainer_cfg(Path(tmp) / "w", args.batch), SPEC).run(MemorySource(records[:4000]))
        t = Trainer(trainer_cfg(Path(tmp), args.batch), SPEC)
        t0 = time.perf_counter()
        t.run(MemorySource(records))
        return {"eps": len(records) / (time.perf_counter() - t0)}


def throughput(args: argparse.Namespace) -> None:
    """``--rounds`` launches, each every phase of every segment; then the embedded trainer once."""
    load0 = os.getloadavg()[0]
    records = movielens_examples(SPEC, args.ratings)
    rounds = []
    with tempfile.NamedTemporaryFile(suffix=".pickle") as f:  # built once: 534 K examples take ~70 s
        f.write(pickle.dumps(records))
        f.flush()
        args.records = f.name
        for k in range(args.rounds):
            r = run_launch(args)
            e, seg = r["eps"], sorted(r["segment_speedups"])
            print(f"round {k + 1}: 1 rank {e[1]:9,.0f} (core 0 {e['solo0']:,.0f}, core 1 {e['solo1']:,.0f}), "
                  f"2 ranks {e['duo']:9,.0f} examples/s = {e['duo'] / e[1]:.2f}x "
                  f"(its {len(seg)} segments {seg[0]:.2f}-{seg[-1]:.2f}x, median {float(np.median(seg)):.2f}x); "
                  f"blocking at once {e['blocking'] / e[1]:.2f}x (spinning / blocking {e['duo'] / e['blocking']:.3f}); "
                  f"ceiling {e['ceiling'] / e[1]:.2f}x; 2 ranks / ceiling {e['duo'] / e['ceiling']:.2f}; "
                  f"loadavg {os.getloadavg()[0]:.1f}; steal 1 rank/2 ranks/blocking/ceiling "
                  + "/".join(f"{100 * r['steal'][p]:.0f}" for p in (f"solo{r['core']}", *PHASES[2:])) + " %",
                  flush=True)
            rounds.append(r)
    emb = run_embedded(args, records)
    speedups = sorted(r["eps"]["duo"] / r["eps"][1] for r in rounds)
    segs = sorted(x for r in rounds for x in r["segment_speedups"])
    best = max(rounds, key=lambda r: r["eps"]["duo"] / r["eps"][1])
    e = best["eps"]
    print(f"examples: {best['examples']} from {args.ratings} MovieLens ratings in {args.segments} segments, "
          f"{args.batch} per rank per step; loadavg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          f"(at the start {load0:.1f}); one torch thread per rank; the round with the best speed-up:")
    print(f"1 rank  (gloo, world of one, core {best['core']}): {e[1]:9,.0f} examples/s  AUC {best['auc_solo']:.4f}")
    print(f"2 ranks (torchrun, gloo, loopback): {e['duo']:9,.0f} examples/s  AUC {best['auc_duo']:.4f}  "
          f"rows per shard {best['rows_per_shard']}")
    ranks = [x["phases"] for x in best["ranks"]]
    cpu_c = max(per_step(rk["ceiling"], "cpu") for rk in ranks)
    print(f"ceiling: 2 independent 1-rank jobs, half the examples each, run together: {e['ceiling']:9,.0f} "
          f"examples/s = {e['ceiling'] / e[1]:.2f}x 1 rank (cpu per step of the busier {1e3 * cpu_c:.2f} ms)")
    print(f"embedded trainer (1 process, 2 async worker threads): {emb['eps']:,.0f} examples/s")
    print(f"speed-up 2 ranks / 1 rank: median of rounds {float(np.median(speedups)):.2f}x "
          f"(rounds {', '.join(f'{x:.2f}' for x in speedups)}), median of all {len(segs)} segments "
          f"{float(np.median(segs)):.2f}x ({segs[0]:.2f}-{segs[-1]:.2f}x, "
          f"{sum(x >= 1.6 for x in segs)} at 1.6x or more); goal >= 1.6x; "
          f"2 ranks / ceiling: median of rounds "
          f"{float(np.median([r['eps']['duo'] / r['eps']['ceiling'] for r in rounds])):.2f}; "
          f"2 ranks / embedded trainer: {e['duo'] / emb['eps']:.2f}x")
    r0 = best["ranks"][0]
    steps = max(sum(s["steps"] for s in ranks[0]["duo"]), 1)
    comm_s = sum(v[1] for v in r0["stats"].values())
    cpu2, work2 = (max(per_step(rk[p], "cpu") for rk in ranks) for p in ("duo", "blocking"))
    print(f"per step on rank 0 of 2 ({steps} steps): {1e3 * sum(best['wall']['duo']) / steps:.2f} ms wall "
          f"(cpu of the busier rank {1e3 * cpu2:.2f} ms with spinning, {1e3 * work2:.2f} ms blocking at once), "
          f"{1e3 * comm_s / steps:.2f} ms in collectives (incl. waiting for the other rank), "
          + ", ".join(f"{k} {v[0] / steps:.0f} calls {1e3 * v[1] / steps:.2f} ms {v[2] / steps / 1024:.1f} KiB"
                      for k, v in r0["stats"].items()))
    cpu1 = per_step(best["solo"], "cpu")
    print(f"per step on 1 rank: {1e3 * per_step(best['solo'], 'wall'):.2f} ms wall (cpu {1e3 * cpu1:.2f} ms)")
    # with a core per rank and nobody else on it, a step would cost the busier rank's work (its CPU when
    # it blocks: no spinning) plus the latency of its one exposed sync point (the rows travel while the
    # next batch is built), measured in the same ranks, apart from training
    alpha = r0["latency"]["all_to_all"]
    print(f"collective latency on loopback: small all_to_all {1e3 * alpha:.2f} ms; "
          "CPU-bound projection (a core per rank, cost model): "
          f"2 ranks / 1 rank = {2 * cpu1 / (work2 + alpha):.2f}x")


# ---- 2. concurrent table ----------------------------------------------------------------------------
def ours_concurrent(keys: np.ndarray, grads: np.ndarray, batch: int, shards: int, threads: int) -> float:
    from schemas.spec import FeatureSpec
    from trainer.embedding.config import EmbeddingConfig
    from trainer.embedding.store import EmbeddingStore

    spec = FeatureSpec.model_validate({"slots": {"k": {"number": 1, "side": "user"}},
                                       "embedding": {"dim": 16, "optimizer": "adagrad", "learning_rate": 0.05},
                                       "actions": {"labels": ["click"]}})
    store = EmbeddingStore(EmbeddingConfig(shards=shards), spec)
    for i in range(0, len(keys), batch):
        store.lookup(keys[i:i + batch], slot="k", train=True, now=1)
    n_batches = (len(keys) + batch - 1) // batch

    def work(t: int) -> None:
        for b in range(t, n_batches, threads):
            k = keys[b * batch:(b + 1) * batch]
            store.lookup(k, slot="k", train=False)
            store.apply_gradients(k, grads[:len(k)], slot="k", now=2)

    ths = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return time.perf_counter() - t0


def concurrent_table(args: argparse.Namespace) -> None:
    from bench_embedding import build_harness, ensure_libcuckoo

    rng = np.random.default_rng(1)
    keys = np.unique(rng.integers(1, 2**47, size=args.keys + 1000, dtype=np.int64))  # slot 0 bits free
    keys = (rng.permutation(keys)[: args.keys] | (1 << 48)).astype(np.int64)  # FIDs of slot 1
    grads = (rng.standard_normal((args.table_batch, 16)) * 0.1).astype(np.float32)
    why = ensure_libcuckoo()
    ours = min(ours_concurrent(keys, grads, args.table_batch, args.lock_shards, 2) for _ in range(args.rounds))
    one = min(ours_concurrent(keys, grads, args.table_batch, args.lock_shards, 1) for _ in range(args.rounds))
    print(f"table, 2 threads, {len(keys):,} keys, lookup + Adagrad update each, {args.lock_shards} lock shards: "
          f"ours {len(keys) / ours / 1e6:.2f} M keys/s (1 thread {len(keys) / one / 1e6:.2f} M/s)")
    if why is not None:
        print(f"no libcuckoo baseline: {why}")
        return
    exe = build_harness(ROOT / "bench" / "libcuckoo" / "concurrent.cc")
    with tempfile.TemporaryDirectory() as tmp:
        kf, gf = Path(tmp) / "k.bin", Path(tmp) / "g.bin"
        keys.tofile(kf)
        grads.tofile(gf)
        lc = min(json.loads(subprocess.run([str(exe), str(kf), str(gf), "2", str(args.table_batch), "1"],
                                           capture_output=True, text=True, check=True).stdout)["wall_s"]
                 for _ in range(args.rounds))
    print(f"libcuckoo, 2 threads: {len(keys) / lc / 1e6:.2f} M keys/s; ours / libcuckoo: {lc / ours:.2f}x "
          f"(goal >= 1.0x; loadavg {os.getloadavg()[0]:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratings", type=int, default=100_000,
                    help="MovieLens ratings replayed (all of ML-100K: seconds a job, transients average out)")
    ap.add_argument("--batch", type=int, default=1024, help="examples per rank per step")
    ap.add_argument("--rounds", type=int, default=3, help="launches of 2 ranks, each running every phase")
    ap.add_argument("--segments", type=int, default=8,
                    help="segments of the examples: each trained by every phase in turn, so drift hits them alike")
    ap.add_argument("--keys", type=int, default=2_000_000, help="keys of the concurrent table benchmark")
    ap.add_argument("--table-batch", type=int, default=65_536)
    ap.add_argument("--lock-shards", type=int, default=4, help="EmbeddingStore lock shards per slot")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--records", default=None, help=argparse.SUPPRESS)  # a worker: the examples, pickled
    ap.add_argument("--only", choices=["throughput", "table"], default=None)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.only in (None, "throughput"):
        throughput(args)
    if args.only in (None, "table"):
        concurrent_table(args)


if __name__ == "__main__":
    main()
