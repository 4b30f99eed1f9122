"""SYNTHETIC traffic for scale tests: Zipf-popular users and items with the MovieLens shapes.

Marked ``source = "synthetic"`` in every feature log; its features are MovieLens's slots
(``examples/movielens/features.toml``). Ratings follow a hidden user x genre affinity plus item
quality, so a model has something real to learn.
"""

from __future__ import annotations

import numpy as np

from replay.config import ReplayConfig
from replay.dataset import Dataset

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Children's",
          "Documentary", "Animation", "Crime", "Musical", "Mystery", "War", "Western", "Fantasy"]


def _zipf_indices(rng: np.random.Generator, n_items: int, size: int, s: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_items + 1) ** s
    cum = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cum, rng.random(size), side="right"), n_items - 1)


def synthetic_dataset(cfg: ReplayConfig) -> Dataset:
    rng = np.random.default_rng(cfg.seed + 1)
    n = cfg.limit or 100_000
    n_users, n_items = cfg.synthetic_users, cfg.synthetic_items
    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    item_ids = np.arange(1, n_items + 1, dtype=np.int64)
    user_raw = {
        "user_id": user_ids.tolist(),
        "age": [str(a) for a in rng.integers(1, 8, n_users)],
        "gender": [("F", "M")[g] for g in rng.integers(0, 2, n_users)],
        "occupation": [f"occ{o}" for o in rng.integers(0, 21, n_users)],
        "zip": [f"{z:03d}" for z in rng.integers(0, 1000, n_users)],
    }
    n_genres = rng.integers(1, 4, n_items)
    item_genres = [list(rng.choice(GENRES, g, replace=False)) for g in n_genres]
    item_year = [str(y) for y in rng.integers(1930, 2000, n_items)]
    genre_index = {g: k for k, g in enumerate(GENRES)}
    user_taste = rng.normal(0.0, 1.0, (n_users, len(GENRES)))
    item_quality = rng.normal(0.0, 0.5, n_items)

    r_user = _zipf_indices(rng, n_users, n, cfg.synthetic_zipf)
    r_item = _zipf_indices(rng, n_items, n, cfg.synthetic_zipf)
    taste = np.array([
        user_taste[u, [genre_index[g] for g in item_genres[i]]].mean() for u, i in zip(r_user, r_item, strict=True)
    ])
    rating = np.clip(np.rint(3.0 + 1.2 * taste + item_quality[r_item] + rng.normal(0, 0.7, n)), 1, 5)
    ts = 900_000_000 + np.cumsum(rng.exponential(30.0, n)).astype(np.int64)
    item_raw = {"item_id": item_ids.tolist(), "genre": [[str(g) for g in gs] for gs in item_genres],
                "year": item_year}
    return Dataset("synthetic", user_ids, user_raw, item_ids, item_raw,
                   r_user.astype(np.int64), r_item.astype(np.int64), rating.astype(np.float32), ts)
