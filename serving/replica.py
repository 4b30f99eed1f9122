"""A serving replica: bootstrap from the newest trainer snapshot, then apply deltas from its offset.

Why this is gap-free: the trainer writes a snapshot only after flushing its publisher, and the
snapshot records the offset after the last delta it had published (``state.json: params``).
Everything those deltas carried is in the snapshot (its state is newer); everything after is in
the deltas from that offset. Overwrites and deletes are idempotent, so the rows the snapshot
already holds and a delta sends again end the same. No snapshot with an offset yet: the topic is
read from its start (the whole history, as long as retention keeps it).

A distributed trainer's snapshot is its ranks' shards at one sequence number: the replica loads
their union (the shards are disjoint) and reads the deltas on from the smallest of the ranks'
recorded offsets (each rank publishes its own shard's rows to the same topic).

A delta position that retention has deleted (a replica down longer than
``serving.params_retention_ms``) is not skipped over: the replica bootstraps again.

With ``serving.follow_deltas = false`` the replica stops after the bootstrap: it serves that
snapshot unchanged (a frozen model to compare the live one with).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, TopicPartition

from schemas.spec import FeatureSpec
from serving import delta
from serving.metrics import ReplicaMetrics
from serving.model_server import ModelServer
from serving.ps import ServingPS
from serving.transport import ensure_topic
from streamrec.kafka import consumer

log = logging.getLogger(__name__)


class Replica:
    """Serving PS + model + delta position; ``start()`` runs bootstrap and the delta loop in a thread."""

    def __init__(self, settings: Any, metrics: ReplicaMetrics | None = None) -> None:
        self.s = settings
        self.topic = settings.kafka.topics.params
        self.snapshot_dir = Path(settings.serving.snapshot_dir or settings.trainer.snapshot_dir)
        self.metrics = metrics or ReplicaMetrics()
        self.ps = ServingPS({})
        self.model = ModelServer(self.ps)
        self.version = 0
        self.offset = 0
        self.bootstrapped_from: str | None = None
        self.ready = False
        self.error: str | None = None
        self.freshness: deque[tuple[int, int]] = deque(maxlen=settings.serving.freshness_window)
        self._dense: dict[int, dict[int, bytes]] = {}
        self._dense_meta: dict[int, dict[str, Any]] = {}
        self._last_ingest = 0
        self._last_sent_ms = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- bootstrap ------------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Load the newest snapshot that records a params offset (retrying if the trainer prunes it)."""
        from trainer import snapshot
        from trainer.embedding.store import saved_rows

        for _attempt in range(5):
            try:
                for paths in self._snapshot_sets():
                    sts = [snapshot.read_for_serving(p) for p in paths]
                    params = [st["state"].get("params") for st in sts]
                    if not all(params) or any(pr.get("topic") != self.topic for pr in params) \
                            or "serving" not in sts[0]["state"]:
                        continue
                    ps = ServingPS({})
                    spec = FeatureSpec.model_validate(sts[0]["state"]["serving"]["spec"])
                    for st in sts:  # a distributed trainer's shards hold disjoint rows: their union is the model
                        for name, ids, emb in saved_rows(st["embedding"]):
                            ps.push_slot(spec.number(name), ids, emb)
                    ps.push_dense(sts[0]["dense"], sts[0]["state"]["serving"])
                    # each rank recorded the offset after its own deltas: read on from the smallest, so none
                    # published after its shard was written is missed (rows read again are overwritten by
                    # the newer ones each rank publishes after its snapshot)
                    self._install(ps, min(int(pr["offset"]) for pr in params),
                                  min(int(pr["version"]) for pr in params), ",".join(str(p) for p in paths))
                    return
                break
            except (OSError, ValueError, KeyError) as e:  # pruned under us: the next one is newer
                log.warning("snapshot read failed (%s); trying the newest again", e)
                time.sleep(0.2)
        log.info("no snapshot with a params offset under %s: reading %s from its start", self.snapshot_dir, self.topic)
        self._install(ServingPS({}), 0, 0, None)

    def _snapshot_sets(self) -> list[list[Path]]:
        """Candidate snapshots, newest first: a single trainer's ``snap-*``, then a distributed trainer's
        ``shard-<r>-of-<W>/snap-<seq>`` of every rank at each seq they all have."""
        from trainer import snapshot

        out = [[p] for p in sorted((p for p in self.snapshot_dir.glob(snapshot.PREFIX + "*") if p.is_dir()),
                                   reverse=True)]
        worlds = {int(d.name.rsplit("-of-", 1)[1]) for d in self.snapshot_dir.glob("shard-*-of-*")}
        for world in sorted(worlds):
            roots = [self.snapshot_dir / f"shard-{r}-of-{world}" for r in range(world)]
            common = set.intersection(*(set(snapshot.seqs(r)) for r in roots))
            out += [[snapshot.path_of(r, seq) for r in roots] for seq in sorted(common, reverse=True)]
        return out

    def _install(self, ps: ServingPS, offset: int, version: int, source: str | None) -> None:
        self.ps = ps
        self.model = ModelServer(ps)
        self.offset, self.version, self.bootstrapped_from = offset, version, source
        self._dense.clear()
        self._dense_meta.clear()
        self.metrics.version.set(version)
        self.metrics.rows.set(ps.num_rows())
        log.info("bootstrapped from %s: %d rows, delta offset %d, version %d", source or "nothing", ps.num_rows(),
                 offset, version)

    # ---- the delta loop -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="deltas", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.bootstrap()
                if not self.s.serving.follow_deltas:
                    self._freeze()
                    return
                if self._follow():  # True: the position is gone (retention): bootstrap again
                    continue
                return
        except Exception as e:  # surfaced by /healthz
            log.exception("delta loop failed")
            self.error = f"{type(e).__name__}: {e}"

    def _follow(self) -> bool:
        ensure_topic(self.s)  # a replica may start before the first trainer
        tp = TopicPartition(self.topic, 0)
        c = consumer(self.s.kafka, **{"auto.offset.reset": "error", "enable.partition.eof": False})
        try:
            target = c.get_watermark_offsets(tp, timeout=30)[1]  # ready once applied up to here
            c.assign([TopicPartition(self.topic, 0, self.offset)])
            next_lag = 0.0
            while not self._stop.is_set():
                for m in c.consume(1000, self.s.serving.poll_timeout_s):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._AUTO_OFFSET_RESET:
                            log.warning("delta offset %d is gone (retention): bootstrapping again", self.offset)
                            return True
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("delta consumer: %s", err)
                        continue
                    self._apply_message(m.value())
                    self.offset = m.offset() + 1
                if time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + 1.0
                    self._lag(c, tp)
                if not self.ready and self.offset >= target and self.ps.dense_state is not None:
                    self.ready = True
                    self.metrics.ready.set(1)
                    log.info("ready: delta version %d, %d rows", self.version, self.ps.num_rows())
        finally:
            c.close()
        return False

    def _freeze(self) -> None:
        """Serve the bootstrapped snapshot as it is until stopped (``serving.follow_deltas = false``)."""
        if self.bootstrapped_from is None or self.ps.dense_state is None:
            raise RuntimeError(f"serving.follow_deltas = false needs a snapshot with a params offset under "
                               f"{self.snapshot_dir}; found none")
        self.ready = True
        self.metrics.ready.set(1)
        log.info("frozen: serving %s at version %d, deltas not applied", self.bootstrapped_from, self.version)
        self._stop.wait()

    def _lag(self, c: Any, tp: TopicPartition) -> None:
        hi = c.get_watermark_offsets(tp, timeout=5, cached=False)[1]
        behind = max(hi - self.offset, 0)
        self.metrics.lag_messages.set(behind)
        self.metrics.lag_seconds.set(max(time.time() - self._last_sent_ms / 1000, 0) if behind and
                                     self._last_sent_ms else 0)
        self.metrics.rows.set(self.ps.num_rows())

    def _apply_message(self, data: bytes) -> None:
        try:
            d = delta.decode(data)
        except (ValueError, KeyError) as e:
            log.warning("skipping a message that is not a delta: %s", e)
            self.metrics.bad_deltas.inc()
            return
        self.apply(d)

    def apply(self, d: delta.Delta) -> None:
        """Apply one decoded delta message to the serving PS."""
        if d.kind == "rows":
            self.ps.push_slot(d.slot, d.ids, d.rows)
        elif d.kind == "delete":
            self.ps.delete_rows(d.slot, d.ids)
        elif d.kind == "dense":
            self._dense_part(d)
        else:
            self._commit(d)
        self.metrics.deltas.labels(d.kind).inc()

    def _dense_part(self, d: delta.Delta) -> None:
        import torch

        parts = self._dense.setdefault(d.version, {})
        parts[int(d.header["part"])] = d.payload
        if "meta" in d.header:
            self._dense_meta[d.version] = d.header["meta"]
        if len(parts) == int(d.header["parts"]) and d.version in self._dense_meta:
            state = torch.load(io.BytesIO(b"".join(parts[k] for k in sorted(parts))), weights_only=True)
            meta = self._dense_meta.pop(d.version)
            del self._dense[d.version]
            self.ps.push_dense(state, meta)
            self.metrics.dense_version.set(meta.get("dense_version", 0))

    def _commit(self, d: delta.Delta) -> None:
        h = d.header
        now = int(time.time() * 1000)
        self.version = d.version
        self._last_sent_ms = int(h.get("sent_ms", 0))
        self.metrics.version.set(d.version)
        ingest = int(h.get("ingest_ms", 0))
        if ingest > self._last_ingest:  # this delta carries updates of examples not seen before
            self._last_ingest = ingest
            self.ps.mark_synced(int(h.get("event_ms", 0)), ingest)
            fresh = now - int(h.get("oldest_ingest_ms") or ingest)
            self.freshness.append((now, fresh))
            self.metrics.freshness.observe(fresh / 1000)
            self.metrics.freshness_now.set(fresh / 1000)
        if int(h.get("rank", 0)):  # a shard's commit: dense parts come from rank 0, whose own commits prune them
            return
        for old in [v for v in self._dense if v < d.version]:  # parts of a version that never completed
            del self._dense[old]
            self._dense_meta.pop(old, None)

    # ---- reads ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        fr = np.array([f for _, f in self.freshness], dtype=np.float64)
        return {
            "ready": self.ready, "version": self.version, "offset": self.offset,
            "dense_version": self.ps.meta.get("dense_version"), "rows": self.ps.num_rows(),
            "keep_rates": self.model.keep_rates if self.ps.dense_state is not None else None,
            "bootstrapped_from": self.bootstrapped_from, "error": self.error,
            "freshness_samples": int(fr.size),
            "freshness_p50_ms": float(np.percentile(fr, 50)) if fr.size else None,
            "freshness_p99_ms": float(np.percentile(fr, 99)) if fr.size else None,
        }
