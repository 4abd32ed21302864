"""One named method's edit, stage by stage: target, keys, write (spread), restrain.

:class:`MethodEditor` is what the environment calls for ``editor="rome" | "memit" | ...``
(:mod:`edit_gym.editing.methods`). A step is two calls, so a counterfactual selection can reuse the
same target (a step pays for one target optimization at most):

* :meth:`MethodEditor.plan` - the target stage for the step's requests at the top selected block;
* :meth:`MethodEditor.apply` - keys, spreading and the write over a selection, then the restraint.

All state a method keeps across steps (AlphaEdit's K_p, PRUNE's raw change, UltraEdit's running
statistics) is taken by :meth:`snapshot` and put back by :meth:`restore`, so a rolled-back step
leaves the editor exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from edit_gym.candidates import Candidate
from edit_gym.data.request import EditRequest
from edit_gym.editing.finetune import finetune_step
from edit_gym.editing.keys import SiteBatch, build_sites, read_sites
from edit_gym.editing.methods import METHODS, method_params
from edit_gym.editing.restraints import PruneState, rect_sparsify
from edit_gym.editing.rules import Update
from edit_gym.editing.spreading import shares, spread
from edit_gym.editing.targets import Target, gradient_target, optimize_target
from edit_gym.editing.ultraedit import UltraEditRule
from edit_gym.editing.write import AlphaEditWriter, CovarianceWriter
from edit_gym.tokens import PairEncoder


@dataclass
class EditContext:
    """What a method needs from the environment (all lazily computed things as callables)."""

    model: torch.nn.Module
    blocks: torch.nn.ModuleList
    candidates: list[Candidate]
    block_index: list[int]  # the block of each candidate
    encoder: PairEncoder
    covariance: Callable[[], list[torch.Tensor]]
    pristine: list[torch.Tensor]  # stored layout
    templates: Callable[[int, int], list[str]]  # (count, length) -> context templates
    backbone: str
    step_size: float


@dataclass
class Plan:
    """A step's requests and, for target-based methods, their sites and optimized target."""

    requests: list[EditRequest]
    sites: SiteBatch | None = None
    target: Target | None = None
    fault: str = ""
    info: dict = field(default_factory=dict)


class MethodEditor:
    """A named method (``rome``, ``memit``, ``alphaedit``, ``prune``, ``rect``, ``ft-l``, ``ultraedit``)."""

    def __init__(self, name: str, ctx: EditContext, overrides: dict | None = None) -> None:
        self.method = METHODS[name]
        self.name = name
        self.ctx = ctx
        d_in = ctx.candidates[0].shape[1]
        self.params = method_params(name, ctx.backbone, len(ctx.blocks), d_in, overrides)
        p = self.params
        write = self.method.write
        if write in ("rome", "memit"):
            self.writer: Any = CovarianceWriter(ctx.covariance, 0.0 if write == "rome" else float(p["lam"]))
        elif write == "alphaedit":
            self.writer = AlphaEditWriter(
                ctx.covariance, float(p["L2"]), p["nullspace_rule"], float(p["nullspace_value"]), p["kp_mode"]
            )
        else:
            self.writer = None
        self.prune = PruneState(float(p["prune_base"])) if self.method.restraint == "prune" else None
        self.ultra = (
            UltraEditRule(float(p["ultra_lr"]), float(p["ultra_lambda"])) if write == "ultraedit" else None
        )

    # ------------------------------------------------------------------ set-up and state
    @property
    def needs_covariance(self) -> bool:
        return self.writer is not None

    def band(self) -> list[int]:
        """Candidate indices of the method's default band on this backbone (its paper's recipe)."""
        blocks = set(self.params["band"])
        found = [j for j, b in enumerate(self.ctx.block_index) if b in blocks]
        if not found:
            raise ValueError(
                f"editor {self.name!r}: none of the candidates sits in its band {sorted(blocks)}; "
                "pass candidates that include those blocks' MLP output projections"
            )
        return found

    def prepare(self) -> None:
        """Per-candidate closed-form state of the band (so set-up is not counted as edit time)."""
        blocks = set(self.params["band"])
        band = [j for j, b in enumerate(self.ctx.block_index) if b in blocks]
        if isinstance(self.writer, CovarianceWriter):
            for j in band:
                self.writer.inverse(j)
        elif isinstance(self.writer, AlphaEditWriter):
            for j in band:
                self.writer.projector(j)
        if self.method.target != "none":
            self.templates()

    def templates(self) -> list[str]:
        return self.ctx.templates(int(self.params["templates"]), int(self.params["template_length"]))

    def reset(self) -> None:
        self.restore({})

    def snapshot(self) -> dict:
        out: dict[str, Any] = {}
        if self.writer is not None:
            out["writer"] = self.writer.state()
        if self.prune is not None:
            out["prune"] = self.prune.state()
        if self.ultra is not None:
            out["ultra"] = self.ultra.state()
        return out

    def episode_state(self) -> dict:
        """What the method remembers of the current episode (for pickling an env)."""
        return self.snapshot()

    def load_episode_state(self, state: dict) -> None:
        self.restore(state)

    def restore(self, state: dict) -> None:
        if self.writer is not None:
            self.writer.load_state(state.get("writer", {}))
        if self.prune is not None:
            self.prune.load_state(state.get("prune", {}))
        if self.ultra is not None:
            self.ultra.load_state(state.get("ultra", {}))

    # ------------------------------------------------------------------ the stages
    def order(self, selected) -> list[int]:
        return sorted((int(j) for j in selected), key=lambda j: (self.ctx.block_index[j], j))

    def plan(self, requests: list[EditRequest], selected, at: int | None = None) -> Plan:
        """The target stage (once per step), at the block of the highest selected candidate, or of
        candidate ``at`` when that sits higher."""
        plan = Plan(list(requests))
        if self.method.target == "none" or not len(selected):
            return plan
        highest = self.order([*selected, *([] if at is None else [at])])[-1]
        layer = self.ctx.block_index[highest]
        plan.sites = build_sites(self.ctx.encoder, plan.requests, self.templates(), self._device(highest))
        if self.params["target"] == "optimized":
            plan.target = optimize_target(self.ctx.model, self.ctx.blocks, layer, plan.sites, self.params)
        else:
            top = self.ctx.candidates[highest].module
            plan.target = gradient_target(
                self.ctx.model, self.ctx.blocks, layer, plan.sites, top, self.ctx.step_size
            )
        plan.fault = plan.target.fault
        plan.info = {
            "target_layer": layer,
            "target_nll": float(sum(plan.target.nll) / len(plan.target.nll)),
            "target_steps": float(sum(plan.target.steps) / len(plan.target.steps)),
        }
        return plan

    def _device(self, j: int):
        return self.ctx.candidates[j].param.device

    def apply(self, plan: Plan, selected, coefs, coef_range: float, capture=None) -> dict:
        """Write the step over ``selected`` (coefficients ``coefs``, one per selected candidate)."""
        order = self.order(selected)
        coef_of = {int(j): float(c) for j, c in zip(selected, coefs, strict=True)}
        if not order:
            return {}
        if self.method.write == "ft":
            return self._finetune(plan, order)
        if self.method.write == "ultraedit":
            return self._ultraedit(order, coef_of, coef_range, capture)
        if plan.target is None or plan.fault:
            raise RuntimeError("apply() needs a plan with a target (see plan.fault)")
        layer = plan.target.layer
        if self.ctx.block_index[order[-1]] > layer:
            raise ValueError("a selected candidate sits above the target block")
        top = self.ctx.blocks[layer]
        read_keys: dict[int, torch.Tensor] = {}

        def read(j: int):
            keys, now = read_sites(self.ctx.model, plan.sites, [self.ctx.candidates[j].module], top)
            return keys[0], now

        def write(j: int, keys: torch.Tensor, resid: torch.Tensor) -> None:
            update = self.writer.solve(j, keys, resid)
            self._write(j, update)
            read_keys[j] = keys

        fractions = shares([coef_of[j] for j in order], coef_range)
        layers = spread(order, fractions, plan.target.z, read, write)
        for j, keys in read_keys.items():
            self.writer.record(j, keys)
        return {"spread": layers}

    def _write(self, j: int, update: Update) -> None:
        cand = self.ctx.candidates[j]
        w0 = self.ctx.pristine[j]
        w0 = (w0.t() if cand.transposed else w0).float()
        if self.method.restraint == "rect":
            update = Update(
                dense=rect_sparsify(
                    update.matrix(), w0.to(update.matrix().device), float(self.params["rect_keep"])
                )
            )
        if self.prune is not None:
            total = self.prune.restrain(j, w0, update.matrix().to(w0.device).float())
            with torch.no_grad():
                cand.weight().copy_((w0 + total).to(cand.param.dtype))
            return
        update.apply_(cand, 1.0)

    def _finetune(self, plan: Plan, order: list[int]) -> dict:
        batch = self.ctx.encoder.encode(
            [(r.prompt, r.target_new) for r in plan.requests], device=self._device(order[0])
        )
        p = self.params
        return finetune_step(
            self.ctx.model,
            [self.ctx.candidates[j] for j in order],
            batch,
            steps=int(p["ft_steps"]),
            lr=float(p["ft_lr"]),
            norm_constraint=float(p["norm_constraint"]),
        )

    def _ultraedit(self, order: list[int], coef_of: dict, coef_range: float, capture) -> dict:
        if capture is None:
            raise RuntimeError("ultraedit needs the step's answer-position capture")
        self.ultra.observe([capture.keys[j] for j in order], [capture.grads[j] for j in order])
        for j in order:
            update = self.ultra.update(capture.keys[j], capture.grads[j])
            update.apply_(self.ctx.candidates[j], float(coef_range) ** coef_of[j])
        return {}
