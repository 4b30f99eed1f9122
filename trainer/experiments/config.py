"""Settings of the offline experiments (section ``[experiments]``).

The numbers the paper reports are defaults here, so a run reproduces its setting unless told
otherwise; ``quick()`` gives the tiny preset the tests use (structure and invariants, not results).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from streamrec.section import Section

Side = Literal["user", "item"]


class CollisionlessConfig(Section):
    """DeepFM on the collisionless table vs fixed-size hashed tables (the paper's Fig. 7)."""

    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1,
                             description="one run per seed: split, shuffle, initial weights, hash function")
    epochs: int = Field(5, ge=1, description="passes over the training split; test AUC after each")
    test_share: float = Field(0.2, gt=0, lt=1, description="share of ratings held out (random, per seed)")
    limit: int = Field(0, ge=0, description="ratings used (the first by time); 0 = all")
    targets: dict[Side, float] = Field(
        default_factory=lambda: {"user": 0.0773, "item": 0.0286},
        description="collision rate to reach per side (the paper's: users 7.73 %, items 2.86 %)")
    slots: dict[Side, str] = Field(
        default_factory=dict, description="the slot hashed on each side; default: the side's slot with the most "
        "distinct values in the data (its id slot)")

    @field_validator("targets")
    @classmethod
    def _rates(cls, v: dict[str, float]) -> dict[str, float]:
        for side, rate in v.items():
            if not 0 < rate < 0.5:
                raise ValueError(f"{side}: a collision rate in (0, 0.5), got {rate}")
        return v

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must differ, got {v}")
        return v


class SyncIntervalConfig(Section):
    """Serving AUC when the serving model is synced every T of event time (the paper's Table 2)."""

    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1,
                             description="one batch model and one online run per interval per seed")
    limit: int = Field(0, ge=0, description="ratings used (the first by time); 0 = all")
    batch_share: float = Field(0.5, gt=0, lt=1, description="the first share of the stream (by time) the batch "
                               "model is trained on; the rest is served and scored")
    batch_epochs: int = Field(1, ge=1, description="passes of the batch model over its part, in time order")
    intervals_s: list[int] = Field(
        default_factory=lambda: [300, 1800, 3600, 18000, 86400, 604800], min_length=1,
        description="sync intervals T in event seconds (MovieLens time): minutes to a week")
    paper_intervals_s: list[int] = Field(
        default_factory=lambda: [18000, 3600, 1800],
        description="the paper's T on Criteo (5 h, 1 h, 30 min); also run scaled to this stream's span")
    paper_delta_auc_points: list[float] = Field(
        default_factory=lambda: [0.24, 0.34, 0.37],
        description="the paper's online minus batch AUC (points) at paper_intervals_s (its Table 2)")
    paper_span_s: int = Field(7 * 86400, gt=0, description="span of the paper's stream (Criteo: 7 days of logs)")

    @field_validator("intervals_s", "paper_intervals_s")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(t <= 0 for t in v):
            raise ValueError(f"intervals must be > 0 seconds, got {v}")
        return v

    @model_validator(mode="after")
    def _paper_pairs(self) -> SyncIntervalConfig:
        if len(self.paper_intervals_s) != len(self.paper_delta_auc_points):
            raise ValueError("paper_delta_auc_points: one value per paper_intervals_s entry")
        return self


class ExperimentsConfig(Section):
    out_dir: Path = Field(Path(".run/experiments"), description="each experiment writes <out_dir>/<name>/")
    collisionless: CollisionlessConfig = Field(default_factory=CollisionlessConfig)
    sync_interval: SyncIntervalConfig = Field(default_factory=SyncIntervalConfig)

    def quick(self) -> ExperimentsConfig:
        """Tiny settings for tests: every code path, a few thousand ratings, seconds per run."""
        return self.model_copy(update={
            "collisionless": self.collisionless.model_copy(update={"seeds": [1, 2, 3], "epochs": 2, "limit": 6000}),
            "sync_interval": self.sync_interval.model_copy(update={
                "seeds": [1, 2], "limit": 6000, "intervals_s": [3600, 86400]}),
        })
