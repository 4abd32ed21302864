"""MEMIT's spreading: the residual at the target block, written over the selected layers in order.

For the selected candidates l_1 < ... < l_m (the target block is l_m's), before each layer i the
keys of l_i and the current hidden state at the target block are read again (the earlier layers'
writes change both), and layer i solves its closed form for its share of what is left:

    R_i = s_i * (z - h_now),   s_i = min(1, c_i / (m - i + 1))

``c_i = coef_range ** coef_i`` is the action's coefficient for that candidate (coefficient 0 gives
MEMIT's 1 / (layers left); the last layer at coefficient 0 takes all that remains). With one layer
selected this is ROME's single write, with a fixed band it is MEMIT; which layers carry the
residual, and how much each takes, is the agent's choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def shares(coefs: Sequence[float], coef_range: float) -> list[float]:
    """Each selected layer's share of the remaining residual, in layer order (see the module doc)."""
    m = len(coefs)
    return [min(1.0, float(coef_range) ** float(c) / (m - i)) for i, c in enumerate(coefs)]


def spread(
    order: Sequence[int],
    fractions: Sequence[float],
    z: torch.Tensor,
    read: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    write: Callable[[int, torch.Tensor, torch.Tensor], None],
) -> list[dict]:
    """Write ``z`` over the candidates of ``order``; ``read(j)`` gives (keys, hidden now), ``write(j, keys, R)``.

    Returns one record per layer: the residual norm before it wrote, the share it took and
    ``moved``, the fraction of the step's first residual its write removed (the residual is read
    once more after the last layer wrote).
    """
    out = []
    for j, s in zip(order, fractions, strict=True):
        keys, now = read(j)
        resid = z - now
        write(j, keys, s * resid)
        out.append({"candidate": int(j), "residual_norm": float(resid.norm(dim=1).mean()), "share": s})
    if out:
        _, now = read(order[-1])
        norms = [r["residual_norm"] for r in out] + [float((z - now).norm(dim=1).mean())]
        for i, record in enumerate(out):
            record["moved"] = (norms[i] - norms[i + 1]) / max(norms[0], 1e-12)
    return out
