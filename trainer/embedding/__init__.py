"""Collisionless embedding tables of the trainer (cuckoo hashing, frequency filters, expiry).

- ``table.CuckooTable``: one int64-id -> row table (batched numba kernels, Adagrad / FTRL inside).
- ``filters``: per-slot frequency filters (count-min sketch, probabilistic admission).
- ``store.EmbeddingStore``: per-slot tables + filters + expiry routed by FID slot; save / load.
- ``config``: ``EmbeddingConfig`` (table mechanics; each slot's settings are in the feature spec).

Import the submodules themselves: this package stays import-light, so that reading the config
(``trainer.config``) does not load numba.
"""
