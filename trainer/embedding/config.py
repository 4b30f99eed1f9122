"""Config of the embedding tables: one ``SlotConfig`` per feature slot, composed in ``EmbeddingConfig``.

``EmbeddingConfig.slots`` holds overrides by slot name; only the fields an override sets replace
the default's (``slots.item_id.dim = 32`` keeps every other field of ``default``). Use
``cfg.for_slot(name)`` to get the merged config of one slot.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from schemas.fid import SLOTS
from streamrec.section import Section


class SlotConfig(Section):
    """Everything about one slot's table: shape, optimizer, initializer, frequency filter, expiry."""

    dim: int = Field(16, ge=1, le=1024, description="embedding width of this slot")
    optimizer: Literal["adagrad", "ftrl"] = "adagrad"
    learning_rate: float = Field(0.05, gt=0, description="Adagrad step size / FTRL alpha")
    initial_accumulator: float = Field(0.1, ge=0, description="Adagrad accumulator start value")
    adagrad_eps: float = Field(1e-8, ge=0, description="added under Adagrad's square root")
    ftrl_beta: float = Field(1.0, ge=0, description="FTRL-proximal beta")
    ftrl_l1: float = Field(0.0, ge=0, description="FTRL L1 strength (sparsifies rows)")
    ftrl_l2: float = Field(0.0, ge=0, description="FTRL L2 strength")
    init_std: float = Field(
        0.01, ge=0, description="std of the row initializer (deterministic per id; 0 = zeros)"
    )
    filter_threshold: int = Field(
        1, ge=1, le=255, description="occurrences before an id gets a row (1 = no filter)"
    )
    filter_kind: Literal["count_min", "probabilistic"] = Field(
        "count_min",
        description="count_min: admit after `threshold` counted occurrences; "
        "probabilistic: admit each occurrence with probability 1/threshold (no counters)",
    )
    filter_capacity: int = Field(
        1_000_000, ge=1, description="distinct not-yet-admitted ids the count-min sketch is sized for"
    )
    filter_fp_rate: float = Field(
        0.01, gt=0, lt=1, description="bound on the count-min false-admission rate at capacity"
    )
    filter_depth: int = Field(4, ge=1, le=16, description="count-min rows (hash functions)")
    filter_decay_every: int = Field(
        0, ge=0, description="halve all count-min counters after this many increments (0 = never)"
    )
    ttl_s: int = Field(0, ge=0, description="evict rows not updated for longer (event seconds; 0 = never)")


class EmbeddingConfig(Section):
    """Tables of all slots: defaults, per-slot overrides and the table's sizing knobs."""

    default: SlotConfig = Field(default_factory=SlotConfig)
    slots: dict[str, SlotConfig] = Field(
        default_factory=dict, description="per-slot overrides by slot name (schemas.fid.SLOTS)"
    )
    initial_capacity: int = Field(4096, ge=16, description="rows each table starts with; grows itself")
    shards: int = Field(
        1, ge=1, le=64, description="tables (each with its own lock) per slot, by key hash"
    )
    max_load: float = Field(
        0.96, gt=0.5, le=0.99, description="cuckoo index load factor that triggers its growth"
    )
    index_growth: float = Field(
        1.5, gt=1.0, le=4.0, description="cuckoo index grows by this factor (full rehash)"
    )
    arena_growth: float = Field(
        0.0625, gt=0, le=2.0, description="row arena grows in place by this fraction of itself when full"
    )
    seed: int = Field(7, ge=0, description="seeds the hash functions, initializers and filters")

    @field_validator("slots")
    @classmethod
    def _known_slots(cls, v: dict[str, SlotConfig]) -> dict[str, SlotConfig]:
        unknown = sorted(set(v) - set(SLOTS))
        if unknown:
            raise ValueError(f"unknown slot name(s) {unknown}; known: {sorted(SLOTS)}")
        return v

    @model_validator(mode="after")
    def _check_merged(self) -> EmbeddingConfig:
        for name in self.slots:
            self.for_slot(name)  # a merged override must itself be valid
        return self

    def for_slot(self, name: str) -> SlotConfig:
        """The default with this slot's explicitly set override fields applied."""
        override = self.slots.get(name)
        if override is None:
            return self.default
        merged = self.default.model_dump()
        merged.update(override.model_dump(exclude_unset=True))
        return SlotConfig(**merged)
