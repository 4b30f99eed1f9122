"""Kafka sources and sinks of raw bytes for the PyFlink job.

Sources are Kafka tables (``table_ddl``) read as raw key and value bytes with the Kafka timestamp
as event time; sinks write raw bytes (``ByteArraySchema``). Messages are Avro single-object
encoded; decoding happens in the Python join with the project's codec, where an undecodable
message becomes a dead letter instead of failing the job.

A finite run (tests, benchmarks, the demo) is bounded by the exact end offsets the producer
recorded (``StopOffsets``): it ends where that input ends even if more is produced meanwhile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pyflink.common.serialization import ByteArraySchema
from pyflink.datastream.connectors.kafka import DeliveryGuarantee, KafkaRecordSerializationSchema, KafkaSink

from jobs.flink.config import FlinkConfig
from jobs.flink.feed import StopOffsets  # {topic: {partition: end offset (exclusive)}}

if TYPE_CHECKING:
    from streamrec.config import KafkaConfig


def load_stop_offsets(path: Path) -> StopOffsets:
    """Read ``{"topic": {"0": 123, ...}}`` as written by ``feed.write_offsets``."""
    raw = json.loads(Path(path).read_text())
    return {t: {int(p): int(o) for p, o in parts.items()} for t, parts in raw.items()}


def client_properties(kafka: KafkaConfig, cfg: FlinkConfig) -> dict[str, str]:
    """Java client properties of every source and sink: those of ``kafka.security`` (protocol, SASL
    login, PEM truststore), then ``flink.kafka_properties``. They hold the SASL password: they go
    into the job graph, never into a log line or a command line."""
    return {**kafka.security.java(), **cfg.kafka_properties}


def sink(bootstrap: str, topic: str, cfg: FlinkConfig, properties: dict[str, str]) -> KafkaSink:
    """A bytes sink to ``topic``.

    Exactly-once: each subtask writes into a Kafka transaction that commits when the checkpoint
    completes, so a ``read_committed`` reader sees each record once, whatever restarts happen;
    the transactional ids (``<job name>-<topic>-<subtask>-<n>``) let a restarted job abort what
    its predecessor left open. At-least-once: records are flushed at each checkpoint and a
    restart may write some again (consumers drop them by example id)."""
    b = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(ByteArraySchema())
            .build()
        )
        .set_property("linger.ms", "20")
    )
    for k, v in properties.items():
        b = b.set_property(k, v)
    if cfg.delivery_guarantee == "exactly-once":
        b = (b.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
             .set_transactional_id_prefix(f"{cfg.job_name}-{topic}")
             .set_property("transaction.timeout.ms", str(cfg.transaction_timeout_ms)))
    else:
        b = b.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    return b.build()


def interval(ms: int) -> str:
    """Milliseconds as a SQL interval literal (SECOND alone is limited to 2 digits)."""
    d, rest = divmod(ms, 86_400_000)
    h, rest = divmod(rest, 3_600_000)
    m, rest = divmod(rest, 60_000)
    return f"INTERVAL '{d} {h:02d}:{m:02d}:{rest // 1000:02d}.{rest % 1000:03d}' DAY TO SECOND(3)"


def _sql_quoted(text: str) -> str:
    return text.replace("'", "''")


def table_ddl(name: str, bootstrap: str, topic: str, group_id: str, lateness_ms: int,
              start_from: str = "earliest", stop_at: dict[int, int] | None = None,
              properties: dict[str, str] | None = None) -> str:
    """A Kafka table ``name(rid STRING, v BYTES)``: key and value as raw bytes, event time = the
    Kafka timestamp (producers stamp each log with its ts_ms), watermark = max seen - lateness - 1
    per partition (Flink's bounded out-of-orderness, the join core's definition). Reading keys
    and timestamps in Java lets the job key and time records without a Python decode operator."""
    opts = {
        "connector": "kafka", "topic": topic, "properties.bootstrap.servers": bootstrap,
        "properties.group.id": group_id, "properties.enable.auto.commit": "false",
        "key.format": "raw", "key.fields": "rid", "value.format": "raw", "value.fields-include": "EXCEPT_KEY",
        **{f"properties.{k}": v for k, v in (properties or {}).items()},
    }
    if start_from == "committed":
        opts |= {"scan.startup.mode": "group-offsets", "properties.auto.offset.reset": "earliest"}
    else:
        opts["scan.startup.mode"] = "earliest-offset"
    if stop_at is not None:
        opts |= {"scan.bounded.mode": "specific-offsets", "scan.topic-partition-discovery.interval": "0",
                 "scan.bounded.specific-offsets": ";".join(f"partition:{p},offset:{o}"
                                                           for p, o in sorted(stop_at.items()))}
    with_ = ", ".join(f"'{k}' = '{_sql_quoted(str(v))}'" for k, v in opts.items())
    return (f"CREATE TEMPORARY TABLE {name} (rid STRING, v BYTES, "
            f"ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL, "
            f"WATERMARK FOR ts AS ts - {interval(lateness_ms + 1)}) WITH ({with_})")
