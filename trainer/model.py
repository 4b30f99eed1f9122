"""DeepFM over pooled per-slot embeddings and dense features, one logit per action label.

The embeddings are not parameters of this module: the parameter server owns them. A step pulls
the rows of the batch's unique FIDs, wraps them in a leaf tensor, pools them per example with
``embedding_bag`` and, after backward, pushes that leaf's gradient back to the tables. The
module holds only the dense part (first-order linear, FM scale, MLP, heads), which is small and
is what the dense optimizer and ``dense_sync_interval`` deal with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def pool(rows: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Sum the pulled rows of each example's bag (empty bag -> zeros).

    ``index[j]`` is the row of the j-th FID occurrence, ``offsets[i]`` where example i's bag
    starts. A slot with exactly one FID per example is a plain gather; otherwise a scatter-add
    into the examples. Both are several times cheaper than ``embedding_bag``'s backward on CPU
    for the small, freshly pulled weight matrices of a PS step.
    """
    n, m = offsets.shape[0], index.shape[0]
    gathered = torch.index_select(rows, 0, index)
    if m == n and (n == 0 or bool((offsets == torch.arange(n)).all())):
        return gathered
    lens = torch.diff(offsets, append=torch.tensor([m], dtype=offsets.dtype))
    owner = torch.repeat_interleave(torch.arange(n), lens)
    return torch.zeros((n, rows.shape[1]), dtype=rows.dtype).index_add(0, owner, gathered)


class DeepFM(nn.Module):
    """logit_h = linear_h([e; d]) + fm_scale_h * FM(e) + head_h(MLP([e; d])).

    ``FM`` is the second-order term over the slots whose dim equals ``fm_dim`` (the usual case:
    all of them); slots with other dims feed only the linear and deep parts.
    """

    def __init__(self, slot_dims: Sequence[int], n_dense: int, hidden: Sequence[int], n_heads: int,
                 fm_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.slot_dims = list(slot_dims)
        self.fm_slots = [i for i, d in enumerate(self.slot_dims) if d == fm_dim]
        in_dim = sum(self.slot_dims) + n_dense
        self.linear = nn.Linear(in_dim, n_heads)
        self.fm_scale = nn.Parameter(torch.ones(n_heads))
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = h
        self.mlp = nn.Sequential(*layers)
        self.heads = nn.Linear(prev, n_heads)

    def forward(self, pooled: Sequence[torch.Tensor] | torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """``pooled``: one [n, dim_s] tensor per slot, or one [n, slots, dim] tensor when all dims agree."""
        if isinstance(pooled, torch.Tensor):  # stacked: the slots are already side by side
            x = torch.cat([pooled.flatten(1), dense], dim=1)
            v = pooled if len(self.fm_slots) == pooled.shape[1] else pooled[:, self.fm_slots]
        else:
            x = torch.cat([*pooled, dense], dim=1)
            v = torch.stack([pooled[i] for i in self.fm_slots], dim=1) if len(self.fm_slots) > 1 else None
        out = self.linear(x) + self.heads(self.mlp(x))
        if len(self.fm_slots) > 1:  # v: n, F, k
            fm = 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1)).sum(1, keepdim=True)
            out = out + fm * self.fm_scale
        return out


def stacked_index(invs: Sequence[np.ndarray], offsets: Sequence[np.ndarray], n: int,
                  counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Gather and scatter indexes that pool every slot in one go (slots of equal dim).

    Rows of all slots are concatenated (slot s's unique rows start at ``sum(counts[:s])``);
    occurrence j of slot s reads row ``base_s + inv_s[j]`` and adds into cell ``example * S + s``
    of an [n * S, dim] matrix, which is then viewed as [n, S, dim].
    """
    S = len(invs)
    gather, owner = [], []
    base = 0
    for s, (inv, off, c) in enumerate(zip(invs, offsets, counts, strict=True)):
        gather.append(inv + base)
        lens = np.diff(off, append=len(inv))
        owner.append(np.repeat(np.arange(n, dtype=np.int64) * S + s, lens))
        base += c
    return np.concatenate(gather).astype(np.int64), np.concatenate(owner)


def stacked_pool(rows: torch.Tensor, gather: torch.Tensor, owner: torch.Tensor, n: int, slots: int) -> torch.Tensor:
    """[n, slots, dim] bag sums from concatenated rows (see ``stacked_index``)."""
    picked = torch.index_select(rows, 0, gather)
    return torch.zeros((n * slots, rows.shape[1]), dtype=rows.dtype).index_add(0, owner, picked).view(
        n, slots, rows.shape[1])
