"""The distributed trainer: one process per rank, in lockstep, each reading its own partitions.

Every iteration, each rank reads up to ``batch_size`` examples from its own source (its Kafka
partitions, its rows of the archive), then all ranks exchange one control row::

    [examples in my batch, I am done, snapshot now (rank 0's clock), my event time (s),
     sync to serving now (rank 0's clock), FIDs I will ask of rank 0, ..., of rank world-1]

which gives every rank the split sizes of the step's exchanges and the same view of the job: if
any rank has examples, all of them step (a rank without any takes part with an empty batch, so
the owners of its shard still serve the others); the loop ends when every rank is done; a
snapshot is taken by all ranks after the same step. Syncs to serving happen at the same steps
too: each rank publishes the touched rows of its own shard (rank 0 also the dense weights) under
the same delta version, so a replica following the params topic holds the union of the shards.
Progressive validation happens on rank 0, which gathers every step's scores: one curve for the
job, in the order the job trained.

Snapshots are written per shard, in parallel, each rank its own atomic ``snap-<seq>`` under
``<snapshot_dir>/shard-<rank>-of-<world>/`` (its table shard, the dense weights, its stream
positions and dedup memory; rank 0 also the evaluator). A restore takes the newest ``seq`` that
every rank has complete, so a crash while some ranks were writing falls back to the previous one.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from schemas.spec import FeatureSpec
from trainer import metrics, snapshot
from trainer.batch import ExampleBatch, build_batch
from trainer.config import TrainerConfig
from trainer.distributed import launch, routing
from trainer.distributed.comm import Comm
from trainer.distributed.sharded import EVAL_COLS, ShardedPS
from trainer.loop import ExampleSource, Trainer
from trainer.ps import make_model

log = logging.getLogger(__name__)

N_EXAMPLES, DONE, SNAPSHOT, NOW_S, SYNC, COUNTS = 0, 1, 2, 3, 4, 5  # columns of the control row
SYNC_SPARSE, SYNC_DENSE = 1, 2  # bits of the SYNC column


def shard_dir(root: Path, rank: int, world: int) -> Path:
    return root / f"shard-{rank}-of-{world}"


class DistributedTrainer(Trainer):
    """A ``Trainer`` over a ``ShardedPS``; ``examples`` counts the whole job's, ``local_examples`` this rank's."""

    def __init__(self, cfg: TrainerConfig, spec: FeatureSpec, comm: Comm, serving: Any = None) -> None:
        """``serving``: this rank's delta publisher (its shard's rows), or None for an in-process serving PS."""
        self.comm = comm
        if cfg.distributed.pin_cores:  # ranks of torchrun sharing this host
            launch.pin_local_rank()
        super().__init__(cfg, spec, serving=serving, ps=ShardedPS(cfg, spec, comm, (COUNTS, N_EXAMPLES, NOW_S)))
        if hasattr(self.serving, "version"):  # every rank writes the same version numbers: start from the newest
            self.serving.version = max(int(v) for v in comm.all_objects(self.serving.version))
        self.local_examples = 0
        self.read_by_partition: Counter[str] = Counter()
        self._ctrl = np.zeros((comm.world, COUNTS + comm.world), np.int64)
        self.dir = shard_dir(cfg.snapshot_dir, comm.rank, comm.world)

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, source: ExampleSource, stop_when_idle_s: float | None = None,
            max_examples: int | None = None, progress: Any = None) -> dict[str, Any]:
        """Train in lockstep until every rank is done. The next batch is read and built while the
        step's rows travel (``ShardedPS.start_pull``), so a rank ahead of the others works instead of
        waiting, and its requests travel with the step's gradients (``ShardedPS.finish_step``); not
        before a snapshot (it holds the dedup memory and positions of exactly what was trained) or
        after the last step."""
        cfg = self.cfg
        if source.name in self.positions:
            source.seek(self.positions[source.name])
        torch.set_num_threads(cfg.torch_threads)
        replica = make_model(cfg, self.spec)
        self._idle_since = time.monotonic()
        self._enough = False
        batch, done = self._next(source, False, stop_when_idle_s, max_examples)
        ctrl = self.ps.open_step(*self._opening(batch, done))
        while True:
            self._ctrl = ctrl
            total = int(ctrl[:, N_EXAMPLES].sum())
            if total:
                self.ps.start_pull(self.slots)  # the step's rows travel while the next batch is built
                self.examples += total
            trained, last = batch, bool(ctrl[:, DONE].all())
            snap = bool(ctrl[:, SNAPSHOT].any()) or self._snapshot_due_by_count()
            ahead = None if last or snap else self._next(source, total > 0, stop_when_idle_s, max_examples)
            if total:
                self.step(replica, trained)  # collects the rows, stages the gradients: finish_step sends them
                self.local_examples += len(trained)
                if len(trained):
                    self.stream_event_ms = max(self.stream_event_ms, int(trained.ts_ms.max()))
            if ahead is None:
                following = self.ps.finish_step()
            else:
                batch, done = ahead
                following = self.ps.finish_step(*self._opening(batch, done))
            if total:
                self._evaluate(self.ps.eval_rows)
                if progress:
                    progress(total)
            self._count_partitions(source)
            self.positions[source.name] = trained.position[source.name]
            if snap:
                self.snapshot()
            self._sync(int(ctrl[0, SYNC]))
            if last:
                break
            if following is None:
                batch, done = self._next(source, total > 0, stop_when_idle_s, max_examples)
                following = self.ps.open_step(*self._opening(batch, done))
            ctrl = following
        self.sync_sparse()
        self.sync_dense()
        return self.summary()

    def _opening(self, batch: ExampleBatch, done: bool) -> tuple[np.ndarray, routing.Requests]:
        """The control row and FID requests that open the step training ``batch``."""
        comm = self.comm
        req = routing.requests([batch.bags[s][0] for s in self.slots], comm.world)
        row = np.zeros(COUNTS + comm.world, np.int64)
        row[N_EXAMPLES], row[DONE] = len(batch), done
        row[SNAPSHOT] = comm.rank == 0 and self._snapshot_due_by_time()
        row[NOW_S] = int(batch.ts_ms.max() // 1000) if len(batch) else 0
        row[SYNC] = self._sync_due() if comm.rank == 0 else 0
        row[COUNTS:] = req.counts
        return row, req

    def _next(self, source: ExampleSource, busy: bool, stop_when_idle_s: float | None,
              max_examples: int | None) -> tuple[ExampleBatch, bool]:
        """This rank's next batch (its source position after it in ``batch.position``) and whether it is its last."""
        cfg = self.cfg
        records: list[dict[str, Any]] = []
        ingest_ms = 0
        if not self._enough:  # a busy job polls without waiting: the others should not wait for an idle rank
            records, ingest_ms = source.read(cfg.batch_size, 0.0 if busy else cfg.poll_timeout_s)
        fresh = self.dedup.filter(records)
        metrics.DUPLICATES.inc(len(records) - len(fresh))
        batch = build_batch(fresh, self.spec, ingest_ms)
        batch.position = {source.name: source.position()}
        now = time.monotonic()
        if records:
            self._idle_since = now
        idle = stop_when_idle_s is not None and now - self._idle_since > stop_when_idle_s
        # idle is not final: a rank that is idle while others train goes on reading its partitions
        self._enough = self._enough or self.stop_requested or (
            max_examples is not None and self.examples + len(batch) >= max_examples)
        done = self._enough or (not records and (source.exhausted or idle or self.stop_requested))
        return batch, done

    def _sync_due(self) -> int:
        """On rank 0: which syncs to serving are due (the ranks' deltas share versions, so all sync together)."""
        now = time.monotonic()
        return ((SYNC_SPARSE if now - self._last_sparse >= self.cfg.sparse_sync_interval_s else 0)
                | (SYNC_DENSE if now - self._last_dense >= self.cfg.dense_sync_interval_s else 0))

    def _sync(self, due: int) -> None:
        if due & SYNC_SPARSE:
            self.sync_sparse()
        if due & SYNC_DENSE:
            self.sync_dense()
        if time.monotonic() - self._last_evict >= self.cfg.evict_interval_s:  # local: this shard's rows
            self.evict()

    def _count_partitions(self, source: ExampleSource) -> None:
        taken = getattr(source, "take_counts", None)
        if taken is not None:
            self.read_by_partition.update(taken())

    def _record(self, batch: ExampleBatch, scored: np.ndarray, weights: np.ndarray) -> None:
        """Stage this rank's scores for rank 0 (they travel with the gradients; see ``ShardedPS``)."""
        n = len(batch)
        packed = np.empty((n, EVAL_COLS), np.int64)
        packed[:, 0], packed[:, 1] = batch.ts_ms, batch.item_ids
        for j, col in enumerate((batch.labels[:, 0].astype(np.float64), scored, weights), start=2):
            packed[:, j] = np.ascontiguousarray(col, np.float64).view(np.int64)
        self.ps.stage_eval(packed)

    def _evaluate(self, rows: np.ndarray) -> None:
        """On rank 0: every rank's scored rows of the step, in rank order."""
        if not len(rows):
            return
        f = np.ascontiguousarray(rows[:, 2:]).view(np.float64)
        for row in self.evaluator.record(rows[:, 0], rows[:, 1], f[:, 0], f[:, 1], f[:, 2]):
            self._publish_window(row)

    # ---- snapshots --------------------------------------------------------------------------------
    def snapshot(self) -> Path:
        """Every rank writes its shard at the same step, under one agreed sequence number."""
        self._last_snap = time.monotonic()
        self._examples_at_snap = self.examples
        seq = max(int(s) for s in self.comm.all_objects(snapshot.next_seq(self.dir)))
        state = {
            "positions": self.positions, "examples": self.examples, "local_examples": self.local_examples,
            "rank": self.comm.rank, "world": self.comm.world, "dense_version": self.ps.dense_version,
            "keep_rate": self.ps.keep_rate, "applied_event_ms": self.ps.applied_event_ms,
            "stream_event_ms": self.stream_event_ms, "written_at_ms": int(time.time() * 1000),
            "model": self.spec.model_signature(), "serving": self.serving_meta(),
        }
        position = getattr(self.serving, "position", None)
        if position is not None:  # this rank's deltas so far are all in this state
            state["params"] = position()
        dense = {"model": self.ps.model.state_dict(), "optimizer": self.ps.opt.state_dict()}
        path = snapshot.write(self.dir, self.ps.store, dense, self.evaluator, self.dedup.state(), state,
                              max(self.cfg.snapshot_keep, 2), seq=seq)
        self.last_snapshot = path
        metrics.SNAPSHOTS.inc()
        self.write_reports()
        if self.on_snapshot:
            self.on_snapshot(path)
        return path

    def restore(self, path: Path | None = None) -> Path | None:
        """Load the newest snapshot every rank has (same world size); None when there is none."""
        mine = snapshot.seqs(self.dir)
        common = set.intersection(*(set(s) for s in self.comm.all_objects(mine)))  # type: ignore[arg-type]
        if not common:
            others = sorted(p.name for p in self.cfg.snapshot_dir.glob("shard-*-of-*")
                            if not p.name.endswith(f"-of-{self.comm.world}") and snapshot.seqs(p))
            if others:
                raise ValueError(f"{self.cfg.snapshot_dir} holds snapshots of another world size "
                                 f"({', '.join(others)}), "
                                 f"none of {self.comm.world} ranks: run with that many ranks, or re-shard first "
                                 "(python -m trainer.distributed.reshard --help)")
            return None
        got = super().restore(snapshot.path_of(self.dir, max(common)))
        self.local_examples = int(json.loads((got / "state.json").read_text()).get("local_examples", 0))
        return got

    # ---- reports: one job ----------------------------------------------------------------------------
    def write_reports(self) -> None:
        if self.comm.rank == 0:  # the evaluator of the job lives on rank 0
            super().write_reports()

    def summary(self) -> dict[str, Any]:
        """The job's summary (a collective: every rank calls it; rank 0's is complete)."""
        local = {"rank": self.comm.rank, "examples_read": self.local_examples, "duplicates": self.dedup.dropped,
                 "rows": self.ps.num_rows(), "read_by_partition": dict(self.read_by_partition),
                 "positions": self.positions}
        ranks = self.comm.all_objects(local)
        out = super().summary()
        out.update({
            "world": self.comm.world, "examples_read": sum(r["examples_read"] for r in ranks),
            "duplicates": sum(r["duplicates"] for r in ranks), "rows": sum(r["rows"] for r in ranks),
            "rows_per_shard": [r["rows"] for r in ranks],
            "shard_balance": routing.balance([r["rows"] for r in ranks]), "ranks": ranks,
        })
        return out
