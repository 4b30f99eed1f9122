"""Feed a finite input to the Flink job: produce replay events and record exact end offsets.

A bounded Flink run stops at the offsets the producer's delivery reports gave, written as
``--stop-offsets`` JSON: exactly the input produced, whatever comes later. No PyFlink import here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import KafkaException

from streamrec.config import KafkaConfig
from streamrec.kafka import partitions_of, producer

StopOffsets = dict[str, dict[int, int]]


# (topic, key, value[, partition or None[, Kafka timestamp ms]])
Message = tuple[str, bytes | None, bytes] | tuple[str, bytes | None, bytes, int | None] \
    | tuple[str, bytes | None, bytes, int | None, int]


def produce_recorded(cfg: KafkaConfig, messages: Iterable[Message]) -> StopOffsets:
    """Produce ``Message``s in order; return {topic: {partition: last offset + 1}}.

    Every partition of every topic used is listed (0 where nothing was written), so a bounded
    source never waits on an empty partition."""
    p = producer(cfg)
    ends: StopOffsets = {}
    errors: list[str] = []

    def on_delivery(err, msg) -> None:  # noqa: ANN001 (librdkafka callback)
        if err is not None:
            errors.append(str(err))
            return
        parts = ends.setdefault(msg.topic(), {})
        parts[msg.partition()] = max(parts.get(msg.partition(), 0), msg.offset() + 1)

    topics: set[str] = set()
    for n, (topic, key, value, *extra) in enumerate(messages):
        topics.add(topic)
        where = {}
        if extra and extra[0] is not None:
            where["partition"] = extra[0]
        if len(extra) > 1:
            where["timestamp"] = extra[1]
        while True:
            try:
                p.produce(topic, value, key=key, on_delivery=on_delivery, **where)
                break
            except BufferError:
                p.poll(0.05)
        if n % 5000 == 0:
            p.poll(0)
    if p.flush(60) or errors:
        raise KafkaException(f"produce failed: {errors[:3]}")
    for topic in topics:
        parts = ends.setdefault(topic, {})
        for part in partitions_of(p, topic):
            parts.setdefault(part, 0)
    return ends


def write_offsets(path: Path, offsets: StopOffsets) -> Path:
    Path(path).write_text(json.dumps({t: {str(p): o for p, o in ps.items()} for t, ps in offsets.items()}))
    return Path(path)
