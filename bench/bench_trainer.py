"""Trainer throughput vs a plain PyTorch DeepFM on fixed-size hashed ``nn.EmbeddingBag`` tables,
and serving freshness at a 1 s sparse sync interval, same run.

1. Throughput (examples/s, 2 worker threads, torch 1 thread each, same examples, same DeepFM,
   same batch building): the streamrec trainer (collisionless cuckoo tables, Adagrad inside the
   table, async PS pull/push, progressive evaluation, touched-key sync) vs the baseline (per-slot
   ``nn.EmbeddingBag(hash_buckets, dim, mode="sum", sparse=True)`` + ``torch.optim.Adagrad``,
   ids hashed modulo the bucket count, two threads on one module, each step under a lock since
   torch's in-place optimizer steps break a concurrent thread's autograd graph). Goal: ratio >= 0.8.
2. Freshness: examples produced to a real (Apache Kafka) broker at a steady rate, the trainer online on
   the topic with ``sparse_sync_interval_s = 1``; a sampler reads every 50 ms how old (wall time
   since it was produced) the newest example reflected in the serving PS is. Goal: p99 <= 5 s.
3. Batch building: ``build_batch`` (Arrow converts the records in C++) vs ``build_batch_python``
   (the Python walk it falls back to), same records in batches of 1024, interleaved, best of 3.

Usage: python bench/bench_trainer.py [--ratings 30000] [--rate 5000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import queue
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jobs.replay_examples import movielens_examples
from schemas.spec import FeatureSpec
from streamrec.config import load_config
from trainer.batch import ExampleBatch, build_batch, build_batch_python
from trainer.config import TrainerConfig
from trainer.loop import Trainer
from trainer.model import DeepFM
from trainer.sources import MemorySource

SPEC = load_config().features  # the MovieLens spec (the default)


def trainer_cfg(tmp: Path, **over) -> TrainerConfig:
    return TrainerConfig(snapshot_dir=tmp / "snaps", snapshot_every_s=0, metrics_csv=None, plot=None,
                         eval_window_ms=60_000, eval_lateness_ms=120_000, **over)


# ---- baseline: DeepFM on hashed nn.EmbeddingBag tables ------------------------------------------
class HashedDeepFM(nn.Module):
    def __init__(self, cfg: TrainerConfig, spec: FeatureSpec, buckets: int) -> None:
        super().__init__()
        dims = [spec.settings(s).dim for s in spec.model_slots]
        self.buckets = buckets
        self.bags = nn.ModuleList(nn.EmbeddingBag(buckets, d, mode="sum", sparse=True) for d in dims)
        for b in self.bags:
            nn.init.normal_(b.weight, std=0.01)
        self.deepfm = DeepFM(dims, len(spec.dense), cfg.hidden, len(spec.labels), cfg.fm_dim or dims[0])

    def forward(self, batch: ExampleBatch, slots: list[str]) -> torch.Tensor:
        pooled = []
        for bag, slot in zip(self.bags, slots, strict=True):
            fids, offsets = batch.bags[slot]
            idx = torch.from_numpy(np.remainder(fids, self.buckets))
            pooled.append(bag(idx, torch.from_numpy(offsets)))
        return self.deepfm(pooled, torch.from_numpy(batch.dense))


def run_baseline(cfg: TrainerConfig, records: list[dict], buckets: int) -> float:
    torch.manual_seed(cfg.seed)
    model = HashedDeepFM(cfg, SPEC, buckets)
    emb = SPEC.embedding
    sparse_opt = torch.optim.Adagrad([b.weight for b in model.bags], lr=emb.learning_rate,
                                     initial_accumulator_value=emb.initial_accumulator)
    dense_opt = torch.optim.Adam(model.deepfm.parameters(), lr=cfg.dense_lr)
    lock = threading.Lock()
    q: queue.Queue = queue.Queue(maxsize=cfg.queue_batches)

    def work() -> None:
        torch.set_num_threads(cfg.torch_threads)
        while (b := q.get()) is not None:
            # the whole step under the lock: an optimizer step of one thread between another's
            # forward and backward would invalidate its autograd graph (in-place update)
            with lock:
                logits = model(b, SPEC.model_slots)
                loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(b.labels),
                                                          reduction="sum") / len(b)
                model.zero_grad(set_to_none=True)
                loss.backward()
                sparse_opt.step()
                dense_opt.step()

    threads = [threading.Thread(target=work) for _ in range(cfg.workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for i in range(0, len(records), cfg.batch_size):
        q.put(build_batch(records[i:i + cfg.batch_size], SPEC))
    for _ in threads:
        q.put(None)
    for t in threads:
        t.join()
    return len(records) / (time.perf_counter() - t0)


def run_streamrec(cfg: TrainerConfig, records: list[dict]) -> tuple[float, dict]:
    t = Trainer(cfg, SPEC)
    t0 = time.perf_counter()
    t.run(MemorySource(records))
    eps = len(records) / (time.perf_counter() - t0)
    return eps, t.finish()


# ---- freshness -------------------------------------------------------------------------------------
def run_freshness(tmp: Path, records: list[dict], rate: float, seconds: float) -> dict:
    from deploy.broker import Broker
    from schemas.codec import default_codec
    from streamrec.config import KafkaConfig
    from streamrec.kafka import create_topics, producer
    from trainer.sources import KafkaSource

    codec = default_codec()
    payloads = [codec.encode("TrainingExample", r) for r in records]
    with Broker(tmp / "broker") as broker:
        kcfg = KafkaConfig(bootstrap=broker.bootstrap)
        create_topics(kcfg, {"bench-examples": 2})
        cfg = trainer_cfg(tmp, sparse_sync_interval_s=1.0, dense_sync_interval_s=5.0)
        trainer = Trainer(cfg, SPEC)
        stop = threading.Event()
        samples: list[float] = []
        n_total = min(len(payloads), int(rate * seconds))

        def produce() -> None:
            p = producer(kcfg, **{"linger.ms": 5})
            t0 = time.monotonic()
            for i in range(n_total):
                due = t0 + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                while True:
                    try:
                        p.produce("bench-examples", payloads[i], key=records[i]["request_id"])
                        break
                    except BufferError:
                        p.poll(0.01)
                p.poll(0)
            p.flush(30)

        def sample() -> None:  # while examples are being produced (afterwards nothing new can arrive)
            while not stop.is_set() and prod.is_alive():
                f = trainer.serving.freshness_ms()
                if f >= 0:
                    samples.append(f / 1000)
                time.sleep(0.05)

        src = KafkaSource(kcfg, "bench-examples", "bench-trainer")
        prod = threading.Thread(target=produce)
        samp = threading.Thread(target=sample)
        prod.start()
        samp.start()
        trainer.run(src, stop_when_idle_s=3.0)
        stop.set()
        prod.join()
        samp.join()
        src.close()
        s = np.array(samples[int(len(samples) * 0.1):])  # skip warm-up (first sync)
        return {"examples": trainer.examples, "p50": float(np.percentile(s, 50)),
                "p99": float(np.percentile(s, 99)), "samples": len(s), "syncs": trainer.serving.sparse_syncs}


def batch_building(records: list[dict], rounds: int = 3) -> dict[str, float]:
    """Best ms per 1024 examples of each way, the two interleaved (the machine drifts)."""
    chunks = [records[i:i + 1024] for i in range(0, len(records), 1024)]
    best = {"arrow": float("inf"), "python": float("inf")}
    for _ in range(rounds):
        for name, build in (("arrow", build_batch), ("python", build_batch_python)):
            t0 = time.perf_counter()
            for c in chunks:
                build(c, SPEC)
            best[name] = min(best[name], 1e3 * (time.perf_counter() - t0) / len(chunks))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratings", type=int, default=30_000, help="MovieLens ratings replayed into examples")
    ap.add_argument("--buckets", type=int, default=1 << 18, help="hashed table rows per slot (baseline)")
    ap.add_argument("--rate", type=float, default=5000.0, help="examples/s produced for the freshness run")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the freshness run")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}  torch threads/worker: 1  workers: 2")
    t0 = time.perf_counter()
    records = movielens_examples(SPEC, args.ratings)
    print(f"examples: {len(records)} from {args.ratings} MovieLens ratings (built in {time.perf_counter() - t0:.1f}s)")
    bb = batch_building(records)
    print(f"batch building, 1024 examples: Arrow {bb['arrow']:.2f} ms, Python walk {bb['python']:.2f} ms "
          f"= {bb['python'] / bb['arrow']:.2f}x")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        cfg = trainer_cfg(tmp)
        run_streamrec(cfg, records[:20_000])  # warm-up: numba kernels compile
        best_s = best_b = 0.0
        summary = {}
        for _ in range(args.repeat):
            eps_b = run_baseline(cfg, records, args.buckets)
            eps_s, summary = run_streamrec(trainer_cfg(tmp), records)
            best_b, best_s = max(best_b, eps_b), max(best_s, eps_s)
        print(f"baseline hashed nn.EmbeddingBag DeepFM: {best_b:,.0f} examples/s")
        print(f"streamrec trainer (cuckoo PS, async):  {best_s:,.0f} examples/s")
        print(f"throughput ratio streamrec/baseline: {best_s / best_b:.2f}x (goal >= 0.8x)")
        print(f"progressive click AUC {summary['auc']:.4f} vs popularity {summary['baseline_auc']:.4f}, "
              f"rows {summary['rows']}")
        fr = run_freshness(tmp, records, args.rate, args.seconds)
        print(f"freshness at sparse_sync_interval=1s, {args.rate:.0f} examples/s produced: "
              f"p50 {fr['p50']:.2f}s  p99 {fr['p99']:.2f}s (goal p99 <= 5s; {fr['samples']} samples, "
              f"{fr['syncs']} syncs, {fr['examples']} examples)")


if __name__ == "__main__":
    main()
