"""Action types: how an agent says which candidates to edit and how strongly.

Every type decodes to a boolean mask (L,) and a coefficient vector (L,) in [-1, 1]. The
coefficient sets the candidate's update scale on a log scale around the rule's step size::

    scale_l = step_size * coef_range ** coef_l      # coef -1 -> step/coef_range, 0 -> step, +1 -> step*coef_range

| action_type     | space                                              | decoding                                   |
|-----------------|----------------------------------------------------|--------------------------------------------|
| "dict"          | Dict(mask=MultiBinary(L), coef=Box(-1, 1, (L,)))    | as given                                   |
| "box"           | Box(-1, 1, (2L,))                                  | mask = first half > 0, coef = second half  |
| "multidiscrete" | MultiDiscrete([levels + 1] * L)                    | 0 = skip; bin b >= 1 -> coef linspace(-1, 1, levels)[b-1] |
| "mask"          | MultiBinary(L)                                     | coef = 0 (the step size itself)            |
| "slots"         | MultiDiscrete([L + 1] * K), K = the env's budget   | each slot picks a candidate, L = none; coef = 0 |

With a budget K (``budget=K``), an action must select between 1 and K candidates. ``slots`` makes
that a property of the space (repeated picks merge), and the env's ``action_masks()`` forbids
"none" in the first slot, so a maskable policy (sb3-contrib ``MaskablePPO``) never picks nothing.

Invalid actions raise :class:`InvalidActionError` before anything changes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from gymnasium import spaces

ACTION_TYPES = ("dict", "box", "multidiscrete", "mask", "slots")


class InvalidActionError(ValueError):
    """An action that does not fit the environment's action space; nothing was changed."""


def make_action_space(
    action_type: str, num_candidates: int, coef_levels: int, budget: int | None = None
) -> spaces.Space:
    n = num_candidates
    if action_type == "slots":
        if budget is None or not 1 <= budget <= n:
            raise ValueError(f"action_type 'slots' needs a budget between 1 and {n}, got {budget!r}")
        return spaces.MultiDiscrete(np.full(budget, n + 1, dtype=np.int64))
    if action_type == "dict":
        return spaces.Dict(
            {"mask": spaces.MultiBinary(n), "coef": spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)}
        )
    if action_type == "box":
        return spaces.Box(-1.0, 1.0, (2 * n,), dtype=np.float32)
    if action_type == "multidiscrete":
        return spaces.MultiDiscrete(np.full(n, coef_levels + 1, dtype=np.int64))
    if action_type == "mask":
        return spaces.MultiBinary(n)
    raise ValueError(f"unknown action_type {action_type!r} (known: {', '.join(ACTION_TYPES)})")


def _array(value, name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as err:  # noqa: BLE001
        raise InvalidActionError(f"{name}: cannot be read as an array ({err})") from None
    if arr.shape != shape:
        raise InvalidActionError(f"{name}: expected shape {shape}, got {arr.shape}")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InvalidActionError(f"{name}: expected numbers, got dtype {arr.dtype}")
    return arr


def _binary(value, name: str, n: int) -> np.ndarray:
    arr = _array(value, name, (n,))
    if not np.all((arr == 0) | (arr == 1)):
        raise InvalidActionError(f"{name}: entries must be 0 or 1, got {arr.tolist()}")
    return arr.astype(bool)


def _coefficients(value, name: str, n: int) -> np.ndarray:
    arr = _array(value, name, (n,)).astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise InvalidActionError(f"{name}: contains NaN or inf: {arr.tolist()}")
    if np.any(np.abs(arr) > 1.0 + 1e-6):
        raise InvalidActionError(f"{name}: coefficients must lie in [-1, 1], got {arr.tolist()}")
    return np.clip(arr, -1.0, 1.0)


def decode_action(
    action, action_type: str, n: int, coef_levels: int, budget: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mask bool (n,), coef float64 (n,)) from an action, or InvalidActionError.

    With a ``budget``, a mask selecting no candidate or more than ``budget`` is invalid too.
    """
    mask, coef = _decode(action, action_type, n, coef_levels, budget)
    if budget is not None and not 1 <= int(mask.sum()) <= budget:
        raise InvalidActionError(
            f"action selects {int(mask.sum())} candidates; the layer budget allows 1 to {budget}"
        )
    return mask, coef


def _decode(action, action_type: str, n: int, coef_levels: int, budget: int | None):
    if action_type == "dict":
        if not isinstance(action, Mapping) or set(action) != {"mask", "coef"}:
            got = sorted(action) if isinstance(action, Mapping) else type(action).__name__
            raise InvalidActionError(f"action: expected a dict with keys 'mask' and 'coef', got {got}")
        return _binary(action["mask"], "action['mask']", n), _coefficients(
            action["coef"], "action['coef']", n
        )
    if action_type == "box":
        flat = _coefficients(_array(action, "action", (2 * n,)).astype(np.float64), "action", 2 * n)
        return flat[:n] > 0, flat[n:]
    if action_type == "multidiscrete":
        arr = _array(action, "action", (n,))
        if (
            not np.all(np.isfinite(arr))
            or not np.all(arr == np.round(arr))
            or arr.min() < 0
            or arr.max() > coef_levels
        ):
            raise InvalidActionError(
                f"action: entries must be integers in [0, {coef_levels}], got {arr.tolist()}"
            )
        bins = arr.astype(np.int64)
        levels = np.linspace(-1.0, 1.0, coef_levels) if coef_levels > 1 else np.zeros(1)
        return bins > 0, np.where(bins > 0, levels[np.maximum(bins - 1, 0)], 0.0)
    if action_type == "mask":
        return _binary(action, "action", n), np.zeros(n)
    if action_type == "slots":
        arr = _array(action, "action", (budget,))
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)) or arr.min() < 0 or arr.max() > n:
            raise InvalidActionError(
                f"action: slots must be integers in [0, {n}] ({n} = none), got {arr.tolist()}"
            )
        mask = np.zeros(n, dtype=bool)
        picks = arr.astype(np.int64)
        mask[picks[picks < n]] = True
        return mask, np.zeros(n)
    raise ValueError(f"unknown action_type {action_type!r}")


def encode_action(mask, coef, action_type: str, coef_levels: int, budget: int | None = None):
    """The action of ``action_type`` that decodes to (mask, coef) (coef snapped to a level for multidiscrete)."""
    mask = np.asarray(mask, dtype=bool)
    if action_type == "slots":
        picks = np.flatnonzero(mask)
        if budget is None or not 1 <= len(picks) <= budget:
            raise ValueError(
                f"a 'slots' action holds 1 to {budget} candidates, the mask selects {len(picks)}"
            )
        return np.concatenate([picks, np.full(budget - len(picks), len(mask))]).astype(np.int64)
    coef = np.clip(np.asarray(coef, dtype=np.float64), -1.0, 1.0) * np.ones(mask.shape)
    if action_type == "dict":
        return {"mask": mask.astype(np.int8), "coef": coef.astype(np.float32)}
    if action_type == "box":
        return np.concatenate([np.where(mask, 1.0, -1.0), coef]).astype(np.float32)
    if action_type == "multidiscrete":
        levels = np.linspace(-1.0, 1.0, coef_levels) if coef_levels > 1 else np.zeros(1)
        nearest = np.abs(coef[:, None] - levels[None, :]).argmin(1) + 1
        return np.where(mask, nearest, 0).astype(np.int64)
    if action_type == "mask":
        return mask.astype(np.int8)
    raise ValueError(f"unknown action_type {action_type!r} (known: {', '.join(ACTION_TYPES)})")
