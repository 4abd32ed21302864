"""UltraEdit (arXiv 2505.14679): a training-free closed form over lifelong-normalized features.

Per edited matrix and step, from the answer-position keys K (n, d_in) and value-gradients G
(n, d_out) of :mod:`edit_gym.editing.capture`:

1. **Lifelong normalization.** One running mean / variance per weight *shape* (matrices of the
   same shape share it) of the rows z = [k, g], merged with every step's rows *before* they are
   used (Chan's parallel update; counts accumulate over the whole stream, no momentum):
   z_hat = (z - mu) / (std + eps).
2. **Target.** v_i = -lr * ||k_hat_i||^2 * g_hat_i.
3. **Solve.** dW^T = (K^T K + lam I)^-1 K^T V with the *raw* keys (lam = 1), written here in its
   dual form dW = V^T (K K^T + lam I)^-1 K (identical, n x n).

The authors' code (``editor/ultraedit.py``) uses lr = 1e-6 on 7-8B models; the step per backbone
is data in :mod:`edit_gym.editing.methods`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edit_gym.editing.rules import Update

EPS = 1e-5


@dataclass
class RunningStats:
    """Running mean and unbiased variance of rows, merged batch by batch (no momentum)."""

    count: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None

    def update(self, rows: torch.Tensor) -> None:
        b = rows.shape[0]
        if b == 0:
            return
        batch_mean = rows.mean(0)
        batch_m2 = ((rows - batch_mean) ** 2).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2 = b, batch_mean, batch_m2
            return
        total = self.count + b
        d = batch_mean - self.mean
        self.mean = self.mean + d * b / total
        self.m2 = self.m2 + batch_m2 + d**2 * self.count * b / total
        self.count = total

    def normalize(self, rows: torch.Tensor) -> torch.Tensor:
        std = (self.m2 / max(self.count - 1, 1)).sqrt() if self.count > 1 else torch.ones_like(self.mean)
        return (rows - self.mean) / (std + EPS)

    def copy(self) -> RunningStats:
        return RunningStats(self.count, self.mean, self.m2)


@dataclass
class UltraEditRule:
    """UltraEdit's update for one matrix from (K, G); see the module doc."""

    lr: float = 1e-6
    lam: float = 1.0
    stats: dict[tuple[int, int], RunningStats] = field(default_factory=dict)

    def observe(self, keys: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """Merge a step's rows of every edited matrix into its shape's statistics (before solving)."""
        for k, g in zip(keys, grads, strict=True):
            shape = (k.shape[1], g.shape[1])
            self.stats.setdefault(shape, RunningStats()).update(torch.cat([k, g], dim=1).double())

    def update(self, keys: torch.Tensor, grads: torch.Tensor) -> Update:
        z = self.stats[(keys.shape[1], grads.shape[1])].normalize(torch.cat([keys, grads], dim=1).double())
        k_hat, g_hat = z[:, : keys.shape[1]], z[:, keys.shape[1] :]
        v = -self.lr * (k_hat * k_hat).sum(1, keepdim=True) * g_hat
        k = keys.double()
        gram = k @ k.T
        gram.diagonal().add_(self.lam)
        return Update(torch.linalg.solve(gram, v).T.float(), keys)

    def state(self) -> dict:
        return {shape: s.copy() for shape, s in self.stats.items()}

    def load_state(self, state: dict) -> None:
        self.stats = {shape: s.copy() for shape, s in state.items()}
