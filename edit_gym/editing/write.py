"""The write stage: closed forms that turn keys and a residual into a weight change.

Keys ``K`` are (n, d_in) rows (the edited matrix's input at the site), the residual ``R`` (n, d_out)
is the change each key's output should make. All changes come back as
:class:`~edit_gym.editing.rules.Update` in the ``d_out x d_in`` orientation.

| writer      | dW                                                              | paper         |
|-------------|-----------------------------------------------------------------|---------------|
| `rome`      | R^T (K C0^-1 K^T)^-1 K C0^-1: the least change (in C0's metric) that maps each key exactly | ROME |
| `memit`     | R^T K (lam C0 + K^T K)^-1 = R^T (lam I + K C0^-1 K^T)^-1 K C0^-1 | MEMIT |
| `alphaedit` | R^T K P ((K^T K + K_p^T K_p) P + L2 I)^-1, P = projector on C0's null space, K_p = keys edited so far | AlphaEdit |

``rome`` is ``memit`` at lam = 0 (for one key: r (C0^-1 k)^T / (k^T C0^-1 k), ROME's rank-one
closed form). AlphaEdit's change lies in P's range, so it leaves every preserved key's output
(C0's principal directions) unchanged; the earlier edits enter as a least-squares term, as in the
paper (``kp_mode="project"`` instead adds them to the preserved span, a hard constraint).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from edit_gym.editing.rules import Update

NULLSPACE_RULES = ("energy", "absolute", "relative")


def memit_lambda(d_in: int, weight: float = 15000.0, reference_dim: int = 16384) -> float:
    """MEMIT's ``mom2_update_weight`` carried to another key dimension.

    MEMIT set 15,000 for GPT-J's 16,384-dim MLP keys against C0 = E[k k^T]; on SmolLM2 (1,536)
    the field notes measured that 15,000 reaches only 44-60% of each layer's share while ~1,500
    (15,000 x 1,536 / 16,384) reaches 86-93%: the weight scales with the key dimension.
    """
    return weight * d_in / reference_dim


@dataclass
class CovarianceWriter:
    """ROME (``lam=0``) and MEMIT (``lam > 0``): dW = R^T (lam I + K A K^T)^-1 K A, A = C0^-1."""

    covariance: Callable[[], list[torch.Tensor]]
    lam: float
    _inverse: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def inverse(self, j: int) -> torch.Tensor:
        a = self._inverse.get(j)
        if a is None:
            c0 = self.covariance()[j].double()
            c0.diagonal().add_(1e-6 * float(c0.diagonal().mean()) + 1e-12)
            a = self._inverse[j] = torch.cholesky_inverse(torch.linalg.cholesky(c0)).float()
        return a

    def solve(self, j: int, keys: torch.Tensor, resid: torch.Tensor) -> Update:
        z = keys @ self.inverse(j).to(keys.device)  # K A  (n x d_in)
        m = (keys @ z.T).double()
        m.diagonal().add_(self.lam)
        left = torch.linalg.solve(m, resid.double()).T.float()  # R^T M^-1
        return Update(left, z)

    def record(self, j: int, keys: torch.Tensor) -> None:
        pass

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


def nullspace_projector(c0: torch.Tensor, rule: str, value: float) -> torch.Tensor:
    """The projector on C0's "null space": directions ordinary text's keys hardly use.

    ``absolute``: eigenvalues below ``value`` (AlphaEdit's 2e-2 on its models); ``relative``: below
    ``value`` times the largest; ``energy``: the smallest directions that together hold at most
    ``value`` of C0's trace (a threshold that means the same on any model's key scale).
    """
    if rule not in NULLSPACE_RULES:
        raise ValueError(f"unknown null-space rule {rule!r} (known: {', '.join(NULLSPACE_RULES)})")
    values, vectors = torch.linalg.eigh(c0.double())
    values = values.clamp_min(0)
    if rule == "absolute":
        keep = values < value
    elif rule == "relative":
        keep = values < value * values.max()
    else:
        keep = torch.cumsum(values, 0) <= value * values.sum()
    null = vectors[:, keep]
    return (null @ null.T).float()


@dataclass
class AlphaEditWriter:
    """AlphaEdit: MEMIT's write inside the null space of preserved keys, earlier edits penalized."""

    covariance: Callable[[], list[torch.Tensor]]
    l2: float = 10.0
    rule: str = "energy"
    value: float = 0.02
    kp_mode: str = "penalty"
    _projector: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    _edited: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)  # K_p^T K_p (penalty)
    _basis: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)  # orthonormal K_p (project)

    def projector(self, j: int) -> torch.Tensor:
        p = self._projector.get(j)
        if p is None:
            p = self._projector[j] = nullspace_projector(self.covariance()[j], self.rule, self.value)
        return p

    def _p(self, j: int, device) -> torch.Tensor:
        p = self.projector(j).to(device)
        q = self._basis.get(j)
        if q is not None:
            q = q.to(device)
            p = p - (p @ q.T) @ q
            p = p - q.T @ (q @ p)
        return p

    def solve(self, j: int, keys: torch.Tensor, resid: torch.Tensor) -> Update:
        """(P (K^T K + K_p^T K_p) + L2 I)^-1 P K^T R, as AlphaEdit's code solves it (d_in x d_out).

        The exact solution lies in P's range (X = P (B - M X) / L2); the float32 solve is projected
        once more so rounding cannot leak outside it (the preserved keys stay exactly untouched).
        """
        p = self._p(j, keys.device)
        m = keys.T @ keys
        if j in self._edited:
            m = m + self._edited[j].to(keys.device)
        lhs = p @ m
        lhs.diagonal().add_(self.l2)
        rhs = p @ (keys.T @ resid)  # d_in x d_out
        return Update(dense=(p @ torch.linalg.solve(lhs, rhs)).T)

    def record(self, j: int, keys: torch.Tensor) -> None:
        """Once a step is kept: its keys join K_p (AlphaEdit's cache_c)."""
        if self.kp_mode == "penalty":
            gram = keys.T @ keys
            self._edited[j] = gram if j not in self._edited else self._edited[j] + gram
            return
        new = keys @ self._p(j, keys.device)
        basis, r = torch.linalg.qr(new.T)
        keep = r.diagonal().abs() > 1e-3 * float(keys.norm(dim=1).max().clamp_min(1e-30))
        if bool(keep.any()):
            q = self._basis.get(j)
            add = basis[:, keep].T
            self._basis[j] = add if q is None else torch.linalg.qr(torch.cat([q, add]).T)[0].T

    def state(self) -> dict:
        return {"edited": dict(self._edited), "basis": dict(self._basis)}

    def load_state(self, state: dict) -> None:
        self._edited = dict(state.get("edited", {}))
        self._basis = dict(state.get("basis", {}))
