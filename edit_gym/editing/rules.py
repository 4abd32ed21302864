"""Update rules and post-update wrappers: map one candidate's (K, G) to a change dW (d_out x d_in).

Rules follow design.md §1. Every rule aims at the same desired output change per key,
D_i = -a <k_i, k_i> g_i (what a fine-tuning step does to key i's own output), and differs in how
it reaches it:

| name       | dW                                                              | state                      |
|------------|-----------------------------------------------------------------|----------------------------|
| `gradient` | -a G^T K (cross-talk between keys included)                     | none                       |
| `ridge`    | D^T (K K^T + e^lam I)^-1 K (each key moves by ~D_i, no cross-talk) | none                    |
| `covariance` | D^T K (lam C0 + K^T K)^-1: least change on ordinary text (C0)  | C0^-1 per candidate        |

These are the *one-step* rules: the target is one gradient step, not ROME / MEMIT's optimized
value, so none of them is a paper's method (those are in :mod:`edit_gym.editing.methods`; until
issue 19 ``covariance`` was called ``memit`` and the wrappers ``alphaedit``, ``rect``, ``prune``:
:data:`LEGACY_NAMES` maps old result records to the new names).

Wrappers (``"covariance+nullspace"``, ``"ridge+topk+spectral"``) act after the rule:

| name        | effect                                                                                  |
|-------------|-----------------------------------------------------------------------------------------|
| `nullspace` | P projects out the span of preserved keys (C0's principal directions and every key edited earlier in the episode); least-squares rules are re-solved on the projected keys (AlphaEdit's closed form, P in place of C0), others give dW <- dW P |
| `topk`      | keep the top `rect_keep` fraction of entries by |dW| / |W0| (the rest set to 0)         |
| `spectral`  | after applying: singular values of the accumulated W - W0 above sigma_max(W0) shrink to sigma_max(W0) + ln(sigma / sigma_max(W0)) |

Rules return an :class:`Update`, a low-rank product ``left @ right`` (r = number of answer tokens)
when they can, so the environment adds it with one fused ``addmm_``; ``dense`` otherwise. All math
is float32 on the candidate's device, at unit scale: the environment multiplies by the action's
per-candidate scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from edit_gym.candidates import Candidate


@dataclass
class Update:
    """A change dW (d_out x d_in), as ``left @ right`` or ``dense``."""

    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    dense: torch.Tensor | None = None

    def matrix(self) -> torch.Tensor:
        return self.dense if self.dense is not None else self.left @ self.right

    def is_finite(self) -> bool:
        parts = [self.dense] if self.dense is not None else [self.left, self.right]
        return all(bool(torch.isfinite(p).all()) for p in parts)

    def apply_(self, cand: Candidate, alpha: float) -> None:
        if self.dense is not None:
            cand.add_(alpha * self.dense)
        else:
            cand.add_low_rank_(self.left, self.right, alpha)


@dataclass
class RuleContext:
    """What stateful rules may need, supplied lazily by the environment."""

    candidates: list[Candidate]
    pristine: list[torch.Tensor]  # stored parameters (candidate layout) at reset
    covariance: Callable[[], list[torch.Tensor]]  # per-candidate key covariance C0 (d_in x d_in)


def desired_change(keys: torch.Tensor, grads: torch.Tensor, step: float) -> torch.Tensor:
    """D_i = -a <k_i, k_i> g_i (N x d_out)."""
    return -step * (keys * keys).sum(1, keepdim=True) * grads


@dataclass
class GradientRule:
    """Plain fine-tuning step: dW = -a G^T K."""

    step_size: float = 1.0
    name: str = "gradient"

    def update(self, j: int, keys: torch.Tensor, grads: torch.Tensor, weight: torch.Tensor) -> Update:
        return Update(-self.step_size * grads.T, keys)


@dataclass
class RidgeRule:
    """Ridge least squares (MALMEN / RLEdit form, no learned net).

    S = (K^T K + e^lam I)^-1 K^T D, solved in its N x N dual form K^T (K K^T + e^lam I)^-1 D
    (identical, and cheap because N << d_in).
    """

    step_size: float = 1.0
    log_lambda: float = 0.0
    name: str = "ridge"

    def update(self, j: int, keys: torch.Tensor, grads: torch.Tensor, weight: torch.Tensor) -> Update:
        gram = keys @ keys.T
        gram.diagonal().add_(math.exp(self.log_lambda))
        x = torch.linalg.solve(gram, desired_change(keys, grads, self.step_size))
        return Update(x.T, keys)


@dataclass
class CovarianceRule:
    """Covariance closed form (ROME / MEMIT): dW = D^T K (lam C0 + K^T K)^-1.

    It is the dW that reaches D at the edit keys while changing outputs on ordinary text (whose
    key covariance is C0) the least, traded off by ``cov_weight`` (lam). With A = lam C0 (+ a
    jitter), Woodbury gives the low-rank form dW = D^T (I + K A^-1 K^T)^-1 (K A^-1), so each
    step costs O(N d_in^2) with A^-1 computed once per episode set-up.
    """

    context: RuleContext
    step_size: float = 1.0
    cov_weight: float = 1.0
    name: str = "covariance"
    _inverse: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def inverse(self, j: int) -> torch.Tensor:
        inv = self._inverse.get(j)
        if inv is None:
            c0 = self.context.covariance()[j].float()
            a = self.cov_weight * c0
            a.diagonal().add_(1e-6 * float(c0.diagonal().mean()) + 1e-12)
            inv = self._inverse[j] = torch.cholesky_inverse(torch.linalg.cholesky(a))
        return inv

    def update(self, j: int, keys: torch.Tensor, grads: torch.Tensor, weight: torch.Tensor) -> Update:
        z = keys @ self.inverse(j).to(keys.device)  # N x d_in
        m = keys @ z.T
        m.diagonal().add_(1.0)
        left = torch.linalg.solve(m, desired_change(keys, grads, self.step_size)).T  # D^T (I + M)^-1
        return Update(left, z)


RECORD_TOLERANCE = 1e-3  # AlphaEdit: an edited key's new direction counts if its residual is above this
ALPHA_RIDGE_FLOOR = 1e-2  # AlphaEdit: ridge strength floor, relative to the keys' mean squared norm


@dataclass
class AlphaEditWrapper:
    """Null-space projection (AlphaEdit): updates cannot move outputs on preserved keys.

    Preserved keys are C0's principal directions (eigenvalues above ``null_threshold`` times the
    largest) and, as the episode goes on, every key already edited at that candidate (the basis
    ``Q`` grows by the edit's keys each step: the one rule whose cost grows with history).
    """

    context: RuleContext
    null_threshold: float = 1e-2
    ridge_floor: float = ALPHA_RIDGE_FLOOR
    name: str = "nullspace"
    _projector: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    _edited: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def projector(self, j: int) -> torch.Tensor:
        p = self._projector.get(j)
        if p is None:
            values, vectors = torch.linalg.eigh(self.context.covariance()[j].double())
            null = vectors[:, values < self.null_threshold * values.max()]
            p = self._projector[j] = (null @ null.T).float()
        return p

    def _project(self, j: int, rows: torch.Tensor) -> torch.Tensor:
        """Rows (.. x d_in) with the preserved directions removed."""
        out = rows @ self.projector(j).to(rows.device)
        q = self._edited.get(j)
        return out if q is None else out - (out @ q.T) @ q

    def transform(self, j: int, update: Update) -> Update:
        if update.dense is not None:
            return Update(dense=self._project(j, update.dense))
        return Update(update.left, self._project(j, update.right))

    def solve(self, j: int, keys: torch.Tensor, desired: torch.Tensor, log_lambda: float) -> Update:
        """AlphaEdit's closed form, for the least-squares rules (``ridge``, ``covariance``).

        min ||(dW P) K^T - D^T||^2 + e^lam ||dW P||^2 gives dW P = D^T K P (K^T K P + e^lam I)^-1, or by
        the push-through identity D^T (K P K^T + e^lam I)^-1 K P: a ridge solve on the projected keys.
        The projection takes over the role of MEMIT's C0 (that is the method: projecting a solve that
        already weighs by C0^-1 would amplify exactly the directions P keeps), so ``covariance+nullspace``
        and ``ridge+nullspace`` are the same rule.

        The ridge strength is at least ``ridge_floor`` times the keys' mean squared norm. A key
        that lies mostly in the preserved span leaves a small residual |kP|; with an absolute strength
        of 1 against key norms of ~50, the solve writes |D| |kP| / (|kP|^2 + 1) along that residual,
        up to |k| / 2 times the plain ridge update, and it reaches every other input with a component
        there (SmolLM2 exploded at edit ~50 of a CounterFact stream). Relative to the key scale the
        update is at most 1 / (2 sqrt(floor)) = 5 times ridge's, and a mostly-preserved key is edited
        little, as the method intends.
        """
        projected = self._project(j, keys)  # K P
        gram = projected @ keys.T
        gram.diagonal().add_(max(math.exp(log_lambda), self.ridge_floor * float(keys.pow(2).sum(1).mean())))
        return Update(torch.linalg.solve(gram, desired).T, projected)

    def record(self, j: int, keys: torch.Tensor) -> None:
        """Add the edit's keys (projected into the null space) to the preserved basis.

        The basis must stay orthonormal, or ``x - (x Q^T) Q`` stops being a projection and
        amplifies instead (a key nearly inside the span leaves a residual that is mostly rounding
        noise, pointing anywhere). So: project twice (what rounding left of the old directions goes),
        keep only directions whose residual is above ``RECORD_TOLERANCE`` of the keys' own norm, and
        orthogonalize the kept ones once more against everything preserved.
        """
        new = self._project(j, self._project(j, keys))
        basis, r = torch.linalg.qr(new.T)  # d_in x N
        scale = float(keys.norm(dim=1).max())
        keep = r.diagonal().abs() > RECORD_TOLERANCE * max(scale, 1e-30)
        if not bool(keep.any()):
            return
        basis = torch.linalg.qr(self._project(j, basis[:, keep].T).T)[0].T
        q = self._edited.get(j)
        self._edited[j] = basis if q is None else torch.cat([q, basis])

    def reset(self) -> None:
        self._edited.clear()


@dataclass
class RectWrapper:
    """Top-k relative sparsification (RECT): keep the largest |dW| / |W0| entries."""

    context: RuleContext
    rect_keep: float = 0.2
    name: str = "topk"

    def transform(self, j: int, update: Update) -> Update:
        from edit_gym.editing.restraints import rect_sparsify

        dense = update.matrix()
        cand = self.context.candidates[j]
        w0 = self.context.pristine[j]
        w0 = (w0.t() if cand.transposed else w0).to(dense.device).float()
        return Update(dense=rect_sparsify(dense, w0, self.rect_keep))


@dataclass
class PruneWrapper:
    """Spectral restraint (PRUNE) of the accumulated change W - W0, applied after each update."""

    context: RuleContext
    name: str = "spectral"
    _bound: dict[int, float] = field(default_factory=dict, repr=False)

    def bound(self, j: int) -> float:
        if j not in self._bound:
            self._bound[j] = float(torch.linalg.matrix_norm(self.context.pristine[j].float(), ord=2))
        return self._bound[j]

    @torch.no_grad()
    def restrain(self, j: int) -> None:
        cand = self.context.candidates[j]
        total = (cand.param.float() - self.context.pristine[j].float()).to(torch.float32)
        bound = self.bound(j)
        top = float(torch.svd_lowrank(total, q=4, niter=2)[1][0])
        if top <= bound:
            return
        u, s, vh = torch.linalg.svd(total, full_matrices=False)
        s = torch.where(s > bound, bound + torch.log(s / bound), s)
        restrained = (u * s) @ vh
        cand.param.copy_((self.context.pristine[j].float() + restrained).to(cand.param.dtype))


# A rule factory builds a rule from the env's RuleContext and its parameters (step_size,
# log_lambda, cov_weight, ...); a rule has ``update(j, keys, grads, weight) -> Update``.
RuleFactory = Callable[[RuleContext, dict], Any]
RULE_FACTORIES: dict[str, RuleFactory] = {
    "ridge": lambda ctx, p: RidgeRule(p.get("step_size", 1.0), p.get("log_lambda", 0.0)),
    "gradient": lambda ctx, p: GradientRule(p.get("step_size", 1.0)),
    "covariance": lambda ctx, p: CovarianceRule(ctx, p.get("step_size", 1.0), p.get("cov_weight", 1.0)),
}
BASE_RULES = RULE_FACTORIES.keys()  # plus "rledit:PATH", a trained hypernet (editing/hypernet.py)
WRAPPERS = {"nullspace", "topk", "spectral"}
# one-step names before the faithful methods took the papers' names (old result records)
LEGACY_NAMES = {"memit": "covariance", "alphaedit": "nullspace", "rect": "topk", "prune": "spectral"}


def legacy_editor(spec: str) -> str:
    """An editor spec of a record made before issue 19, in today's names (``memit+alphaedit`` ->
    ``covariance+nullspace``); a learned rule's path is kept as it is."""
    parts = _spec_parts(spec)
    return "+".join(p if p.startswith("rledit:") else LEGACY_NAMES.get(p, p) for p in parts)


def register_rule(name: str, factory: RuleFactory) -> None:
    """Make ``editor=name`` (and ``name+wrapper``) build ``factory(context, params)``.

    Registration lives in the registering process: an env rebuilt elsewhere (a subprocess vector
    env, an unpickled env) needs the same ``register_rule`` call there, e.g. at the import of the
    module that defines the rule.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"rule name must be a plain identifier (no '+' or ':'), got {name!r}")
    if name in RULE_FACTORIES or name in WRAPPERS or name == "rledit":
        raise ValueError(f"rule name {name!r} is taken (rules: {', '.join(sorted(RULE_FACTORIES))})")
    if not callable(factory):
        raise TypeError(f"factory for rule {name!r} must be callable(context, params)")
    RULE_FACTORIES[name] = factory


def _spec_parts(spec: str) -> list[str]:
    """``"rule+wrapper+..."`` as its non-empty parts, stripped."""
    return [p.strip() for p in spec.split("+") if p.strip()]


def learned_checkpoint(spec: str) -> str | None:
    """The checkpoint folder of a learned-rule spec (``rledit:PATH[+wrappers]``; PATH may be a shipped
    checkpoint's name, :mod:`edit_gym.shipped`), else None."""
    from edit_gym.shipped import resolve_checkpoint

    parts = _spec_parts(spec)
    kind, _, path = parts[0].partition(":") if parts else ("", "", "")
    return resolve_checkpoint(path) if kind == "rledit" and path else None


class Editor:
    """A base rule followed by zero or more wrappers, chosen by a spec like ``"covariance+nullspace"``."""

    def __init__(self, spec: str, context: RuleContext, **params: float) -> None:
        parts = _spec_parts(spec)
        known = (
            ", ".join(sorted(BASE_RULES))
            + ", rledit:CHECKPOINT_DIR; wrappers: "
            + ", ".join(sorted(WRAPPERS))
        )
        checkpoint = learned_checkpoint(spec)
        learned = bool(parts) and parts[0].partition(":")[0] == "rledit"
        if learned and checkpoint is None:
            raise ValueError(f"editor {spec!r}: a learned rule needs its checkpoint, as rledit:PATH")
        if not parts or not (learned or parts[0] in BASE_RULES):
            raise ValueError(f"unknown editor {spec!r} (rules: {known})")
        bad = [p for p in parts[1:] if p not in WRAPPERS]
        if bad or len(set(parts[1:])) != len(parts[1:]):
            raise ValueError(
                f"unknown or repeated editor wrapper(s) {bad or parts[1:]} in {spec!r} (rules: {known})"
            )
        self.spec = spec
        self.log_lambda = float(params.get("log_lambda", 0.0))
        base = parts[0]
        if learned:
            from edit_gym.editing.hypernet import LearnedRule

            self.rule = LearnedRule.from_checkpoint(checkpoint, context.candidates)
        else:
            self.rule = RULE_FACTORIES[base](context, params)
        self.wrappers = []
        for name in parts[1:]:
            if name == "nullspace":
                self.wrappers.append(AlphaEditWrapper(context, params.get("null_threshold", 1e-2)))
            elif name == "topk":
                self.wrappers.append(RectWrapper(context, params.get("rect_keep", 0.2)))
            else:
                self.wrappers.append(PruneWrapper(context))

    def update(self, j: int, keys: torch.Tensor, grads: torch.Tensor, weight: torch.Tensor) -> Update:
        alpha = next((w for w in self.wrappers if isinstance(w, AlphaEditWrapper)), None)
        if alpha is not None and isinstance(self.rule, RidgeRule | CovarianceRule):
            update = alpha.solve(j, keys, desired_change(keys, grads, self.rule.step_size), self.log_lambda)
        else:
            update = self.rule.update(j, keys, grads, weight)
            if alpha is not None:  # gradient, learned rules: the projection of the rule's own update
                update = alpha.transform(j, update)
        for w in self.wrappers:
            if hasattr(w, "transform") and w is not alpha:
                update = w.transform(j, update)
        return update

    def prepare(self) -> None:
        """Build per-candidate state (MEMIT's inverses, AlphaEdit's projectors) before an episode,
        so one-time set-up is never counted as the cost of an edit."""
        for j in range(len(self.rule.context.candidates) if isinstance(self.rule, CovarianceRule) else 0):
            self.rule.inverse(j)
        for w in self.wrappers:
            if isinstance(w, AlphaEditWrapper):
                for j in range(len(w.context.candidates)):
                    w.projector(j)

    @property
    def needs_covariance(self) -> bool:
        return (
            isinstance(self.rule, CovarianceRule)
            or bool(getattr(self.rule, "needs_covariance", False))  # a registered rule may ask for C0
            or any(isinstance(w, AlphaEditWrapper) for w in self.wrappers)
        )

    def restrain(self, j: int) -> None:
        """Right after an update is applied: wrappers that act on the weights (PRUNE)."""
        for w in self.wrappers:
            if hasattr(w, "restrain"):
                w.restrain(j)

    def record(self, j: int, keys: torch.Tensor) -> None:
        """Once an edit is kept: wrappers that remember it (AlphaEdit's preserved keys)."""
        for w in self.wrappers:
            if hasattr(w, "record"):
                w.record(j, keys)

    def reset(self) -> None:
        for w in self.wrappers:
            if hasattr(w, "reset"):
                w.reset()

    def episode_state(self) -> dict:
        """What the wrappers remember of the current episode (AlphaEdit's edited keys), on the CPU."""
        return {
            w.name: {j: q.cpu() for j, q in w._edited.items()}
            for w in self.wrappers
            if isinstance(w, AlphaEditWrapper)
        }

    def load_episode_state(self, state: dict) -> None:
        for w in self.wrappers:
            if isinstance(w, AlphaEditWrapper) and w.name in state:
                cands = w.context.candidates
                w._edited = {j: q.to(cands[j].param.device) for j, q in state[w.name].items()}
