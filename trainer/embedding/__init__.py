"""Collisionless embedding tables of the trainer (cuckoo hashing, frequency filters, expiry).

- ``table.CuckooTable``: one int64-id -> row table (batched numba kernels, Adagrad / FTRL inside).
- ``filters``: per-slot frequency filters (count-min sketch, probabilistic admission).
- ``store.EmbeddingStore``: per-slot tables + filters + expiry routed by FID slot; save / load.
- ``config``: ``SlotConfig`` and ``EmbeddingConfig``.
"""

from trainer.embedding.config import EmbeddingConfig, SlotConfig
from trainer.embedding.filters import CountMinFilter, ProbabilisticFilter
from trainer.embedding.store import EmbeddingStore
from trainer.embedding.table import CuckooTable

__all__ = ["CountMinFilter", "CuckooTable", "EmbeddingConfig", "EmbeddingStore", "ProbabilisticFilter",
           "SlotConfig"]
