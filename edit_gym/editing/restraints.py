"""The restrain stage: PRUNE and RECT, as their papers' code applies them over MEMIT.

* **RECT** (arXiv 2401.04700): of each new change dW, keep the ``keep`` fraction of entries with
  the largest relative change |dW| / |W| over the whole matrix (the authors' code: top 20%) and
  drop the rest.
* **PRUNE** (arXiv 2405.16821): the singular values of the *accumulated* change
  Delta = W - W0 that reach the largest singular value of the original matrix, sigma_max(W0), are
  mapped to ``log_b(sigma) + sigma_max - log_b(sigma_max)`` (the authors' ``log`` option, b = e);
  the rest are kept. The authors apply it once, to the weights after a sequence; in a lifelong
  stream the model must be usable after every step, so here the raw accumulated change is kept
  aside and the model carries W0 + F(Delta_raw) after each step: exactly what PRUNE would give if
  the stream stopped there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def rect_sparsify(dense: torch.Tensor, w0: torch.Tensor, keep: float) -> torch.Tensor:
    """dW with all but its ``keep`` fraction of largest |dW| / |W0| entries set to zero."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"RECT keep fraction must be in (0, 1], got {keep}")
    rel = dense.abs() / (w0.abs() + 1e-8)
    k = max(1, int(keep * rel.numel()))
    threshold = rel.flatten().kthvalue(rel.numel() - k + 1).values
    return torch.where(rel >= threshold, dense, torch.zeros_like(dense))


def prune_singular_values(delta: torch.Tensor, bound: float, base: float = math.e) -> torch.Tensor:
    """PRUNE's F on the singular values of ``delta`` that are >= ``bound`` (sigma_max of W0)."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    if float(s[0]) < bound:
        return delta
    log_b = math.log(base)
    s = torch.where(s >= bound, torch.log(s) / log_b + bound - math.log(bound) / log_b, s)
    return ((u * s) @ vh).to(delta.dtype)


@dataclass
class PruneState:
    """PRUNE's raw accumulated change per candidate, and sigma_max(W0)."""

    base: float = math.e
    raw: dict[int, torch.Tensor] = field(default_factory=dict)
    bounds: dict[int, float] = field(default_factory=dict)

    def restrain(self, j: int, w0: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        """Add a step's raw change to candidate ``j``; return the restrained total W - W0 to carry."""
        if j not in self.bounds:
            self.bounds[j] = float(torch.linalg.matrix_norm(w0.float(), ord=2))
        total = change if j not in self.raw else self.raw[j] + change
        self.raw[j] = total
        return prune_singular_values(total, self.bounds[j], self.base)

    def state(self) -> dict:
        return {j: t.clone() for j, t in self.raw.items()}

    def load_state(self, state: dict) -> None:
        self.raw = {j: t.clone() for j, t in state.items()}
