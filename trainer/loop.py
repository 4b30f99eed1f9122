"""The embedded async trainer: a reader thread feeds batches to worker threads; sync and
snapshots happen between batches on the reader's thread.

Progressive validation falls out of the step: the forward pass that computes the gradients uses
the weights from before this batch's update, so its scores are recorded (with the event time,
label and ``1/sample_rate`` weight) before anything is pushed. Two workers run with no barrier;
the only pause is a snapshot, which waits for in-flight batches so that the saved stream
position matches exactly the updates in the saved state.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from schemas.spec import FeatureSpec
from serving.ps import ServingPS
from trainer import metrics, snapshot
from trainer.batch import Deduper, ExampleBatch, build_batch
from trainer.config import TrainerConfig
from trainer.evaluation import ProgressiveEvaluator, correct_sampled, plot, write_csv
from trainer.model import pool, stacked_index, stacked_pool
from trainer.ps import TrainingPS, make_model, model_shape

log = logging.getLogger(__name__)


class ExampleSource(Protocol):
    """Where TrainingExample records come from (archive range, Kafka topic, memory)."""

    name: str

    def read(self, max_records: int, timeout_s: float) -> tuple[list[dict[str, Any]], int]:
        """Up to ``max_records`` records and the newest ingest time among them (wall ms)."""
        ...

    def position(self) -> Any:
        """JSON-able position just after everything ``read`` returned so far."""
        ...

    def seek(self, position: Any) -> None: ...

    @property
    def exhausted(self) -> bool:
        """True when a bounded source has nothing more (an online source never is)."""
        ...

    def close(self) -> None: ...


_STOP = object()


def _empty(dim: int) -> np.ndarray:
    return np.zeros((0, dim), dtype=np.float32)


class Trainer:
    """One training PS, ``cfg.workers`` async workers, a serving PS fed by touched-key sync.

    What it learns from and predicts is the feature spec's: a table per slot it uses, its dense
    features, one head per label (the first is the evaluated one)."""

    def __init__(self, cfg: TrainerConfig, spec: FeatureSpec, serving: Any = None,
                 ps: TrainingPS | None = None) -> None:
        """``serving``: a ServingPS (default: a new one) or a sink with its push methods (DeltaPublisher);
        ``ps``: the training PS (default: this process's; a shard of it when distributed)."""
        self.cfg = cfg
        self.spec = spec
        self.slots = spec.model_slots
        self.ps = ps if ps is not None else TrainingPS(cfg, spec)
        self.serving = serving if serving is not None else ServingPS(self.ps.slot_dims())
        self.evaluator = ProgressiveEvaluator(cfg.eval_window_ms, cfg.eval_lateness_ms, cfg.baseline_prior)
        self.dedup = Deduper(cfg.dedup_capacity)
        self.positions: dict[str, Any] = {}
        self.examples = 0
        self.stop_requested = False  # set from another thread or a signal handler: stop after this batch
        self.steps = 0
        self.stream_event_ms = 0
        self.freshness: list[tuple[int, int]] = []  # (sync wall ms, freshness ms) right after each sync
        self.last_snapshot: Path | None = None
        self.resumed_from: dict[str, Any] | None = None  # stream positions of the restored snapshot
        self.on_snapshot: Callable[[Path], None] | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=cfg.queue_batches)
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._last_sparse = self._last_dense = self._last_snap = self._last_evict = time.monotonic()
        self._examples_at_snap = 0
        self._same_dim = len({spec.settings(s).dim for s in self.slots}) == 1
        self._deletes: dict[int, list[np.ndarray]] = {}  # slot number -> ids evicted since the last sync

    # ---- restore ----------------------------------------------------------------------------
    def restore(self, path: Path | None = None) -> Path | None:
        """Load the newest (or given) snapshot; return its path, None when there is none."""
        path = path or snapshot.latest(self.cfg.snapshot_dir)
        if path is None:
            return None
        snap = snapshot.read(path)
        self._check_model(path, snap["state"].get("model"))
        self.ps.store.load(snap["embedding"])
        self.ps.model.load_state_dict(snap["dense"]["model"])
        self.ps.opt.load_state_dict(snap["dense"]["optimizer"])
        st = snap["state"]
        self.ps.dense_version = st["dense_version"]
        self.ps.keep_rate = st["keep_rate"]
        if "neg_kept" in st:
            self.ps.neg_kept[:], self.ps.neg_total[:] = st["neg_kept"], st["neg_total"]
        self.ps.applied_event_ms = st["applied_event_ms"]
        self.positions = st["positions"]
        self.resumed_from = {"snapshot": str(path), "positions": dict(st["positions"]), "examples": st["examples"]}
        self.examples = st["examples"]
        self.stream_event_ms = st["stream_event_ms"]
        self.evaluator = snap["evaluator"]
        self.dedup.load(snap["dedup"])
        self.last_snapshot = path
        self._examples_at_snap = self.examples
        if getattr(self.serving, "needs_full_sync", True):
            # an in-process serving PS restarts from the restored weights: everything is "touched"
            self.full_sync()
        else:
            # replicas bootstrap from snapshots and hold what the deltas since carried: no full copy,
            # only the dense weights (touched rows follow as the replayed stream touches them)
            self.ps.touched()
            self.sync_dense()
        log.info("restored %s: %d examples, positions %s", path, self.examples, self.positions)
        return path

    # ---- the loop -----------------------------------------------------------------------------
    def run(self, source: ExampleSource, stop_when_idle_s: float | None = None,
            max_examples: int | None = None, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Train on ``source`` until it is exhausted, idle for ``stop_when_idle_s``, or enough examples."""
        if source.name in self.positions:
            source.seek(self.positions[source.name])
        self._start_workers()
        idle_since = time.monotonic()
        try:
            while self._error is None:
                records, ingest_ms = source.read(self.cfg.batch_size, self.cfg.poll_timeout_s)
                now = time.monotonic()
                position = source.position()
                if records:
                    idle_since = now
                    fresh = self.dedup.filter(records)
                    metrics.DUPLICATES.inc(len(records) - len(fresh))
                    if fresh:
                        batch = build_batch(fresh, self.spec, ingest_ms)
                        self._put(batch)
                        self.examples += len(fresh)
                        self.stream_event_ms = max(self.stream_event_ms, int(batch.ts_ms.max()))
                        if progress:
                            progress(len(fresh))
                self.positions[source.name] = position  # the batch holding these records is queued
                idle = stop_when_idle_s is not None and now - idle_since > stop_when_idle_s
                if self.stop_requested or (not records and (source.exhausted or idle)):
                    break  # a stop request does not wait for a quiet stream: this batch is queued
                self._periodic()
                if max_examples is not None and self.examples >= max_examples:
                    break
            self._drain()
            self.evict()  # what the final snapshot leaves out (expired rows), serving drops too
            self.sync_sparse()
            self.sync_dense()
        finally:
            self._stop_workers()
        if self._error is not None:
            raise RuntimeError("a trainer worker failed") from self._error
        return self.summary()

    def finish(self) -> dict[str, Any]:
        """Close every evaluation window, write the CSV and the plot."""
        for row in self.evaluator.flush():
            self._publish_window(row)
        self.write_reports()
        return self.summary()

    def write_reports(self) -> None:
        if self.cfg.metrics_csv:
            write_csv(self.evaluator.rows, self.cfg.metrics_csv)
        if self.cfg.plot and self.evaluator.rows:
            plot(self.evaluator.rows, self.cfg.plot)

    def summary(self) -> dict[str, Any]:
        fr = np.array([f for _, f in self.freshness], dtype=np.float64)
        return {
            **self.evaluator.summary(),
            "examples_read": self.examples,
            "duplicates": self.dedup.dropped,
            "rows": self.ps.num_rows(),
            "serving_rows": self.serving.num_rows(),
            "freshness_p50_ms": float(np.percentile(fr, 50)) if fr.size else float("nan"),
            "freshness_p99_ms": float(np.percentile(fr, 99)) if fr.size else float("nan"),
            "snapshot": str(self.last_snapshot) if self.last_snapshot else None,
            "resumed_from": self.resumed_from,
        }

    # ---- periodic work on the reader thread ------------------------------------------------------
    def _periodic(self) -> None:
        self._periodic_sync()
        if self._snapshot_due_by_time() or self._snapshot_due_by_count():
            self.snapshot()

    def _snapshot_due_by_time(self) -> bool:
        return self.cfg.snapshot_every_s > 0 and time.monotonic() - self._last_snap >= self.cfg.snapshot_every_s

    def _snapshot_due_by_count(self) -> bool:
        return (self.cfg.snapshot_every_examples > 0
                and self.examples - self._examples_at_snap >= self.cfg.snapshot_every_examples)

    def _periodic_sync(self) -> None:
        """Touched rows and dense weights to serving, expiry: local work, no snapshot."""
        now = time.monotonic()
        if now - self._last_sparse >= self.cfg.sparse_sync_interval_s:
            self.sync_sparse()
        if now - self._last_dense >= self.cfg.dense_sync_interval_s:
            self.sync_dense()
        if now - self._last_evict >= self.cfg.evict_interval_s:
            self.evict()

    def evict(self) -> None:
        """Evict rows past their slot's TTL; serving is told at the next sparse sync."""
        self._last_evict = time.monotonic()
        evicted = self.ps.store.evict_expired_ids()
        for name, ids in evicted.items():
            if len(ids):
                self._deletes.setdefault(self.ps.store.numbers[name], []).append(ids)
        if any(len(v) for v in evicted.values()):
            log.info("evicted expired rows: %s", {k: len(v) for k, v in evicted.items()})

    def sync_sparse(self) -> int:
        """Push the rows touched since the last sync (embeddings only) to the serving PS."""
        self._last_sparse = time.monotonic()
        event_ms, ingest_ms = self.ps.applied_event_ms, self.ps.applied_ingest_ms
        oldest_ms = self.ps.take_oldest_ingest()
        deletes, self._deletes = self._deletes, {}
        for slot, parts in deletes.items():  # before the rows: an id evicted, then trained again, is live
            self.serving.delete_rows(slot, np.concatenate(parts))
        n = 0
        for slot, ids, rows in self.ps.touched():
            self.serving.push_slot(slot, ids, rows)
            n += len(ids)
        self.serving.mark_synced(event_ms, ingest_ms, oldest_ms)
        metrics.SYNCED_ROWS.inc(n)
        now_ms = int(time.time() * 1000)
        if ingest_ms:
            fresh = now_ms - ingest_ms
            self.freshness.append((now_ms, fresh))
            metrics.FRESHNESS.set(fresh / 1000)
            metrics.FRESHNESS_HIST.observe(fresh / 1000)
        metrics.FRESHNESS_EVENT.set(max(self.stream_event_ms - event_ms, 0) / 1000)
        metrics.ROWS.set(self.ps.num_rows())
        return n

    def sync_dense(self) -> None:
        self._last_dense = time.monotonic()
        self.serving.push_dense(self.ps.dense_state(), self.serving_meta())

    def serving_meta(self) -> dict[str, Any]:
        """What serving needs beside the weights: the spec they were trained under and the model's shape."""
        c = self.cfg
        return {"spec": self.spec.model_dump(mode="json"), "model": model_shape(c, self.spec),
                "keep_rate": self.ps.keep_rate if c.loss_weighting == "none" else 1.0,
                "keep_rates": self.ps.keep_rates() if c.loss_weighting == "none" else [1.0] * len(self.spec.labels),
                "dense_version": self.ps.dense_version}

    def _check_model(self, path: Path, saved: dict[str, Any] | None) -> None:
        """A snapshot restores only under the spec shape it was trained with (slots, dims, dense, labels)."""
        now = self.spec.model_signature()
        if saved is None or saved == now:
            return
        diff = [f"{k}: snapshot {saved.get(k)} != spec {v}" for k, v in now.items() if saved.get(k) != v]
        raise ValueError(f"snapshot {path} was trained under another feature spec ({'; '.join(diff)}); "
                         "start a new model (another trainer.snapshot_dir, e.g. after `train --batch` over the "
                         "archive, which reads hours of older specs too)")

    def full_sync(self) -> None:
        """Push every row of the training tables (after a restore: serving starts consistent)."""
        self.ps.touched()  # everything is pushed below; clear the marks restored with the tables
        for slot, ids, rows in self.ps.all_rows():
            self.serving.push_slot(slot, ids, rows)
        self.serving.mark_synced(self.ps.applied_event_ms, 0)
        self.sync_dense()

    def snapshot(self) -> Path:
        """Quiesce the workers, then write an atomic snapshot with the matching stream positions."""
        self._drain()
        self.evict()  # a snapshot never saves expired rows: evict them here too, so serving matches it
        self._last_snap = time.monotonic()
        self._examples_at_snap = self.examples
        state = {
            "positions": self.positions, "examples": self.examples, "dense_version": self.ps.dense_version,
            "keep_rate": self.ps.keep_rate, "applied_event_ms": self.ps.applied_event_ms,
            "stream_event_ms": self.stream_event_ms, "written_at_ms": int(time.time() * 1000),
            "model": self.spec.model_signature(),
            "neg_kept": self.ps.neg_kept.tolist(), "neg_total": self.ps.neg_total.tolist(),
            "serving": self.serving_meta(),
        }
        position = getattr(self.serving, "position", None)
        if position is not None:  # deltas published so far are all in this state: replicas resume after them
            state["params"] = position()
        dense = {"model": self.ps.model.state_dict(), "optimizer": self.ps.opt.state_dict()}
        path = snapshot.write(self.cfg.snapshot_dir, self.ps.store, dense, self.evaluator,
                              self.dedup.state(), state, self.cfg.snapshot_keep)
        self.last_snapshot = path
        metrics.SNAPSHOTS.inc()
        if self.cfg.metrics_csv:
            write_csv(self.evaluator.rows, self.cfg.metrics_csv)
        if self.on_snapshot:
            self.on_snapshot(path)
        return path

    # ---- workers ------------------------------------------------------------------------------
    def _put(self, batch: ExampleBatch) -> None:
        while self._error is None:
            try:
                self._queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue

    def _drain(self) -> None:
        """Wait until every queued batch is applied (or a worker failed)."""
        while self._error is None and self._queue.unfinished_tasks:
            time.sleep(0.001)

    def _start_workers(self) -> None:
        self._threads = [threading.Thread(target=self._work, name=f"trainer-worker-{i}", daemon=True)
                         for i in range(self.cfg.workers)]
        for t in self._threads:
            t.start()

    def _stop_workers(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            t.join()
        self._threads = []

    def _work(self) -> None:
        torch.set_num_threads(self.cfg.torch_threads)
        replica = make_model(self.cfg, self.spec)
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if self._error is None:
                    self.step(replica, item)
            except BaseException as e:  # surfaced on the reader thread
                log.exception("worker step failed")
                self._error = e
            finally:
                self._queue.task_done()

    def step(self, replica: torch.nn.Module, batch: ExampleBatch) -> np.ndarray:
        """Pull, forward, record progressive scores, backward, push. Returns the raw scores.

        An empty batch is a valid step (a rank with nothing to read still takes part in the
        exchanges of a distributed step): it pushes zero gradients and records nothing."""
        cfg = self.cfg
        n = len(batch)
        now_s = int(batch.ts_ms.max() // 1000) if n else 0
        self.ps.pull_dense(replica)
        slots = self.slots
        pulled = self.ps.pull_batch(slots, [batch.bags[s][0] for s in slots], now_s)
        leaves: list[torch.Tensor] = []
        if self._same_dim:  # one leaf, one gather, one scatter-add for all slots
            counts = [len(u) for u, _, _ in pulled]
            gather, owner = stacked_index([inv for _, _, inv in pulled], [batch.bags[s][1] for s in slots],
                                          n, counts)
            leaf = torch.from_numpy(np.concatenate([r for _, r, _ in pulled])).requires_grad_(True)
            pooled = stacked_pool(leaf, torch.from_numpy(gather), torch.from_numpy(owner), n, len(slots))
            leaves.append(leaf)
        else:
            pooled = []
            for slot, (_, rows, inv) in zip(slots, pulled, strict=True):
                leaf = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).requires_grad_(True)
                pooled.append(pool(leaf, torch.from_numpy(inv.astype(np.int64)),
                                   torch.from_numpy(batch.bags[slot][1])))
                leaves.append(leaf)
        logits = replica(pooled, torch.from_numpy(batch.dense))
        y = torch.from_numpy(batch.labels)
        sr = batch.sample_rate.astype(np.float64)
        neg = batch.labels[:, 0] == 0
        keep_rate = float(sr[neg].min()) if neg.any() else None
        weight = None
        if cfg.loss_weighting == "inverse_sample_rate":
            weight = torch.from_numpy((1.0 / sr).astype(np.float32))[:, None].expand_as(y)
        # summed, not averaged: a row's gradient is the sum over its occurrences, the scale the
        # in-table Adagrad/FTRL expect (Adam on the dense part is invariant to the scale)
        loss = F.binary_cross_entropy_with_logits(logits, y, weight=weight, reduction="sum")
        replica.zero_grad(set_to_none=True)
        loss.backward()
        # progressive validation: these scores come from the weights before this batch's update
        p = torch.sigmoid(logits[:, 0].detach()).double().numpy()
        kr = keep_rate if keep_rate is not None else self.ps.keep_rate
        scored = correct_sampled(p, kr) if cfg.loss_weighting == "none" else p
        self._record(batch, scored, 1.0 / sr)
        uniqs = [u for u, _, _ in pulled]
        if self._same_dim:
            grads = leaves[0].grad.numpy()
            bounds = np.cumsum([0, *(len(u) for u in uniqs)])
            per_slot = [grads[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        else:
            per_slot = [leaf.grad.numpy() for leaf in leaves]
        self.ps.push_batch(slots, uniqs, per_slot, now_s)
        self.ps.push_dense([q.grad for q in replica.parameters()])
        if n:
            self.ps.count_negatives(batch.labels, batch.sample_rate)
            self.ps.applied(int(batch.ts_ms.max()), batch.ingest_ms, keep_rate)
        metrics.EXAMPLES.inc(n)
        metrics.STEPS.inc()
        self.steps += 1
        return p

    def _record(self, batch: ExampleBatch, scored: np.ndarray, weights: np.ndarray) -> None:
        """Progressive validation of one step's scores (the distributed trainer gathers them on rank 0)."""
        if len(batch):
            for row in self.evaluator.record(batch.ts_ms, batch.item_ids, batch.labels[:, 0], scored, weights):
                self._publish_window(row)

    def score(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Raw first-head probabilities of records under the current training state (no update)."""
        b = build_batch(records, self.spec)
        pooled = []
        for slot in self.slots:
            fids, offsets = b.bags[slot]
            uniq, inv = np.unique(fids, return_inverse=True)
            rows = self.ps.rows(slot, uniq)[0] if len(uniq) else _empty(self.ps.store.dim(slot))
            pooled.append(pool(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)),
                               torch.from_numpy(inv.astype(np.int64)), torch.from_numpy(offsets)))
        with torch.no_grad():
            logits = self.ps.model(pooled, torch.from_numpy(b.dense))
        return torch.sigmoid(logits[:, 0]).double().numpy()

    @staticmethod
    def _publish_window(row: dict[str, float]) -> None:
        metrics.AUC.set(row["auc"])
        metrics.BASELINE_AUC.set(row["baseline_auc"])
        metrics.LOGLOSS.set(row["logloss"])
