"""Settings of the embedded trainer: table mechanics (``embedding``), the model, the loop, sync,
snapshots and progressive evaluation.

What the model reads (slots, dense features, labels) and each slot's table settings are not
here: the feature spec (``[features]``, ``schemas.spec``) declares them for every stage."""

from pathlib import Path
from typing import Literal

from pydantic import Field

from streamrec.section import Section
from trainer.embedding.config import EmbeddingConfig


class DistributedConfig(Section):
    """``streamrec train --distributed``: ranks under torchrun, tables sharded by FID (trainer/distributed)."""

    nproc: int = Field(2, ge=1, description="ranks `--distributed` starts on this host (torchrun --nproc-per-node)")
    backend: Literal["gloo"] = Field("gloo", description="torch.distributed backend (CPU)")
    max_restarts: int = Field(3, ge=0, description="torchrun elastic restarts after a rank dies (each resumes "
                              "from the newest snapshot every rank has); 0 = stop")
    timeout_s: float = Field(300.0, gt=0, description="a collective waiting longer than this fails the rank")
    pin_cores: bool = Field(True, description="pin each rank (all its threads) to its own core, the local rank's, "
                            "when a host runs several ranks and has a core for each: no migrations between "
                            "cores at every collective (bench_distributed)")
    spin_wait_ms: float = Field(5.0, ge=0, description="a rank waiting on a collective spins this long before it "
                                "blocks: on a VM an idle core halts and may be lent to another guest at every "
                                "step (bench_distributed); 0 = block at once")


class TrainerConfig(Section):
    seed: int = 11
    batch_size: int = Field(256, gt=0)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig,
                                       description="table sizing, sharding, growth, seeds")
    distributed: DistributedConfig = Field(default_factory=DistributedConfig,
                                           description="multi-process training (train --distributed)")
    # --- model (its inputs and heads: the feature spec's slots, dense features and labels) -----
    hidden: list[int] = Field(default_factory=lambda: [64, 32], description="MLP widths of DeepFM")
    dropout: float = Field(0.0, ge=0, lt=1)
    fm_dim: int | None = Field(None, gt=0, description="FM over slots of this dim (default: the first slot's)")
    dense_optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    dense_lr: float = Field(0.01, gt=0)
    loss_weighting: Literal["none", "inverse_sample_rate"] = Field(
        "none", description="none: learn the sampled distribution, correct scores by log-odds; "
        "inverse_sample_rate: weight examples by 1/sample_rate (no correction needed)")
    # --- loop ------------------------------------------------------------------------------
    workers: int = Field(2, ge=1, description="async worker threads (no barrier between them)")
    torch_threads: int = Field(1, ge=1, description="intra-op torch threads per worker")
    queue_batches: int = Field(4, ge=1, description="batches read ahead of the workers")
    dedup_capacity: int = Field(2_000_000, gt=0, description="example ids remembered to drop duplicates")
    poll_timeout_s: float = Field(0.2, gt=0)
    consumer_group: str = "streamrec-trainer"
    online_start: Literal["earliest", "latest"] = Field(
        "earliest", description="where --online starts on a topic the snapshot has no offsets for")
    # --- sync to the serving PS ------------------------------------------------------------
    sparse_sync_interval_s: float = Field(1.0, gt=0, description="touched rows -> serving PS period")
    dense_sync_interval_s: float = Field(10.0, gt=0, description="dense weights -> serving PS period")
    evict_interval_s: float = Field(60.0, gt=0, description="rows past their slot's ttl_s are evicted this often")
    # --- snapshots -------------------------------------------------------------------------
    snapshot_dir: Path = Path(".run/trainer/snapshots")
    snapshot_every_s: float = Field(300.0, ge=0, description="0 = never by time")
    snapshot_every_examples: int = Field(0, ge=0, description="0 = never by count")
    snapshot_keep: int = Field(2, ge=1)
    # --- progressive evaluation ------------------------------------------------------------
    eval_window_ms: int = Field(600_000, gt=0, description="event-time window of the AUC curve")
    eval_lateness_ms: int = Field(600_000, ge=0, description="a window closes this long after its end")
    baseline_prior: float = Field(10.0, gt=0, description="popularity baseline smoothing (examples)")
    metrics_port: int | None = Field(None, ge=0, le=65535,
                                     description="Prometheus endpoint on metrics.host: unset = off, 0 = a free port")
    metrics_csv: Path | None = Path(".run/trainer/metrics.csv")
    plot: Path | None = Path(".run/trainer/auc.png")

