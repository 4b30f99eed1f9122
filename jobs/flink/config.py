"""Settings of the PyFlink join job and of the local standalone Flink cluster (section ``flink``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from streamrec.kafka_security import no_credentials
from streamrec.section import Section


class FlinkConfig(Section):
    parallelism: int = Field(2, ge=1, description="job parallelism (= Kafka partitions for full use)")
    execution_mode: Literal["thread", "process"] = Field(
        "thread", description="Python UDF execution: thread (in the JVM via pemja, ~10x faster) or process"
    )
    state_backend: Literal["rocksdb", "hashmap"] = "rocksdb"
    checkpoint_interval_ms: int = Field(2000, ge=0, description="0 = checkpointing off")
    checkpoint_dir: str = Field(
        ".run/flink/checkpoints",
        description="checkpoint storage: a URI (hdfs://namenode:8020/flink/checkpoints, s3://bucket/path, file:///...) "
                    "or a local path (local runs)",
    )
    savepoint_dir: str = Field(".run/flink/savepoints", description="default savepoint target: a URI or a local path")
    python_executable: str = Field(
        "", description="the Python the TaskManagers run the join with (a path on their hosts, e.g. "
                        "/opt/venv/bin/python in the image); empty = the submitting interpreter (local clusters)"
    )
    ship_project: bool = Field(
        True, description="`flink submit` ships the project's packages with the job (-pyfs), so TaskManagers need "
                          "only the dependencies, not this checkout"
    )
    kafka_properties: dict[str, str] = Field(
        default_factory=dict,
        description="extra Kafka client properties for the job's sources and sinks, over those derived from "
                    "kafka.security (security.protocol, sasl.*, ssl.truststore.*); no credentials here",
    )
    source_idle_timeout_ms: int = Field(
        30_000, ge=0,
        description="a source partition without data this long stops holding the watermark back (0 = never); "
                    "else one idle partition stalls every window",
    )
    jobmanager: str = Field(
        "", description="host:port of the JobManager's REST endpoint of an existing cluster for `flink submit/stop`; "
                        "empty = the local cluster `flink up` started"
    )
    prometheus_ports: str = Field(
        "", pattern=r"^(\d+(-\d+)?)?$",
        description="the local cluster's pull Prometheus reporter (the job's counters, e.g. "
                    "flink_taskmanager_job_task_operator_streamrec_join_examples_total): a port or a range, one "
                    "port per JobManager and TaskManager (9250-9260); empty = off. It binds every interface (Flink "
                    "has no host option): for a cluster whose network you control; else use pushgateway")
    pushgateway: str = Field(
        "", pattern=r"^(https?://\S+)?$",
        description="the local cluster's push reporter: the URL of a Prometheus Pushgateway you run "
                    "(http://127.0.0.1:9091; in k8s its Service), which Flink pushes the same metrics to and "
                    "Prometheus scrapes; nothing of Flink listens. Empty = off")
    push_interval_s: int = Field(5, ge=1, description="pushgateway: seconds between pushes (the scrape lag)")
    restart_attempts: int = Field(3, ge=0, description="fixed-delay restart strategy: attempts")
    restart_delay_ms: int = Field(1000, ge=0)
    bundle_size: int = Field(1000, ge=1, description="python.fn-execution.bundle.size")
    bundle_time_ms: int = Field(100, ge=1, description="python.fn-execution.bundle.time (latency bound)")
    state_cache_size: int = Field(1000, ge=0, description="python.state.cache-size (keyed state entries)")
    object_cache_size: int = Field(
        20_000, ge=0,
        description="per subtask: decoded join states kept as Python objects (write-through; 0 = off)",
    )
    watermark_poll: int = Field(
        64, ge=1, description="the join re-reads Flink's watermark every N elements (and at every timer)"
    )
    jars: list[Path] = Field(
        default_factory=list,
        description="jars for the job (a folder = every jar in it): the Kafka connector and kafka-clients; "
                    "empty = those `streamrec setup` (or `make setup`) fetched from Maven Central",
    )
    delivery_guarantee: Literal["exactly-once", "at-least-once"] = Field(
        "exactly-once",
        description="examples and dead letters: Kafka transactions committed with each checkpoint (readers "
                    "use read_committed; output shows up at checkpoints), or at-least-once (duplicates after "
                    "a restart, dropped by example id downstream)",
    )
    transaction_timeout_ms: int = Field(
        600_000, ge=1000,
        description="exactly-once: Kafka transaction timeout; above checkpoint interval + recovery time, at most "
                    "the broker's transaction.max.timeout.ms (15 min by default)",
    )
    group_id: str = Field("streamrec-flink-join", description="Kafka consumer group of the sources")
    start_from: Literal["earliest", "committed"] = Field(
        "earliest", description="where sources start without a checkpoint: topic start or the group's offsets"
    )
    job_name: str = "streamrec-join"
    jvm_heap: str = Field("384m", description="-Xmx of the JVM that runs a local mini cluster / the client")
    # standalone cluster (deploy/flink.py): ports are picked free at `up` and written to run_dir
    run_dir: Path = Field(Path(".run/flink"), description="conf, pid, log dirs of the standalone cluster")
    taskmanagers: int = Field(1, ge=1, description="TaskManagers `flink up` starts")
    task_slots: int = Field(2, ge=1, description="slots per TaskManager")
    jobmanager_memory: str = "1024m"
    taskmanager_memory: str = "1728m"

    @field_validator("kafka_properties")
    @classmethod
    def _no_credentials(cls, v: dict[str, str]) -> dict[str, str]:
        return no_credentials(v)
