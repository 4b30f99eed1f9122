"""Kafka client helpers shared by the runners, sinks and trainer (confluent-kafka).

Tansu's high watermark is not exact, so nothing here bounds a read by it: readers stop on a
count, on exact offsets recorded when producing, or after a quiet period.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.config import KafkaConfig


def producer(cfg: KafkaConfig, **extra: Any) -> Producer:
    conf = {
        "bootstrap.servers": cfg.bootstrap,
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
        "compression.type": "lz4",
        **cfg.producer,
        **extra,
    }
    return Producer(conf)


def consumer(cfg: KafkaConfig, group: str | None = None, **extra: Any) -> Consumer:
    conf = {
        "bootstrap.servers": cfg.bootstrap,
        "group.id": group or f"streamrec-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        **cfg.consumer,
        **extra,
    }
    return Consumer(conf)


def create_topics(
    bootstrap: str, partitions: dict[str, int], timeout: float = 15.0, exist_ok: bool = True
) -> None:
    """Create topics with the given partition counts.

    Retention is set explicitly (-1): Tansu reports only configs given at creation, and some
    clients (Quix Streams) read them back.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [
        NewTopic(name, num_partitions=n, replication_factor=1,
                 config={"retention.ms": "-1", "retention.bytes": "-1"})
        for name, n in partitions.items()
    ]
    futures = admin.create_topics(new, operation_timeout=timeout)
    for fut in futures.values():
        try:
            fut.result(timeout)
        except KafkaException as e:
            if not (exist_ok and e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise


def partitions_of(client: Consumer | Producer, topic: str, timeout: float = 10.0) -> list[int]:
    md = client.list_topics(topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise KafkaException(t.error if t else f"topic {topic} not found")
    return sorted(t.partitions)


def assign_from_start(
    c: Consumer, topics: Iterable[str], offsets: dict[tuple[str, int], int] | None = None
) -> list[TopicPartition]:
    """Assign every partition of ``topics`` explicitly (no group join delay), from ``offsets`` or 0."""
    tps = []
    for topic in topics:
        for p in partitions_of(c, topic):
            tps.append(TopicPartition(topic, p, (offsets or {}).get((topic, p), 0)))
    c.assign(tps)
    return tps


def drain(
    cfg: KafkaConfig, topics: list[str], idle_s: float = 2.0, max_s: float = 120.0, batch: int = 10000
) -> Iterator[Message]:
    """Every message now in ``topics`` from offset 0: stops after ``idle_s`` without news."""
    c = consumer(cfg)
    try:
        assign_from_start(c, topics)
        deadline = time.monotonic() + max_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            msgs = c.consume(batch, timeout=0.2)
            got = False
            for m in msgs:
                if m.error() is None:
                    got = True
                    yield m
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(m.error())
            if got:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > idle_s:
                return
    finally:
        c.close()


def count_messages(cfg: KafkaConfig, topics: list[str], idle_s: float = 2.0) -> dict[str, int]:
    counts = dict.fromkeys(topics, 0)
    for m in drain(cfg, topics, idle_s=idle_s):
        counts[m.topic()] += 1
    return counts
