"""Seed statistics for reported results: the mean and a 95% Student-t interval.

Kept free of scipy (not a dependency): the two-sided 95% quantiles are tabulated up to 30 degrees
of freedom, and the normal 1.96 is used beyond.
"""

from __future__ import annotations

import math

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


PAIRED_SCORES = ("efficacy", "specificity")


def same_stream(base: dict, other: dict) -> None:
    """Refuse two results that did not edit the same stream (seed, data, length, request order)."""

    def stream(result: dict) -> tuple:
        config = result.get("config") or {}
        edits = [step.get("edit_index") for step in result.get("curve") or []]
        return result.get("seed"), str(config.get("dataset")), result.get("edits"), edits

    a, b = stream(base), stream(other)
    for name, x, y in zip(("seed", "dataset", "edits", "edit order"), a, b, strict=True):
        if x != y:
            shown = (x, y) if name != "edit order" else ("...", "...")
            raise ValueError(f"the two runs edited different streams: {name} {shown[0]!r} vs {shown[1]!r}")


def paired_effect(base: dict, other: dict) -> dict[str, tuple[float, float, int]]:
    """What ``other`` changed against ``base`` on the same stream, edit by edit: per score
    (``efficacy``, ``specificity``: each edit's own final value, ``run_episode(per_edit=True)``),
    the mean over edits of (other - base), the half-width of its 95% t-interval and the number of
    edits paired (an edit without locality prompts has no specificity and is left out of that one)."""
    rows = [r.get("final_per_edit") or {} for r in (base, other)]
    out = {}
    for score in PAIRED_SCORES:
        a, b = (r.get(score) or [] for r in rows)
        if not a or len(a) != len(b):
            raise ValueError(
                f"both runs need the per-edit final {score} of the same stream (run_episode(per_edit=True); "
                "`edit-gym eval --json` records it)"
            )
        diffs = [y - x for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
        mean, half = interval(diffs) if diffs else (float("nan"), float("nan"))
        out[score] = (mean, half, len(diffs))
    return out


def paired_line(effect: dict[str, tuple[float, float, int]]) -> str:
    """``paired_effect`` as one line of text (points, 95% interval, edits paired)."""
    return "; ".join(
        f"{score} {100 * mean:+.1f} points, 95% interval +-{100 * half:.1f} ({n} edits)"
        for score, (mean, half, n) in effect.items()
    )
