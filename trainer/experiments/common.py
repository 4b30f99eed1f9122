"""What both experiments share: the trainer's settings for a seeded, single-worker run, and epochs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.config import TrainerConfig
from trainer.loop import Trainer
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
