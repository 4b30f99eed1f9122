"""What both experiments share: the trainer's settings for a seeded single-worker run, passes over records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.batch import build_batch
from trainer.config import TrainerConfig
from trainer.loop import Trainer
from trainer.ps import make_model
from trainer.sources import MemorySource

Progress = Callable[[int], None]


def seeded_config(base: TrainerConfig, seed: int, snapshot_dir: Path) -> TrainerConfig:
    """The configured trainer with one worker (same seed, same numbers), seeded weights and tables,
    no periodic snapshots or reports of its own: an experiment writes its own."""
    return base.model_copy(update={
        "seed": seed, "workers": 1, "embedding": base.embedding.model_copy(update={"seed": seed}),
        "snapshot_dir": snapshot_dir, "snapshot_every_s": 0.0, "snapshot_every_examples": 0,
        "metrics_csv": None, "plot": None, "metrics_port": None,
        "eval_window_ms": 86_400_000, "eval_lateness_ms": 0,
    })


def train_on(trainer: Trainer, records: list[dict[str, Any]], name: str, progress: Progress | None = None) -> None:
    """One pass over ``records`` in the given order. Each pass is a source of its own (``name``):
    the trainer remembers where every source stopped."""
    if records:
        trainer.run(MemorySource(records, name=name), progress=progress)


def learn_and_sync(trainer: Trainer, records: list[dict[str, Any]], progress: Progress | None = None) -> None:
    """Train on ``records`` in order with the trainer's own step (pull, forward, backward, push), on
    this thread, then sync serving: touched rows and dense weights.

    What ``Trainer.run`` does with one worker, without starting and draining a worker thread for each
    interval: a replay that waits for every interval's sync would spend most of its time there."""
    replica = make_model(trainer.cfg, trainer.spec)
    bs = trainer.cfg.batch_size
    for i in range(0, len(records), bs):
        part = records[i:i + bs]
        trainer.step(replica, build_batch(part, trainer.spec))
        if progress:
            progress(len(part))
    trainer.sync_sparse()
    trainer.sync_dense()
