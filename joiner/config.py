"""Settings of the online joiner (cache, RocksDB store, windows, sampling, embedded runner).

Which actions are labels and which are ignored, and what a valid feature log holds, are the
feature spec's (``[features]``, ``schemas.spec``), not the joiner's."""

from pathlib import Path
from typing import Literal

from pydantic import Field

from streamrec.section import Section


class JoinerConfig(Section):
    # ---- join semantics (joiner/core.py; the Flink job uses the same fields) ----
    window_ms: int = Field(300_000, gt=0, description="an item's window closes this long after its feature log")
    allowed_lateness_ms: int = Field(60_000, ge=0, description="watermark = max event time - this - 1")
    ttl_ms: int = Field(3 * 86_400_000, gt=0, description="feature logs stay joinable this long")
    tombstone_ms: int = Field(
        86_400_000, ge=0,
        description="after the TTL a tiny tombstone stays this long so late actions are dead-lettered 'expired'",
    )
    action_wait_ms: int | None = Field(
        None, gt=0, description="an action waits this long for its feature log, then 'no_features' (default ttl_ms)"
    )
    negative_keep_rate: float = Field(0.5, gt=0, le=1, description="r: share of negatives kept")
    seed: int = 17
    # ---- embedded runner: store ----
    state_dir: Path = Path(".run/joiner")
    cache_bytes: int = Field(256 << 20, gt=0, description="in-memory cache bound (estimated Python bytes)")
    cache_bytes_per_state_byte: float = Field(
        6.5, gt=0,
        description="estimate of a cached state's memory per byte of its serialized form (measured on MovieLens "
                    "states: 6.4 for a fresh one, 3.5 for one read back from RocksDB)",
    )
    rocksdb_write_buffer_mb: int = Field(16, gt=0, description="RocksDB memtable size per column family")
    sweep_limit: int = Field(20_000, gt=0, description="timers fired from RocksDB per poll at most (bounded sweep)")
    # ---- embedded runner: Kafka ----
    group_id: str = "streamrec-join"
    consume_batch: int = Field(10_000, gt=0, description="messages per consume() call")
    round_size: int = Field(
        2500, gt=0,
        description="messages per input partition in a round: the watermark moves only between rounds, which "
                    "start at the same offsets in every run over the same input (deterministic replays)",
    )
    checkpoint_interval_ms: int = Field(
        1000, gt=0, description="state + offsets are committed in one RocksDB WriteBatch this often"
    )
    idle_partition_ms: int = Field(
        2_000, ge=0,
        description="an input partition at its end this long stops holding the watermark back (like Flink's source "
                    "idle timeout). Longer: a pause or a broker outage shorter than this makes nothing late. "
                    "Shorter: a quiet partition delays the windows less (freshness). A run over complete input "
                    "(--stop-when-idle) lets its drained partitions go at its end",
    )
    max_message_bytes: int = Field(1 << 20, gt=0, description="larger input messages are dead-lettered 'oversize'")
    delivery: Literal["exactly-once", "at-least-once"] = Field(
        "exactly-once",
        description="exactly-once: each checkpoint's outputs and the input position in one Kafka transaction "
                    "(transactional.id = group_id; readers use read_committed); at-least-once: outputs "
                    "flushed before each checkpoint, a crash re-sends byte-identical examples",
    )
    commit_topic: str = Field(
        "streamrec-join-commits",
        description="exactly-once: the runner's position (offsets, watermark) is written here, keyed by group_id, "
                    "in each checkpoint's transaction (compacted, one partition; created if missing)",
    )
    metrics_port: int | None = Field(None, ge=0, le=65535,
                                     description="Prometheus endpoint on metrics.host: unset = off, 0 = a free port")
    log_interval_s: float = Field(10.0, gt=0, description="a metrics log line this often")
    gc_sweep_interval_s: float = Field(
        600.0, gt=0, description="between checkpoints the join state is frozen out of Python's cyclic GC; "
                                 "this often everything is unfrozen and collected once"
    )

    @property
    def action_wait(self) -> int:
        return self.action_wait_ms if self.action_wait_ms is not None else self.ttl_ms
