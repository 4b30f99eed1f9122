"""Kafka sources and sinks of raw bytes for the PyFlink job.

Values are read and written as raw bytes (``ByteArraySchema``): messages are Avro single-object
encoded, so a string schema would corrupt them; decoding happens in Python with the project's
codec, where an undecodable message becomes a dead letter instead of failing the job.

Tansu's high watermark is wrong, so a finite run is never bounded by ``latest``: it is bounded
by the exact end offsets the producer recorded (``StopOffsets``), or runs unbounded.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyflink.common.serialization import ByteArraySchema
from pyflink.datastream.connectors.kafka import (
    DeliveryGuarantee,
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
    KafkaTopicPartition,
)

from jobs.flink import compat
from jobs.flink.feed import StopOffsets  # {topic: {partition: end offset (exclusive)}}


def load_stop_offsets(path: Path) -> StopOffsets:
    """Read ``{"topic": {"0": 123, ...}}`` as written by ``feed.write_offsets``."""
    raw = json.loads(Path(path).read_text())
    return {t: {int(p): int(o) for p, o in parts.items()} for t, parts in raw.items()}


def partition_count(bootstrap: str, topic: str, timeout: float = 10.0) -> int:
    """Partitions of ``topic`` (the job's client reads it once, when it builds the graph)."""
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise RuntimeError(f"topic {topic} not found on {bootstrap}: {t.error if t else 'no metadata'}")
    return len(t.partitions)


def source(
    bootstrap: str,
    topic: str,
    group_id: str,
    start_from: str = "earliest",
    stop_at: dict[int, int] | None = None,
) -> KafkaSource:
    """A bytes source on ``topic``; bounded at ``stop_at`` offsets per partition if given."""
    compat.install()
    if start_from == "committed":
        starting = KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
    else:
        starting = KafkaOffsetsInitializer.earliest()
    b = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(topic)
        .set_group_id(group_id)
        .set_client_id_prefix(f"{group_id}-{topic}")
        .set_starting_offsets(starting)
        .set_value_only_deserializer(ByteArraySchema())
        # offsets go back to Kafka on checkpoints only (restore uses Flink's own checkpoint)
        .set_property("enable.auto.commit", "false")
    )
    if stop_at is not None:
        ends = {KafkaTopicPartition(topic, p): o for p, o in stop_at.items()}
        b = b.set_bounded(KafkaOffsetsInitializer.offsets(ends)).set_property(
            "partition.discovery.interval.ms", "0"
        )
    return b.build()


def sink(bootstrap: str, topic: str) -> KafkaSink:
    """At-least-once bytes sink: Tansu's transactions leak aborted records (STACK.md), so
    duplicates after a restart are expected and removed by consumers by example id."""
    return (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(ByteArraySchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .set_property("linger.ms", "20")
        .build()
    )
