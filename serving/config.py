"""Settings of serving: the replica process (`streamrec serve`) and the deltas the trainer publishes."""

from pathlib import Path
from typing import Literal

from pydantic import Field

from streamrec.section import Section


class ServingConfig(Section):
    # --- the HTTP service ----------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="address the model server binds (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port (0 = a free port, printed at start)")
    replica_id: str = Field("", description="name in logs and metrics (default: host-pid)")
    max_candidates: int = Field(1000, gt=0, description="candidates one request may carry (more: 422)")
    max_batch: int = Field(64, gt=0, description="requests one /score/batch call may carry (more: 422)")
    log_features: bool = Field(
        True, description="write the FeatureLog of every served request (what was scored) to the features topic")
    source: str = Field("model-server", description="the FeatureLog's `source` field")
    log_ack: bool = Field(
        True, description="answer a request only once the broker acknowledged its FeatureLog (a crash of the "
        "server then never loses the log of an answered request; a failed log answers 503)")
    log_linger_ms: float = Field(0.0, ge=0, description="librdkafka linger.ms of the FeatureLog producer")
    torch_threads: int = Field(1, ge=1, description="intra-op threads of the scoring model")
    # --- deltas: trainer -> params topic -> replicas ----------------------------------------------
    publish: Literal["online", "always", "never"] = Field(
        "online", description="when `train` publishes deltas to kafka.topics.params: online runs, every run, never")
    delta_message_bytes: int = Field(
        900_000, ge=4096, description="largest delta message (rows and dense weights are split to fit; the "
        "broker's message.max.bytes is 1 MB by default)")
    params_retention_ms: int = Field(
        7 * 86_400_000, description="retention of the params topic when `train` creates it (> snapshot age)")
    snapshot_dir: Path | None = Field(
        None, description="where replicas find the trainer's snapshots (default: trainer.snapshot_dir)")
    follow_deltas: bool = Field(
        True, description="apply the trainer's deltas after the bootstrap; false: serve the newest snapshot "
        "unchanged for the process's life (a frozen model, e.g. the control arm of an A/B test)")
    poll_timeout_s: float = Field(0.2, gt=0, description="delta consumer poll timeout")
    freshness_window: int = Field(10_000, gt=0, description="freshness samples kept for /stats percentiles")
