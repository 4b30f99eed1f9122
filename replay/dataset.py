"""A dataset for the replay: users and items with raw features, and a time-ordered rating stream.

MovieLens-100K and the synthetic generator both produce this shape, so one builder turns either
into feature and action logs. The features are named by the dataset: a feature spec that has
those slots (``examples/movielens/features.toml`` for both) is what the client checks them against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Dataset:
    name: str  # "movielens" | "synthetic": written into every FeatureLog's `source`
    user_ids: np.ndarray  # int64 [U]
    user_raw: dict[str, list]  # user-side slot -> raw value (or list of them) per user (the id's slot included)
    item_ids: np.ndarray  # int64 [I]
    item_raw: dict[str, list]  # item-side slot -> raw value (or list of them) per item (the id's slot included)
    r_user: np.ndarray  # int64 [N], index into user_ids
    r_item: np.ndarray  # int64 [N], index into item_ids
    r_rating: np.ndarray  # float32 [N]
    r_ts_s: np.ndarray  # int64 [N], non-decreasing

    def __len__(self) -> int:
        return len(self.r_user)

    def item_popularity(self) -> np.ndarray:
        """Share of ratings per item: the 'shown items' sampler draws from it."""
        counts = np.bincount(self.r_item, minlength=len(self.item_ids)).astype(np.float64) + 1.0
        return counts / counts.sum()
