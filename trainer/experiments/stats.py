"""Means with 95 % confidence intervals over a few seeds (Student's t; no scipy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom; beyond, the normal's 1.96
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t95(df: int) -> float:
    """The 97.5 % quantile of t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two values")
    return _T95[df - 1] if df <= len(_T95) else 1.96


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of its 95 % t-interval); half-width NaN for a single value."""
    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean())
    if x.size < 2:
        return m, math.nan
    return m, t95(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
