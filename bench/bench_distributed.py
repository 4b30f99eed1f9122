"""Benchmark: the distributed trainer at 1 and 2 processes, and the table under concurrent access.

1. Throughput (examples/s), same MovieLens examples, same run: ``DistributedTrainer`` under
   torchrun (gloo on loopback) with 1 rank and with 2 ranks (each rank its half of the examples,
   ``--batch`` examples per rank per step, snapshots off), and the single-process embedded trainer
   (``streamrec train``'s default: 2 async worker threads) as a reference. Goal: 2 ranks >= 1.6x
   1 rank. Also per step on 2 ranks: time in collectives vs the rest, bytes sent, for the cost model.
   Every rank, the 1-rank reference included, computes on one thread (``OMP_NUM_THREADS=1`` from
   ``trainer.distributed.launch.RANK_ENV`` and ``trainer.torch_threads = 1``, which the loop sets
   with ``torch.set_num_threads``; the table kernels are single-threaded numba) and is pinned to one
   core (``trainer.distributed.pin_cores``; the 1-rank jobs by this bench): 1 rank is one core's
   work, 2 ranks two cores', so the ratio measures the distribution, not intra-op threading. The
   1-rank reference runs on each core in turn and the faster counts (this VM's cores are not always
   equal). Each rank holds only its own examples, contiguous in memory, as if read from its own
   partitions, and the ranks start their timed runs together. A step is two sync points (gradients
   + dense + scores + the next step's control row and FID requests; rows back, travelling while the
   next batch is built), the minimum for synchronous training. The ``ceiling`` is what the machine
   allows 2 ranks at best, measured in the same round: two independent 1-rank jobs (no
   communication, no shared model) on half the examples each, timed together. The machine drifts
   between rounds, so each round's own ratios are printed, then the best of each and the median of
   the rounds' speed-ups. Each round also prints the steal of each run: the share of this VM's CPU
   time its hypervisor gave to others (``/proc/stat``).
2. Concurrent table: lookups + Adagrad updates of 2 M keys from 2 threads (each thread every other
   batch of ``--table-batch`` keys), ``EmbeddingStore`` with ``--lock-shards`` lock shards per slot
   vs libcuckoo (``bench/libcuckoo/concurrent.cc``, 2 std::threads, per-key find_fn + update_fn).
   Wall time of the concurrent phase, best of ``--rounds``. Goal: >= 1.0x libcuckoo.

Wall-clock numbers on a shared 2-core machine whose spare capacity drifts (the ceiling ranged
1.11-2.31x in these runs): README "The trainer on several processes or hosts" has the measurements.
Usage: python bench/bench_distributed.py [--ratings 100000] [--batch 1024] [--rounds 3] [--only throughput]
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
from collections.abc import Callable
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
def worker(args: argparse.Namespace) -> None:
    """One rank (under torchrun): warm up, then train its share of the examples, timed."""
    from trainer.distributed.comm import Comm
    from trainer.distributed.launch import pin_to_core
    from trainer.distributed.loop import DistributedTrainer
    from trainer.sources import MemorySource

    comm = Comm.from_env("gloo", 300)
    if comm.world == 1:  # as 2 ranks are (their trainers pin them): the 1-rank reference, each ceiling job its core
        pin_to_core(args.core if args.half is None else args.half, 2)
    records = pickle.loads(Path(args.records).read_bytes())
    with tempfile.TemporaryDirectory() as tmp:
        warm = DistributedTrainer(trainer_cfg(Path(tmp) / "w", args.batch), SPEC, comm)
        warm.run(MemorySource(records[comm.rank:4000:comm.world]))  # numba kernels compile here
        comm.stats.clear()
        t = DistributedTrainer(trainer_cfg(Path(tmp), args.batch), SPEC, comm)
        mine = records[comm.rank::comm.world] if args.half is None else records[args.half::2]
        # as if read from its own partitions: its records fresh and contiguous in memory, not every
        # other one of a list unpickled whole (that costs a rank of 2 twice the cache lines a record)
        mine, total = pickle.loads(pickle.dumps(mine)), len(records)
        del records
        comm.all_objects(None)  # ranks start their timed runs together (a rank waiting for another counts)
        if args.barrier:  # the ceiling's two processes start their timed runs together
            Path(args.barrier, str(args.half)).touch()
            while len(os.listdir(args.barrier)) < 2:
                time.sleep(0.001)
        c0, t0 = time.process_time(), time.perf_counter()
        t.run(MemorySource(mine))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        s = t.finish()
    stats = {k: list(v) for k, v in comm.stats.items()}  # the training's, before the latency rounds
    out = comm.all_objects({"wall": wall, "cpu": cpu, "steps": t.steps, "stats": stats, "latency": latency(comm)})
    if comm.rank == 0:
        print(json.dumps({"examples": total, "world": comm.world, "auc": s["auc"], "ranks": out,
                          "rows_per_shard": s["rows_per_shard"]}), flush=True)
    comm.close()


def latency(comm, rounds: int = 200) -> dict[str, float]:
    """Seconds per small all_to_all (a step's sync point), nothing else running in the ranks."""
    one = np.ones(comm.world, np.int64)
    send = np.zeros((comm.world, 16), np.float32)
    out = {}
    for kind, call in (("all_to_all", lambda: comm.exchange(send, one, one)),):
        call()
        t0 = time.perf_counter()
        for _ in range(rounds):
            call()
        out[kind] = (time.perf_counter() - t0) / rounds
    return out


def cpu_ticks() -> np.ndarray:
    """(stolen, all) CPU ticks of this VM so far (/proc/stat; zeros where there is none)."""
    try:
        fields = np.array(Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:], np.int64)
    except OSError:
        return np.zeros(2, np.int64)
    return np.array([fields[7] if len(fields) > 7 else 0, fields.sum()])


def stolen(run: Callable[[], dict]) -> dict:
    """``run()``'s result with the share of the VM's CPU time its hypervisor took meanwhile (steal)."""
    t0 = cpu_ticks()
    out = run()
    d = cpu_ticks() - t0
    return {**out, "steal": d[0] / max(d[1], 1)}


def rank_command(args: argparse.Namespace, world: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
            str(Path(__file__).resolve()), "--worker", "--records", args.records, "--batch", str(args.batch),
            *extra]


def run_ranks(args: argparse.Namespace, world: int, *extra: str) -> dict:
    from trainer.distributed.launch import RANK_ENV

    out = subprocess.run(rank_command(args, world, *extra), capture_output=True, text=True,
                         env={**os.environ, **RANK_ENV}, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {**r, "eps": r["examples"] / max(x["wall"] for x in r["ranks"])}


def run_ceiling(args: argparse.Namespace) -> dict:
    """What this machine allows 2 ranks at best: 2 independent 1-rank jobs (no communication, no
    shared model), each on half of the examples, timed together; examples/s of both."""
    from trainer.distributed.launch import RANK_ENV

    with tempfile.TemporaryDirectory() as barrier:
        procs = [subprocess.Popen(rank_command(args, 1, "--half", str(k), "--barrier", barrier),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **RANK_ENV}) for k in (0, 1)]
        outs = [p.communicate(timeout=1800) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("".join(err[-3000:] for _, err in outs))
    runs = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    ranks = [r["ranks"][0] for r in runs]
    return {"eps": sum(r["examples"] for r in runs) / 2 / max(x["wall"] for x in ranks), "ranks": ranks}


def run_embedded(args: argparse.Namespace, records: list[dict]) -> dict:
    from trainer.loop import Trainer
    from trainer.sources import MemorySource

    with tempfile.TemporaryDirectory() as tmp:
        Trainer(trainer_cfg(Path(tmp) / "w", args.batch), SPEC).run(MemorySource(records[:4000]))
        t = Trainer(trainer_cfg(Path(tmp), args.batch), SPEC)
        t0 = time.perf_counter()
        t.run(MemorySource(records))
        return {"eps": len(records) / (time.perf_counter() - t0)}


def run_round(args: argparse.Namespace, records: list[dict], k: int) -> dict:
    """1 rank, 2 ranks, the ceiling and the embedded trainer, back to back."""
    # the 1-rank reference on each core, the faster counts: this VM's two cores are not always equal
    one = [stolen(lambda c=core: run_ranks(args, 1, "--core", str(c))) for core in (0, 1)]
    r = {1: max(one, key=lambda x: x["eps"]), 2: stolen(lambda: run_ranks(args, 2)),
         "ceiling": stolen(lambda: run_ceiling(args)), "embedded": run_embedded(args, records)}
    print(f"round {k + 1}: 1 rank {r[1]['eps']:9,.0f} (core 0 {one[0]['eps']:,.0f}, core 1 {one[1]['eps']:,.0f}), "
          f"2 ranks {r[2]['eps']:9,.0f} examples/s = "
          f"{r[2]['eps'] / r[1]['eps']:.2f}x; ceiling {r['ceiling']['eps'] / r[1]['eps']:.2f}x; "
          f"2 ranks / ceiling {r[2]['eps'] / r['ceiling']['eps']:.2f}; loadavg {os.getloadavg()[0]:.1f}; steal "
          + "/".join(f"{100 * r[k]['steal']:.0f}" for k in (1, 2, "ceiling")) + " %",
          flush=True)
    return r


def throughput(args: argparse.Namespace) -> None:
    """Each round runs 1 rank, 2 ranks, the ceiling and the embedded trainer back to back; the
    machine drifts between rounds, so a round's own ratios are the comparable numbers."""
    load0 = os.getloadavg()[0]
    records = movielens_examples(SPEC, args.ratings)
    with tempfile.NamedTemporaryFile(suffix=".pickle") as f:  # built once: 534 K examples take ~70 s
        f.write(pickle.dumps(records))
        f.flush()
        args.records = f.name
        rounds = [run_round(args, records, k) for k in range(args.rounds)]
    one, two, ceiling, emb = (max((r[key] for r in rounds), key=lambda x: x["eps"])
                              for key in (1, 2, "ceiling", "embedded"))
    speedups = sorted(r[2]["eps"] / r[1]["eps"] for r in rounds)
    of_ceiling = sorted(r[2]["eps"] / r["ceiling"]["eps"] for r in rounds)
    print(f"examples: {one['examples']} from {args.ratings} MovieLens ratings, {args.batch} per rank per step; "
          f"loadavg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (at the start {load0:.1f}); "
          f"one torch thread per rank; best of {len(rounds)} rounds:")
    print(f"1 rank  (torchrun, gloo):           {one['eps']:9,.0f} examples/s  AUC {one['auc']:.4f}")
    print(f"2 ranks (torchrun, gloo, loopback): {two['eps']:9,.0f} examples/s  AUC {two['auc']:.4f}  "
          f"rows per shard {two['rows_per_shard']}")
    cpu_half = max(r["cpu"] / max(r["steps"], 1) for r in ceiling["ranks"])
    print(f"ceiling: 2 independent 1-rank jobs, half the examples each, run together: {ceiling['eps']:9,.0f} "
          f"examples/s = {ceiling['eps'] / one['eps']:.2f}x 1 rank (cpu per step of the busier "
          f"{1e3 * cpu_half:.2f} ms)")
    print(f"embedded trainer (1 process, 2 async worker threads): {emb['eps']:,.0f} examples/s")
    print(f"speed-up 2 ranks / 1 rank: best {two['eps'] / one['eps']:.2f}x, median of rounds "
          f"{float(np.median(speedups)):.2f}x (rounds {', '.join(f'{x:.2f}' for x in speedups)}; goal >= 1.6x); "
          f"2 ranks / ceiling: median {float(np.median(of_ceiling)):.2f}; "
          f"2 ranks / embedded trainer: {two['eps'] / emb['eps']:.2f}x")
    r0 = two["ranks"][0]
    steps = max(r0["steps"], 1)
    comm_s = sum(v[1] for v in r0["stats"].values())
    cpu2 = max(r["cpu"] for r in two["ranks"]) / steps
    print(f"per step on rank 0 of 2 ({steps} steps): {1e3 * r0['wall'] / steps:.2f} ms wall "
          f"(cpu of the busier rank {1e3 * cpu2:.2f} ms), "
          f"{1e3 * comm_s / steps:.2f} ms in collectives (incl. waiting for the other rank), "
          + ", ".join(f"{k} {v[0] / steps:.0f} calls {1e3 * v[1] / steps:.2f} ms {v[2] / steps / 1024:.1f} KiB"
                      for k, v in r0["stats"].items()))
    one_r = one["ranks"][0]
    cpu1 = one_r["cpu"] / max(one_r["steps"], 1)
    print(f"per step on 1 rank: {1e3 * one_r['wall'] / max(one_r['steps'], 1):.2f} ms wall (cpu {1e3 * cpu1:.2f} ms)")
    # with a core per rank and nobody else on it, a step would cost the busier rank's CPU time plus the
    # latency of its one exposed sync point (the rows travel while the next batch is built), measured
    # in the same ranks, apart from training
    lat = r0["latency"]
    alpha = lat["all_to_all"]
    print(f"collective latency on loopback: small all_to_all {1e3 * lat['all_to_all']:.2f} ms; "
          "CPU-bound projection (a core per rank, cost model): "
          f"2 ranks / 1 rank = {2 * cpu1 / (cpu2 + alpha):.2f}x")


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
    ap.add_argument("--rounds", type=int, default=3, help="rounds of 1 rank, 2 ranks, ceiling, embedded")
    ap.add_argument("--keys", type=int, default=2_000_000, help="keys of the concurrent table benchmark")
    ap.add_argument("--table-batch", type=int, default=65_536)
    ap.add_argument("--lock-shards", type=int, default=4, help="EmbeddingStore lock shards per slot")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--records", default=None, help=argparse.SUPPRESS)  # a worker: the examples, pickled
    ap.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)  # the 1-rank reference's core
    ap.add_argument("--half", type=int, default=None, help=argparse.SUPPRESS)  # a ceiling worker: examples k::2
    ap.add_argument("--barrier", default=None, help=argparse.SUPPRESS)  # a ceiling worker: start together
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
