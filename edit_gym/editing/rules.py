"""Update rules: map one candidate's (K, G) to a change dW (d_out x d_in).

Rules follow design.md §1. Each is a small object whose ``factors(keys, grads, weight)`` returns
the change as a low-rank product dW = left @ right (d_out x r, r x d_in; r = number of answer
tokens), so the environment adds it with one fused ``addmm_`` and never materialises a dense
d_out x d_in temporary; ``delta`` gives the dense matrix for reference and tests. Both are at unit
scale: the environment multiplies by the action's per-candidate scale. Computation is in float32
on the candidate's device. Rules are chosen by name through :func:`make_rule`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class GradientRule:
    """Plain fine-tuning step: dW = -a G^T K (the rank-N gradient of the summed answer loss)."""

    step_size: float = 1.0
    name: str = "gradient"

    def factors(self, keys: torch.Tensor, grads: torch.Tensor, weight: torch.Tensor):
        return -self.step_size * grads.T, keys

    def delta(self, keys: torch.Tensor, grads: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        left, right = self.factors(keys, grads, weight)
        return left @ right


@dataclass
class RidgeRule:
    """Ridge least squares (MALMEN / RLEdit form, no learned net).

    Desired output changes D_i = -a <k_i, k_i> g_i; S = (K^T K + e^lam I)^-1 K^T D, solved in its
    N x N dual form K^T (K K^T + e^lam I)^-1 D (identical, and cheap because N << d_in). For
    e^lam << ||k||^2 the matrix moves each key's output by D_i while cancelling the cross-talk
    between keys a plain gradient step has.
    """

    step_size: float = 1.0
    log_lambda: float = 0.0
    name: str = "ridge"

    def factors(self, keys: torch.Tensor, grads: torch.Tensor, weight: torch.Tensor):
        targets = -self.step_size * (keys * keys).sum(1, keepdim=True) * grads  # N x d_out
        gram = keys @ keys.T
        gram.diagonal().add_(math.exp(self.log_lambda))
        return torch.linalg.solve(gram, targets).T, keys  # dW = X^T K, X = (K K^T + e^lam I)^-1 D

    def delta(self, keys: torch.Tensor, grads: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        left, right = self.factors(keys, grads, weight)
        return left @ right


RULES = {"ridge": RidgeRule, "gradient": GradientRule}


def make_rule(name: str, **params: float):
    """A rule by name; an unknown name is an error listing the known ones."""
    try:
        cls = RULES[name]
    except KeyError:
        raise ValueError(f"unknown editor {name!r} (known: {', '.join(sorted(RULES))})") from None
    return cls(**params)
