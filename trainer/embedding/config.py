"""Config of the embedding tables' mechanics (section ``[trainer.embedding]``).

What each slot's table is (dim, optimizer, filter, TTL) is part of the feature spec
(``schemas.spec.EmbeddingSettings``, per slot under ``[features]``); here are only the knobs of
how tables are held: sizing, sharding, growth and seeds.
"""

from __future__ import annotations

from pydantic import Field

from streamrec.section import Section


class EmbeddingConfig(Section):
    """Sizing, sharding and seeding of every slot's tables."""

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
