"""Deltas over Kafka: the trainer's publisher and the replica's reader of the params topic.

The params topic has one partition, so every replica sees the deltas in the order the trainer
wrote them (an idempotent producer keeps that order through retries). The publisher has the same
methods as ``ServingPS`` (``push_slot``, ``delete_rows``, ``mark_synced``, ``push_dense``), so the
trainer's sync code does not know which one it feeds; ``position()`` flushes and returns the
offset after the last delta, which the trainer writes into each snapshot.

A distributed trainer runs one publisher per rank on the same topic: each publishes the touched
rows of the keys it owns (the shards are disjoint, so their rows never overwrite each other), rank
0 alone the dense weights (every rank holds the same). The ranks sync at the same steps and agree
on the first version, so their versions advance together; each tags its commits with its rank.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import numpy as np
from confluent_kafka import KafkaException, TopicPartition

from serving import delta
from streamrec.kafka import consumer, create_topics, producer

log = logging.getLogger(__name__)


def ensure_topic(settings: Any) -> str:
    """Create the params topic (one partition, the configured retention) if it is missing."""
    topic = settings.kafka.topics.params
    create_topics(settings.kafka, {topic: 1},
                  config={"retention.ms": str(settings.serving.params_retention_ms), "retention.bytes": "-1"})
    return topic


def last_version(settings: Any, topic: str, timeout: float = 10.0) -> int:
    """The version of the newest delta in the topic (0 if empty): a restarted trainer counts on from it."""
    c = consumer(settings.kafka)
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout)
        if hi <= lo:
            return 0
        c.assign([TopicPartition(topic, 0, hi - 1)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                return delta.decode(m.value()).version
        raise TimeoutError(f"{topic}: could not read the last delta at offset {hi - 1}")
    finally:
        c.close()


class DeltaPublisher:
    """The trainer's sink for syncs: every call becomes messages on the params topic (see ``serving.delta``)."""

    needs_full_sync = False  # replicas bootstrap from snapshots: a restore publishes no full copy

    def __init__(self, settings: Any, start_version: int = 0, rank: int | None = None) -> None:
        """``rank``: this publisher is one shard's of a distributed trainer (see the module docstring)."""
        self.topic = ensure_topic(settings)
        self.rank = rank
        self.max_bytes = settings.serving.delta_message_bytes
        self.version = max(start_version, last_version(settings, self.topic)) + 1  # the one being written
        self._p = producer(settings.kafka, **{"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                              "compression.type": "none",
                                              "message.max.bytes": self.max_bytes + 65536})
        self._next_offset = -1
        self._error: str | None = None
        self.rows_published = 0
        self.deletes_published = 0
        self.dense_version = 0
        self._settings = settings

    # ---- the ServingPS methods ----------------------------------------------------------------
    def push_slot(self, slot: int, ids: np.ndarray, rows: np.ndarray) -> None:
        per = max(1, (self.max_bytes - 512) // (8 + 4 * rows.shape[1]))
        self._send(delta.encode_rows(self.version, slot, ids, rows, per))
        self.rows_published += len(ids)

    def delete_rows(self, slot: int, ids: np.ndarray) -> int:
        self._send(delta.encode_delete(self.version, slot, ids, (self.max_bytes - 512) // 8))
        self.deletes_published += len(ids)
        return len(ids)

    def mark_synced(self, newest_event_ms: int, newest_ingest_ms: int, oldest_ingest_ms: int = 0) -> None:
        self._commit({"event_ms": int(newest_event_ms), "ingest_ms": int(newest_ingest_ms),
                      "oldest_ingest_ms": int(oldest_ingest_ms or newest_ingest_ms)})

    def push_dense(self, state: dict[str, Any], meta: dict[str, Any]) -> None:
        if self.rank:  # another rank's copy of the same weights: only the version advances, in step with rank 0
            self._commit({"dense_version": int(meta.get("dense_version", 0))})
            return
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        self._send(delta.encode_dense(self.version, buf.getvalue(), meta, self.max_bytes - 4096))
        self.dense_version = int(meta.get("dense_version", 0))
        self._commit({"dense_version": self.dense_version})

    def num_rows(self) -> int:
        return self.rows_published

    # ---- positions ------------------------------------------------------------------------
    def position(self) -> dict[str, Any]:
        """Flush; the offset after the last delta and the last complete version (for a snapshot)."""
        self.flush()
        offset = self._next_offset
        if offset < 0:  # nothing written by this process: the topic's end
            c = consumer(self._settings.kafka)
            try:
                offset = c.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=10.0)[1]
            finally:
                c.close()
        return {"topic": self.topic, "offset": int(offset), "version": self.version - 1}

    def flush(self, timeout: float = 60.0) -> None:
        if self._p.flush(timeout):
            raise KafkaException(f"{self.topic}: deltas not acknowledged within {timeout}s")
        self._check()

    def close(self) -> None:
        self.flush()

    # ---- internals ------------------------------------------------------------------------
    def _commit(self, info: dict[str, Any]) -> None:
        if self.rank is not None:
            info = {**info, "rank": self.rank}
        self._send([delta.encode_commit(self.version, {**info, "sent_ms": int(time.time() * 1000)})])
        self.version += 1
        self._p.poll(0)

    def _send(self, messages: list[bytes]) -> None:
        self._check()
        for m in messages:
            while True:
                try:
                    self._p.produce(self.topic, m, on_delivery=self._delivered)
                    break
                except BufferError:
                    self._p.poll(0.05)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._error = f"{self.topic}: a delta was not delivered: {err}"
        elif msg.offset() + 1 > self._next_offset:
            self._next_offset = msg.offset() + 1

    def _check(self) -> None:
        if self._error:  # a lost delta would leave replicas with a gap: stop the trainer instead
            raise KafkaException(self._error)
