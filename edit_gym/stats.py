"""Seed statistics for reported results: the mean and a 95% Student-t interval.

Kept free of scipy (not a dependency): the two-sided 95% quantiles are tabulated up to 30 degrees
of freedom, and the normal 1.96 is used beyond.
"""

from __future__ import annotations

import numpy as np

# two-sided 95% Student-t quantiles by degrees of freedom (beyond 30: the normal 1.96)
T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.16,
    14: 2.145,
    15: 2.131,
    16: 2.12,
    17: 2.11,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    21: 2.08,
    22: 2.074,
    23: 2.069,
    24: 2.064,
    25: 2.06,
    26: 2.056,
    27: 2.052,
    28: 2.048,
    29: 2.045,
    30: 2.042,
}


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a 95% t-interval (0 for one value)."""
    arr = np.asarray(values, dtype=float)
    if len(arr) < 2:
        return float(arr.mean()), 0.0
    t = T95.get(len(arr) - 1, 1.96)
    return float(arr.mean()), float(t * arr.std(ddof=1) / np.sqrt(len(arr)))
