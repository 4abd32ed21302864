"""``LifelongEdit``: a stream of edit requests applied to one language model, as a Gymnasium env.

One episode is a stream of ``num_edits`` requests, ``edits_per_step`` per step, written into the
same weights. At each step the agent sees the current request and per-candidate statistics of it
and of the history, and answers with a mask over the candidate matrices and a coefficient per
candidate; the env's update rule turns the request into a change per selected matrix, scaled by
the coefficient, and applies it. ``reset(seed)`` restores the pristine weights bit-exactly (from a
copy of the candidate matrices only) and draws a new stream. See ``docs/concepts.md`` for the
observation, action and reward tables.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode

from edit_gym.actions import InvalidActionError, decode_action, make_action_space
from edit_gym.architectures import architecture_for, block_of, default_candidates
from edit_gym.backbones import Backbone, load_backbone
from edit_gym.candidates import Candidate, resolve_candidates
from edit_gym.config import METHOD_OPTION_DEFAULTS, EnvConfig, make_config
from edit_gym.data import EditRequest, InvalidRecordError, load_requests, resolve_known_only
from edit_gym.editing.capture import EditCapture, capture
from edit_gym.editing.covariance import key_covariance
from edit_gym.editing.methods import METHODS
from edit_gym.editing.pipeline import EditContext, MethodEditor
from edit_gym.editing.rules import Editor, RuleContext, learned_checkpoint
from edit_gym.editing.scores import (
    Reference,
    answer_logprobs,
    drift_from_reference,
    pair_slices,
)
from edit_gym.editing.scores import references as compute_references
from edit_gym.editing.spreading import shares
from edit_gym.pristine_store import PristineStore
from edit_gym.render import render_ansi, render_mask_heatmap
from edit_gym.tokens import EmptyAnswerError, PairEncoder

# Per-candidate statistics, in column order, with their bounds (the observation is clipped to them).
LAYER_STATS = (
    ("log10_key_norm", -12.0, 6.0),
    ("log10_value_grad_norm", -12.0, 6.0),
    ("log10_grad_norm", -12.0, 6.0),
    ("edit_loss", 0.0, 50.0),
    ("relative_drift", 0.0, 10.0),
    ("edited_fraction", 0.0, 1.0),
    ("key_overlap", 0.0, 1.0),
    ("write_effect", -1.0, 1.0),
)
PROGRESS = (("step_fraction", 1.0), ("success_rate", 1.0), ("mean_edit_loss", 50.0), ("mean_kl", 50.0))
KEY_HISTORY = 128  # edited keys remembered per candidate for the overlap statistic


class _SharedBase:
    """One loaded backbone per (model, device, dtype) in a process, shared by the envs built on it.

    A vector env of N sub-envs then holds one model plus N copies of the *candidate* matrices, not N
    models. Each env owns its candidate weights; before it touches the model it swaps them in
    (``_ModelState.activate``: a pointer swap per candidate, no copy). The loaded weights stay the
    pristine reference of every env; backup buffers and C0 are shared too (envs step one at a time).
    """

    def __init__(self, cfg: EnvConfig) -> None:
        self.backbone: Backbone = load_backbone(
            cfg.model, device=cfg.device, dtype=cfg.dtype, device_map=cfg.device_map
        )
        self.encoder = PairEncoder(self.backbone.tokenizer)
        self.pristine: dict[str, torch.Tensor] = {}  # candidate name -> the loaded weights (never written)
        self.modules: dict[str, torch.nn.Module] = {}  # candidate name -> its module, for every env's names
        self.backup: dict[str, torch.Tensor] = {}  # reused buffers: no fresh allocation per step
        self.covariance: dict[tuple[str, ...], list[torch.Tensor]] = {}
        # the pristine model's answers to locality probes, on disk across runs (fingerprinted at load)
        store_key = f"{self.backbone.fingerprint[:16]}-{self.backbone.device.type}"
        self.pristine_store = PristineStore(self.backbone.name, store_key)
        self.active: weakref.ref | None = None  # the _ModelState whose weights are in the model


_SHARED_BASES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _shared_base(cfg: EnvConfig) -> _SharedBase:
    if not cfg.share_model:
        return _SharedBase(cfg)
    key = (cfg.model, cfg.device, cfg.dtype, json.dumps(cfg.device_map, sort_keys=True))
    base = _SHARED_BASES.get(key)
    if base is None:
        base = _SHARED_BASES[key] = _SharedBase(cfg)
    return base


class _ModelState:
    """The heavy, rebuildable part of the env: its candidate weights over a (shared) backbone.

    Every access to the model or the candidates goes through :meth:`activate`, so an env always
    computes with its own weights even when other envs of the process share the backbone.
    """

    def __init__(self, cfg: EnvConfig) -> None:
        self.base = _shared_base(cfg)
        self.backbone: Backbone = self.base.backbone
        names = cfg.candidates or self._default_names(cfg.editor)
        self._candidates: list[Candidate] = resolve_candidates(self.backbone.model, list(names))
        for c in self._candidates:  # the first env to name a matrix records its loaded weights
            self.base.pristine.setdefault(c.name, c.param.data)
            self.base.modules.setdefault(c.name, c.module)
        self.pristine = [self.base.pristine[c.name] for c in self._candidates]
        self.own = [w.clone() for w in self.pristine]
        self.pristine_norm = [float(w.float().norm()) for w in self.pristine]
        self.encoder = self.base.encoder
        self.activate()

    def activate(self) -> None:
        """Put this env's candidate weights into the (shared) model, if another env's are there.

        Matrices that other envs edit but this one does not get their pristine weights back: an
        env with other candidates must never compute with a neighbour's edits.
        """
        if self.base.active is not None and self.base.active() is self:
            return
        mine = {c.name: w for c, w in zip(self._candidates, self.own, strict=True)}
        for name, module in self.base.modules.items():
            module.weight.data = mine.get(name, self.base.pristine[name])
        self.base.active = weakref.ref(self)

    @property
    def candidates(self) -> list[Candidate]:
        self.activate()
        return self._candidates

    def _default_names(self, editor: str) -> list[str]:
        """A learned editor's own candidates (it was trained on them), else the architecture's default."""
        checkpoint = learned_checkpoint(editor)
        if checkpoint is not None:
            from edit_gym.editing.hypernet import trained_candidates

            return trained_candidates(checkpoint)
        return default_candidates(self.backbone.model_type, self.backbone.num_blocks)

    def covariance(self) -> list[torch.Tensor]:
        """Per-candidate key covariance C0 of ordinary text (computed on the pristine weights, cached)."""
        key = tuple(c.name for c in self._candidates)
        if key not in self.base.covariance:
            with self.at_pristine():
                self.base.covariance[key] = key_covariance(self.backbone, self._candidates)
        return self.base.covariance[key]

    @contextmanager
    def at_pristine(self) -> Iterator[None]:
        """Within the block the model computes with this env's pristine weights; its edits come back after."""
        edited = [w.clone() for w in self.own]
        self.restore()
        try:
            self.activate()
            yield
        finally:
            self.restore(edited)

    def rule_context(self) -> RuleContext:
        return RuleContext(self.candidates, self.pristine, self.covariance)

    @property
    def model(self) -> torch.nn.Module:
        self.activate()
        return self.backbone.model

    @torch.no_grad()
    def backup(self, indices) -> None:
        """Copy the named candidates aside, so a faulty update can be undone bit-exactly."""
        for j in indices:
            name = self._candidates[j].name
            buf = self.base.backup.get(name)
            if buf is None:
                buf = self.base.backup[name] = torch.empty_like(self.own[j])
            buf.copy_(self.own[j])

    @torch.no_grad()
    def roll_back(self, indices) -> None:
        for j in indices:
            self.own[j].copy_(self.base.backup[self._candidates[j].name])

    @torch.no_grad()
    def restore(self, weights: list[torch.Tensor] | None = None) -> None:
        for own, saved in zip(self.own, weights or self.pristine, strict=True):
            own.copy_(saved)


class LifelongEditEnv(gym.Env):
    """Lifelong model editing as an RL environment (ids ``LifelongEdit-v0``, ``LifelongEdit-Tiny-v0``)."""

    metadata = {
        "render_modes": ["ansi", "rgb_array"],
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    @classmethod
    def default_config(cls) -> dict:
        """Every option and its default (see :class:`edit_gym.config.EnvConfig`)."""
        return asdict(EnvConfig())

    def __init__(self, render_mode: str | None = None, config: dict | None = None, **kwargs: Any) -> None:
        self.cfg = make_config(config, **kwargs)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r} (known: {self.metadata['render_modes']})")
        self.render_mode = render_mode
        self._state = _ModelState(self.cfg)
        self._requests = self._load_requests()
        defaults = self._state.backbone.defaults
        step = self.cfg.step_size if self.cfg.step_size is not None else defaults["step_size"]
        self._rule = self._build_editor()
        self.step_size = float(step)
        self.num_candidates = len(self._state.candidates)
        # the last step takes what is left when edits_per_step does not divide the stream (839 = prime)
        self.num_steps = -(-self.cfg.num_edits // self.cfg.edits_per_step)
        self.candidate_names = [c.name for c in self._state.candidates]
        embed_dim = self._state.model.get_input_embeddings().weight.shape[1]
        low = np.array([lo for _, lo, _ in LAYER_STATS], dtype=np.float32)
        high = np.array([hi for _, _, hi in LAYER_STATS], dtype=np.float32)
        self.observation_space = spaces.Dict(
            {
                "request": spaces.Box(-1.0, 1.0, (2 * embed_dim,), dtype=np.float32),
                "layer_stats": spaces.Box(
                    np.tile(low, (self.num_candidates, 1)),
                    np.tile(high, (self.num_candidates, 1)),
                    dtype=np.float32,
                ),
                "progress": spaces.Box(
                    np.zeros(len(PROGRESS), np.float32),
                    np.array([h for _, h in PROGRESS], np.float32),
                    dtype=np.float32,
                ),
            }
        )
        if self.cfg.budget is not None and self.cfg.budget > self.num_candidates:
            raise ValueError(f"budget {self.cfg.budget} exceeds the {self.num_candidates} candidates")
        self.action_space = make_action_space(
            self.cfg.action_type, self.num_candidates, self.cfg.coef_levels, self.cfg.budget
        )
        self._references: dict[int, list[Reference]] = {}
        self._embeddings: dict[int, np.ndarray] = {}
        self._ready = False

    def _build_editor(self) -> Editor | MethodEditor:
        if self.cfg.editor in METHODS:
            return self._build_method()
        if self.cfg.editor_params or self.cfg.target:
            raise ValueError(
                f"editor_params and target apply to the named methods ({', '.join(sorted(METHODS))}), "
                f"not to the one-step rule {self.cfg.editor!r}"
            )
        for option, default in METHOD_OPTION_DEFAULTS.items():
            value = getattr(self.cfg, option)
            if value != default:
                raise ValueError(
                    f"{option}={value!r} needs a named method as the editor "
                    f"({', '.join(sorted(METHODS))}), not the one-step rule {self.cfg.editor!r}"
                )
        try:
            return self._one_step_editor()
        except ValueError as err:
            if str(err).startswith("unknown editor"):
                raise ValueError(f"{err}; named methods: {', '.join(sorted(METHODS))}") from None
            raise

    def _one_step_editor(self) -> Editor:
        return Editor(
            self.cfg.editor,
            self._state.rule_context(),
            log_lambda=self.cfg.log_lambda,
            cov_weight=self.cfg.cov_weight,
            null_threshold=self.cfg.null_threshold,
            rect_keep=self.cfg.rect_keep,
        )

    def _build_method(self) -> MethodEditor:
        backbone = self._state.backbone
        spec = architecture_for(backbone.model_type)
        cands = self._state.candidates
        blocks = [block_of(backbone.model_type, c.name) for c in cands]
        bad = [
            c.name
            for c, b in zip(cands, blocks, strict=True)
            if b is None or not c.name.endswith(spec.mlp_out)
        ]
        if bad:
            raise ValueError(
                f"editor {self.cfg.editor!r} writes MLP output projections ({spec.blocks}.N.{spec.mlp_out}); "
                f"these candidates are not: {', '.join(bad[:3])}"
            )
        overrides = dict(self.cfg.editor_params or {})
        if self.cfg.target is not None:
            overrides["target"] = self.cfg.target
        ctx = EditContext(
            model=self._state.model,
            blocks=self._state.model.get_submodule(spec.blocks),
            candidates=cands,
            block_index=[int(b) for b in blocks],
            encoder=self._state.encoder,
            covariance=self._state.covariance,
            pristine=self._state.pristine,
            templates=self._templates,
            backbone=backbone.name,
            step_size=float(self.cfg.step_size or backbone.defaults["step_size"]),
        )
        return MethodEditor(self.cfg.editor, ctx, overrides)

    def _templates(self, count: int, length: int) -> list[str]:
        """MEMIT's context templates for this backbone (sampled once, on pristine weights)."""
        from edit_gym.editing.prefixes import context_templates

        key = (count, length)
        cache = self.__dict__.setdefault("_template_cache", {})
        if key not in cache:
            with self._state.at_pristine():
                cache[key] = context_templates(self._state.backbone, count, length)
        return cache[key]

    @property
    def method(self) -> MethodEditor | None:
        """The named method writing the edits (``editor="memit"``, ...), or None for a one-step rule."""
        return self._rule if isinstance(self._rule, MethodEditor) else None

    # ------------------------------------------------------------------ data
    def _load_requests(self) -> list[EditRequest]:
        from edit_gym.known import known_requests

        requests = load_requests(self.cfg.dataset)
        known_only = resolve_known_only(self.cfg.known_only, self.cfg.dataset)
        if known_only:
            requests = known_requests(self._state.backbone, requests, self.cfg.dataset)
        for r in requests:  # every target must tokenize to something before any episode starts
            try:
                self._state.encoder.ids(r.target_new, answer=True)
            except EmptyAnswerError as err:
                raise InvalidRecordError(f"record {r.uid!r}: field 'target_new': {err}") from None
        if len(requests) < self.cfg.num_edits:
            raise ValueError(
                f"dataset {self.cfg.dataset!r} has {len(requests)} usable requests"
                f"{' (known to the model)' if known_only else ''}, fewer than num_edits={self.cfg.num_edits}"
            )
        return requests

    @property
    def requests(self) -> list[EditRequest]:
        """All requests an episode may draw from."""
        return self._requests

    @property
    def model(self) -> torch.nn.Module:
        """The language model being edited (its candidate weights change during an episode)."""
        return self._state.model

    @property
    def candidates(self) -> list[Candidate]:
        return self._state.candidates

    @property
    def encoder(self) -> PairEncoder:
        """The backbone's (prompt, answer) encoder, with its token cache."""
        return self._state.encoder

    @property
    def device(self) -> torch.device:
        return torch.device(self._state.backbone.device)

    @property
    def stream(self) -> list[EditRequest]:
        """The current episode's requests, in edit order (drawn by ``reset``)."""
        if not hasattr(self, "_stream"):
            raise gym.error.ResetNeeded("call reset() before reading the stream")
        return [self._requests[int(i)] for i in self._stream]

    def update_scales(self, mask: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """The scale the env multiplies each candidate's unit update by, for an action (mask, coef)."""
        return self._scales(np.asarray(mask, dtype=bool), np.asarray(coef, dtype=np.float64))

    def _batch_requests(self, step: int) -> list[int]:
        b = self.cfg.edits_per_step
        return [int(i) for i in self._stream[step * b : (step + 1) * b]]

    def _ensure_references(self, indices) -> None:
        """Cache the pristine model's distributions on each request's neighbourhood (call when pristine)."""
        missing = [i for i in indices if i not in self._references]
        pairs = [(p.prompt, p.answer) for i in missing for p in self._requests[i].neighbourhood]
        if not pairs:
            self._references.update({i: [] for i in missing})
            return
        refs = self._state.base.pristine_store.references(
            pairs,
            lambda todo: compute_references(
                self.model, self._state.encoder, todo, device=self._state.backbone.device
            ),
        )
        at = 0
        for i in missing:
            n = len(self._requests[i].neighbourhood)
            self._references[i] = refs[at : at + n]
            at += n

    def _embedding(self, index: int) -> np.ndarray:
        """Frozen request embedding: unit-norm mean input embeddings of the subject and of the prompt."""
        hit = self._embeddings.get(index)
        if hit is None:
            r = self._requests[index]
            table = self.model.get_input_embeddings().weight
            enc = self._state.encoder
            parts = []
            for ids in (enc.ids(r.subject, answer=True), enc.ids(r.prompt, answer=False)):
                v = table[torch.tensor(ids, device=table.device)].float().mean(0)
                parts.append((v / v.norm().clamp_min(1e-8)).cpu().numpy())
            hit = np.concatenate(parts).astype(np.float32)
            self._embeddings[index] = hit
        return hit

    # ------------------------------------------------------------------ core
    def _capture(self, step: int) -> EditCapture:
        reqs = [self._requests[i] for i in self._batch_requests(step)]
        batch = self._state.encoder.encode(
            [(r.prompt, r.target_new) for r in reqs], device=self._state.backbone.device
        )
        return capture(self.model, self.candidates, batch)

    def _observation(self) -> dict[str, np.ndarray]:
        cap = self._cap
        stats = np.zeros((self.num_candidates, len(LAYER_STATS)), dtype=np.float64)
        with torch.no_grad():
            for j, (k, g) in enumerate(zip(cap.keys, cap.grads, strict=True)):
                grad_norm = float(((k @ k.T) * (g @ g.T)).sum().clamp_min(0).sqrt())
                stats[j, 0] = np.log10(float(k.norm(dim=1).mean()) + 1e-12)
                stats[j, 1] = np.log10(float(g.norm(dim=1).mean()) + 1e-12)
                stats[j, 2] = np.log10(grad_norm + 1e-12)
                count = int(self._key_count[j])
                if count:
                    unit = k.mean(0)
                    unit = unit / unit.norm().clamp_min(1e-12)
                    hist = self._key_history[j][: min(count, KEY_HISTORY)]
                    stats[j, 6] = float((hist @ unit.to(hist.device)).abs().max())
        stats[:, 3] = cap.loss
        stats[:, 4] = self._drift
        stats[:, 5] = self._times_edited / self.num_steps
        stats[:, 7] = self._moved_sum / np.maximum(self._moved_count, 1)
        done = max(self._t, 1)
        progress = np.array(
            [self._t / self.num_steps, self._success_sum / done, self._loss_sum / done, self._kl_sum / done]
        )
        request = np.mean(
            [self._embedding(i) for i in self._batch_requests(min(self._t, self.num_steps - 1))], axis=0
        )
        space = self.observation_space
        return {
            "request": np.clip(request, -1.0, 1.0).astype(np.float32),
            "layer_stats": np.clip(stats, space["layer_stats"].low, space["layer_stats"].high).astype(
                np.float32
            ),
            "progress": np.clip(progress, space["progress"].low, space["progress"].high).astype(np.float32),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state.activate()
        self._state.restore()
        self._rule.reset()
        if self._rule.needs_covariance:
            self._state.covariance()  # computed once, on pristine weights
        self._rule.prepare()
        self._stream = self._draw_stream(options)
        self._ensure_references(self._stream.tolist())
        self._t = 0
        n = self.num_candidates
        self._times_edited = np.zeros(n)
        self._drift = np.zeros(n)
        self._moved_sum = np.zeros(n)  # spreading methods: the residual fraction each write removed
        self._moved_count = np.zeros(n)
        self._key_count = np.zeros(n, dtype=np.int64)
        self._key_history = [
            torch.zeros(KEY_HISTORY, c.shape[1], device=c.param.device) for c in self.candidates
        ]
        self._mask_history = np.zeros((self.num_steps, n), dtype=np.float32)
        self._success_sum = self._loss_sum = self._kl_sum = 0.0
        self._last: dict[str, Any] = {}
        self._cap = self._capture(0)
        self._ready = True
        return self._observation(), {"edit_index": 0, "num_requests": len(self._requests)}

    def stream_for(self, seed: int) -> list[int]:
        """The request indices (into :attr:`requests`) that ``reset(seed=seed)`` streams, in order,
        drawn without resetting: no weight, reference or episode state is touched."""
        rng, _ = seeding.np_random(seed)
        return [int(i) for i in self._seeded_stream(rng)]

    def _seeded_stream(self, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self._requests), size=self.cfg.num_edits, replace=False)

    def _draw_stream(self, options: dict | None) -> np.ndarray:
        """The episode's request order: ``options["stream"]`` (request indices) if given, else seeded."""
        stream = (options or {}).get("stream")
        if stream is None:
            return self._seeded_stream(self.np_random)
        order = np.asarray(stream)
        if (
            order.ndim != 1
            or len(order) != self.cfg.num_edits
            or not np.issubdtype(order.dtype, np.integer)
            or len(set(order.tolist())) != len(order)
            or (len(order) and (order.min() < 0 or order.max() >= len(self._requests)))
        ):
            raise ValueError(
                f"options['stream'] must be {self.cfg.num_edits} distinct request indices in "
                f"[0, {len(self._requests)}), got {stream!r}"
            )
        return order.astype(np.int64)

    def _scales(self, mask: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """Per-candidate update scale: step * coef_range ** coef, spread over the selection, 0 if unselected."""
        scales = self.step_size * self.cfg.coef_range**coef
        if self.cfg.spread and mask.any():
            scales = scales / mask.sum()
        return np.where(mask, scales, 0.0)

    def writable(self) -> np.ndarray:
        """Which candidates a step can write: all, except under ``target_block="band"``, where the
        target sits at the band's top block and the candidates above it cannot take it."""
        if self.method is None or self.cfg.target_block != "band":
            return np.ones(self.num_candidates, dtype=bool)
        blocks = np.asarray(self.method.ctx.block_index[: self.num_candidates])
        return blocks <= blocks[self._band_top()]

    def _band_top(self) -> int:
        """The candidate of the named method's band in the highest block."""
        return max(self.method.band(), key=lambda j: self.method.ctx.block_index[j])

    def action_masks(self) -> np.ndarray:
        """Valid action components for sb3-contrib's ``MaskablePPO`` (flat, one entry per choice).

        ``slots``: "none" is forbidden in the first slot, so a masked policy always selects at least
        one candidate; every other choice of a :meth:`writable` candidate is allowed. ``mask`` /
        ``multidiscrete``: selecting a candidate that is not writable is forbidden.
        """
        n = self.num_candidates
        writable = self.writable()
        if self.cfg.action_type == "slots":
            masks = np.ones((self.cfg.budget, n + 1), dtype=bool)
            masks[:, :n] = writable
            masks[0, n] = False
            return masks.ravel()
        levels = {"mask": 2, "multidiscrete": self.cfg.coef_levels + 1}
        if self.cfg.action_type not in levels:
            raise NotImplementedError(
                f"action masks exist for discrete action types, not {self.cfg.action_type!r}"
            )
        masks = np.ones((n, levels[self.cfg.action_type]), dtype=bool)
        masks[:, 1:] = writable[:, None]  # choice 0 skips the candidate; the others select it
        return masks.ravel()

    def step(self, action):
        if not self._ready:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self._t >= self.num_steps:
            raise gym.error.ResetNeeded("the edit stream is finished; call reset() to start a new episode")
        self._state.activate()
        mask, coef = decode_action(
            action, self.cfg.action_type, self.num_candidates, self.cfg.coef_levels, self.cfg.budget
        )
        cap = self._cap
        if self.method is not None:
            selected, scales, fault, all_metrics, metrics, extra = self._method_write(mask, coef)
        else:
            selected, scales, fault, all_metrics, metrics = self._rule_write(mask, coef)
            extra = {}
        if fault:
            selected = np.array([], dtype=np.int64)
        if self.method is None:
            for j in selected:
                self._rule.record(j, cap.keys[j])
        self._record_edit(selected, mask, coef, metrics)
        touched = len(selected) / self.num_candidates
        terms = self._reward_terms(metrics, touched)
        if all_metrics is not None:
            own = terms["reward_edit"] + terms["reward_locality"]
            everyone = -all_metrics["edit_loss_after"] - self.cfg.w_loc * all_metrics["kl"]
            terms = {
                **terms,
                "reward_all_candidates": everyone,  # the reference's reward (named for the default)
                "reward_reference": everyone,
                "reward_advantage": own - everyone,
            }
            reward = terms["reward_advantage"] + terms["reward_sparsity"]
        else:
            reward = float(sum(terms.values()))
        if fault:
            reward = -float(self.cfg.max_loss)
        self._t += 1
        terminated = self._t >= self.num_steps or bool(fault)
        info: dict[str, Any] = {
            **terms,
            "edit_loss_before": cap.loss,
            **metrics,
            "layers_touched": len(selected),
            "touched_fraction": touched,
            "edit_index": min(self._t * self.cfg.edits_per_step, self.cfg.num_edits),
            "edited_candidates": [int(j) for j in selected],
            "coef_magnitude": float(np.abs(coef[selected]).mean()) if len(selected) else 0.0,
            "fault": fault,
            **extra,
        }
        if terminated:
            final = self.evaluate("edited") if self.cfg.final_eval else {}
            info.update({f"final_{k}": v for k, v in final.items()})
            info["is_success"] = bool(not fault and final.get("efficacy", 0.0) >= self.cfg.success_threshold)
            self._ready = False
        else:
            self._cap = self._capture(self._t)
        self._last = {"reward": reward, "mask": mask, "coef": coef, "scales": scales, **info}
        return self._observation(), reward, terminated, False, info

    def _reward_terms(self, metrics: dict, touched: float) -> dict[str, float]:
        """The plain reward's terms for post-edit ``metrics`` and the fraction of candidates touched."""
        return {
            "reward_edit": -metrics["edit_loss_after"],
            "reward_locality": -self.cfg.w_loc * metrics["kl"],
            "reward_sparsity": -self.cfg.w_sparse * touched,
        }

    def _rule_write(self, mask: np.ndarray, coef: np.ndarray):
        """A one-step rule: each selected candidate's unit update, scaled by the action, added."""
        scales = self._scales(mask, coef)
        selected = np.flatnonzero(mask)
        cap = self._cap
        updates = {}
        with torch.no_grad():
            for j in selected:
                updates[j] = self._rule.update(j, cap.keys[j], cap.grads[j], self.candidates[j].weight())
        fault = ""
        all_metrics = None
        if self.cfg.reward == "advantage":
            all_metrics = self._all_candidates_outcome(coef, updates)
        if any(not u.is_finite() for u in updates.values()):
            fault = "non-finite update (not applied)"
        else:
            self._state.backup(selected)
            for j, update in updates.items():
                update.apply_(self.candidates[j], float(scales[j]))
                self._rule.restrain(j)
        metrics = self._post_edit_metrics()
        if not fault and not self._loss_ok(metrics):
            fault = f"edit loss after update {metrics['edit_loss_after']:.3g} exceeds max_loss (rolled back)"
            self._state.roll_back(selected)
            metrics = self._post_edit_metrics()
        return selected, scales, fault, all_metrics, metrics

    def _loss_ok(self, metrics: dict) -> bool:
        return bool(
            np.isfinite(metrics["edit_loss_after"]) and metrics["edit_loss_after"] <= self.cfg.max_loss
        )

    def _weights_finite(self, indices) -> bool:
        return all(bool(torch.isfinite(self.candidates[j].param).all()) for j in indices)

    def _method_write(self, mask: np.ndarray, coef: np.ndarray):
        """A named method: the step's target once, spread over the selected candidates in layer order.

        The target block is the highest selected candidate's, or with ``target_block="band"`` the
        band's top (selected candidates above it are left out: ``info["not_writable"]``). With
        ``reward="advantage"`` the reference outcome (``reference="all"``: every candidate at or
        below the target block; ``"band"``: the method's band cut there; coefficient 0) is written
        with the same target, scored and rolled back first. Any fault (a diverged target,
        non-finite weights, a loss above ``max_loss``) rolls the weights and the method's state
        back; the reason is in ``info["fault"]``.
        """
        method = self.method
        writable = self.writable()
        dropped = int(np.count_nonzero(mask & ~writable))  # above the band's top: cannot take its target
        selected = np.array(method.order(np.flatnonzero(mask & writable)), dtype=np.int64)
        reqs = [self._requests[i] for i in self._batch_requests(self._t)]
        fractions = shares([float(coef[j]) for j in selected], self.cfg.coef_range) if len(selected) else []
        scales = np.zeros(self.num_candidates)
        scales[selected] = fractions
        start = time.perf_counter()
        snapshot = method.snapshot()
        plan = method.plan(reqs, selected, self._band_top() if self.cfg.target_block == "band" else None)
        extra = {"target_layer": -1, "target_nll": float("nan"), "target_steps": 0.0, "not_writable": dropped}
        extra.update(plan.info, target_seconds=time.perf_counter() - start)
        reference = list(range(self.num_candidates))
        if self.cfg.reference == "band":
            reference = list(method.band())
        if plan.target is not None:
            top = plan.target.layer
            below = [j for j in range(self.num_candidates) if method.ctx.block_index[j] <= top]
            # a band entirely above the target block cannot take this target: then all below it
            reference = [j for j in reference if j in below] or below
        touched = sorted(
            set(selected.tolist()) | (set(reference) if self.cfg.reward == "advantage" else set())
        )
        self._state.backup(touched)
        all_metrics = None
        fault = plan.fault
        if self.cfg.reward == "advantage" and not fault:
            with torch.no_grad():
                method.apply(plan, reference, np.zeros(len(reference)), self.cfg.coef_range, self._cap)
            ok = self._weights_finite(reference)
            all_metrics = self._post_edit_metrics() if ok else {"edit_loss_after": float("inf"), "kl": 0.0}
            if not self._loss_ok(all_metrics):
                all_metrics = {**all_metrics, "edit_loss_after": float(self.cfg.max_loss)}
            self._state.roll_back(reference)
            method.restore(snapshot)
        if not fault and len(selected):
            with torch.no_grad():
                written = method.apply(plan, selected, coef[selected], self.cfg.coef_range, self._cap)
            fault = written.get("fault", "")
            if not fault and not self._weights_finite(selected):
                fault = "non-finite weights after the write"
        metrics = self._post_edit_metrics() if not fault else None
        if not fault and not self._loss_ok(metrics):
            fault = f"edit loss after update {metrics['edit_loss_after']:.3g} exceeds max_loss"
        moved = np.zeros(self.num_candidates)
        if not fault and len(selected):
            for layer in written.get("spread", []):
                moved[layer["candidate"]] = layer["moved"]
                self._moved_sum[layer["candidate"]] += layer["moved"]
                self._moved_count[layer["candidate"]] += 1
        extra["write_moved"] = moved  # per candidate: the fraction of the target residual it removed
        if fault:
            self._state.roll_back(selected)
            method.restore(snapshot)
            fault += " (rolled back)"
            metrics = self._post_edit_metrics()
        return selected, scales, fault, all_metrics, metrics, extra

    def _all_candidates_outcome(self, coef: np.ndarray, updates: dict) -> dict[str, float]:
        """Post-edit metrics had every candidate been edited (same request, rule and coefficients).

        Applied to the live weights, scored, and rolled back bit-exactly before the real action is
        applied; wrappers that remember edits (AlphaEdit) are not told. A non-finite or exploding
        outcome scores as max_loss.
        """
        n = self.num_candidates
        everyone = np.arange(n)
        scales = self._scales(np.ones(n, dtype=bool), coef)
        cap = self._cap
        with torch.no_grad():
            full = {
                j: updates[j]
                if j in updates
                else self._rule.update(j, cap.keys[j], cap.grads[j], self.candidates[j].weight())
                for j in everyone
            }
        if any(not u.is_finite() for u in full.values()):
            return {"edit_loss_after": float(self.cfg.max_loss), "kl": 0.0}
        self._state.backup(everyone)
        try:
            for j, update in full.items():
                update.apply_(self.candidates[j], float(scales[j]))
                self._rule.restrain(j)
            metrics = self._post_edit_metrics()
        finally:
            self._state.roll_back(everyone)
        loss = metrics["edit_loss_after"]
        if not np.isfinite(loss) or loss > self.cfg.max_loss:
            metrics = {**metrics, "edit_loss_after": float(self.cfg.max_loss)}
        return metrics

    def _post_edit_metrics(self) -> dict[str, float]:
        """One forward over the edit prompts and their neighbourhood, on the current weights."""
        idx = self._batch_requests(self._t)
        reqs = [self._requests[i] for i in idx]
        edit_pairs = [(r.prompt, r.target_new) for r in reqs]
        probe_pairs = [(p.prompt, p.answer) for r in reqs for p in r.neighbourhood]
        batch = self._state.encoder.encode(edit_pairs + probe_pairs, device=self._state.backbone.device)
        logp = answer_logprobs(self.model, batch)
        slices = pair_slices(batch)
        labels = batch.labels[batch.answer_mask]
        loss, acc = [], []
        for s in slices[: len(edit_pairs)]:
            loss.append(float(-logp[s].gather(1, labels[s, None]).mean()))
            acc.append(float((logp[s].argmax(-1) == labels[s]).float().mean()))
        refs = [ref for i in idx for ref in self._references[i]]
        kl_agree = [
            drift_from_reference(logp[s], ref) for s, ref in zip(slices[len(edit_pairs) :], refs, strict=True)
        ]
        return {
            "edit_loss_after": float(np.mean(loss)),
            "efficacy": float(np.mean(acc)),
            "kl": float(np.mean([k for k, _ in kl_agree])) if kl_agree else 0.0,
            "specificity": float(np.mean([a for _, a in kl_agree])) if kl_agree else 1.0,
        }

    def _record_edit(self, selected, mask, coef, metrics) -> None:
        cap = self._cap
        with torch.no_grad():
            for j in selected:
                cand = self.candidates[j]
                drift = torch.dist(cand.param.float(), self._state.pristine[j].float())
                self._drift[j] = float(drift) / max(self._state.pristine_norm[j], 1e-12)
                self._times_edited[j] += 1
                unit = cap.keys[j].mean(0)
                self._key_history[j][self._key_count[j] % KEY_HISTORY] = unit / unit.norm().clamp_min(1e-12)
                self._key_count[j] += 1
        self._mask_history[self._t] = np.where(mask, 0.5 + 0.5 * coef, -1.0) if len(selected) else -1.0
        self._success_sum += metrics["efficacy"]
        self._loss_sum += metrics["edit_loss_after"]
        self._kl_sum += metrics["kl"]

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self, which: str = "edited", *, extended: bool = False, wild: bool = False, progress: bool = False
    ) -> dict[str, float]:
        """Scores of the current weights on the episode's requests (see :mod:`edit_gym.evaluation`).

        ``which="edited"``: the requests applied so far (final timing when called at the end),
        with ``retention_first_n`` over the first ``FIRST_N`` of them; ``"stream"``: every request
        of the episode (call right after ``reset`` for the pre-edit row). ``extended=True`` adds
        fluency (greedy generations) and the perplexity probe, which cost generation passes.
        ``wild=True`` adds the generation-based protocol (:mod:`edit_gym.wild`, ``wild_*`` keys):
        greedy answers to the edit prompts, paraphrases and neighbourhood prompts, scored by exact
        match and token F1 against the target (neighbourhood: against the pre-edit model's own
        answers, generated once on pristine weights). ``progress``: progress bars over the
        generation passes of that protocol (minutes on long streams).
        """
        from edit_gym.evaluation import fluency, perplexity, score_requests

        if which not in ("edited", "stream"):
            raise ValueError(f"which must be 'edited' or 'stream', got {which!r}")
        idx = self._applied() if which == "edited" else [int(i) for i in self._stream]
        if not idx:
            return {}
        device, enc = self._state.backbone.device, self._state.encoder
        reqs = [self._requests[i] for i in idx]
        out = score_requests(self.model, enc, reqs, [self._references[i] for i in idx], device)
        tok = self._state.backbone.tokenizer
        if extended:
            out["fluency"] = fluency(self.model, tok, [r.prompt for r in reqs[:32]], device)
            out["perplexity"] = perplexity(self.model, self._heldout_samples(), device)
        if wild:
            out.update(self._wild_scores(idx, progress))
        return out

    def _wild_scores(self, idx: list[int], progress: bool = False) -> dict[str, float]:
        from edit_gym.wild import MAX_NEW_TOKENS, reference_generations, wild_scores

        reqs = [self._requests[i] for i in idx]
        probes = [p.prompt for r in reqs for p in r.neighbourhood]
        tok, device = self._state.backbone.tokenizer, self._state.backbone.device

        def generate(prompts: list[str]) -> list[str]:  # only those the store lacks, on pristine weights
            with self._state.at_pristine():
                return reference_generations(self.model, tok, prompts, device, MAX_NEW_TOKENS, progress)

        answers = self._state.base.pristine_store.generations(probes, generate, MAX_NEW_TOKENS)
        para = [(p, r.target_new) for r in reqs for p in r.paraphrases]
        return wild_scores(
            self.model,
            tok,
            device,
            edit_prompts=[r.prompt for r in reqs],
            targets=[r.target_new for r in reqs],
            paraphrase_prompts=[p for p, _ in para],
            paraphrase_targets=[t for _, t in para],
            locality_prompts=probes,
            locality_references=answers,
            # before any edit the model's answers are the references (no second generation pass)
            locality_answers=answers if self._t == 0 else None,
            progress=progress,
        )

    def _applied(self) -> list[int]:
        """Request indices of the edits applied so far, in stream order."""
        return [int(i) for i in self._stream[: min(self._t * self.cfg.edits_per_step, self.cfg.num_edits)]]

    def edit_efficacies(self) -> list[float]:
        """Efficacy of each edit applied so far, in stream order, on the current weights.

        Called at a few points of an episode, these rows make the retention matrix (edit i measured
        after edit j) of :func:`edit_gym.runner.run_episode`.
        """
        from edit_gym.editing.scores import accuracy

        pairs = [(self._requests[i].prompt, self._requests[i].target_new) for i in self._applied()]
        if not pairs:
            return []
        return accuracy(self.model, self._state.encoder, pairs, device=self._state.backbone.device)

    def edit_specificities(self) -> list[float]:
        """Per edit applied so far (stream order), the share of its own locality prompts on which
        the current weights still give the pre-edit model's top-1 answer; ``nan`` for an edit
        without locality prompts. The per-edit form of the ``specificity`` score, for paired
        comparisons of two runs on the same stream."""
        from edit_gym.editing.scores import drift

        idx = self._applied()
        probes = [
            (n, (p.prompt, p.answer), ref)
            for n, i in enumerate(idx)
            for p, ref in zip(self._requests[i].neighbourhood, self._references[i], strict=True)
        ]
        if not probes:
            return [float("nan")] * len(idx)
        agree = drift(
            self.model,
            self._state.encoder,
            [pair for _, pair, _ in probes],
            [ref for _, _, ref in probes],
            device=self._state.backbone.device,
        )
        sums, counts = np.zeros(len(idx)), np.zeros(len(idx))
        for (n, _, _), (_, a) in zip(probes, agree, strict=True):
            sums[n] += a
            counts[n] += 1
        return [float(s / c) if c else float("nan") for s, c in zip(sums, counts, strict=True)]

    def sample_outputs(self, count: int = 5, max_new_tokens: int = 8) -> list[dict[str, str]]:
        """Greedy outputs of the current weights on the first ``count`` prompts of the stream.

        Call after ``reset`` for the pre-edit outputs and after the stream for the edited ones;
        the rows feed the sample-edits table of the TensorBoard run and of the plots.
        """
        from edit_gym.evaluation import greedy_continuations

        if count < 0 or max_new_tokens < 1:
            raise ValueError(f"count must be >= 0 and max_new_tokens >= 1, got {count}, {max_new_tokens}")
        reqs = [self._requests[int(i)] for i in self._stream[:count]]
        if not reqs:
            return []
        tok = self._state.backbone.tokenizer
        ids = greedy_continuations(
            self.model, tok, [r.prompt for r in reqs], self._state.backbone.device, max_new_tokens
        )
        return [
            {
                "prompt": r.prompt,
                "target_new": r.target_new,
                "target_true": r.target_true or "",
                "output": tok.decode(seq, skip_special_tokens=True),
            }
            for r, seq in zip(reqs, ids, strict=True)
        ]

    def _heldout_samples(self) -> list[list[int]]:
        """The pre-edit model's held-out samples (drawn once, on pristine weights, at the first call)."""
        if getattr(self, "_samples", None) is None:
            from edit_gym.editing.covariance import model_samples

            with self._state.at_pristine():
                self._samples = model_samples(self._state.backbone, "heldout")
        return self._samples

    def export(self, path: str | Path) -> Path:
        """Save the edited model in Hugging Face format (``from_pretrained`` reloads it as it is now).

        The folder holds the model (safetensors), its tokenizer, and ``edit_gym_export.json``: the
        env config and the requests applied so far, in order. It is written atomically: an
        interrupted export leaves any previous folder at ``path`` untouched.
        """
        from edit_gym.cache import atomic_write_folder

        if not hasattr(self, "_stream"):
            raise gym.error.ResetNeeded("call reset() before export(): there is no episode to export")
        done = self._applied()
        manifest = {
            "format": "edit-gym-export",
            "version": 1,
            "config": asdict(self.cfg),
            "edits": [
                {
                    "prompt": self._requests[i].prompt,
                    "target_new": self._requests[i].target_new,
                    "uid": self._requests[i].uid,
                }
                for i in done
            ],
        }

        def build(tmp: Path) -> None:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self._state.backbone.tokenizer.save_pretrained(tmp)
            (tmp / "edit_gym_export.json").write_text(json.dumps(manifest, indent=1))

        atomic_write_folder(Path(path), build)
        return Path(path)

    # ------------------------------------------------------------------ render / lifecycle
    def render(self):
        if self.render_mode == "ansi":
            return render_ansi(self.candidate_names, self._last, self._t, self.num_steps)
        if self.render_mode == "rgb_array":
            history = getattr(
                self, "_mask_history", np.zeros((self.num_steps, self.num_candidates), np.float32)
            )
            return render_mask_heatmap(history, getattr(self, "_t", 0))
        return None

    def close(self) -> None:
        super().close()

    # ------------------------------------------------------------------ stream checkpoints
    # what a step changes besides the weights and the editor's memory (reset() rebuilds the rest)
    _EPISODE_FIELDS = (
        "_t",
        "_times_edited",
        "_drift",
        "_moved_sum",
        "_moved_count",
        "_key_count",
        "_key_history",
        "_mask_history",
        "_success_sum",
        "_loss_sum",
        "_kl_sum",
        "_last",
    )

    def _config_json(self) -> dict:
        """The configuration as plain JSON (what a stream checkpoint records and compares)."""
        return json.loads(json.dumps(asdict(self.cfg), default=str))

    def _stream_digest(self, stream) -> str:
        """SHA-256 of the stream's requests (a checkpoint refuses data that changed under it)."""
        import hashlib

        rows = [asdict(self._requests[int(i)]) for i in stream]
        return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()

    def save_episode(self, path: str | Path, extra: dict | None = None, tag: dict | None = None) -> Path:
        """Write the episode in progress to the folder ``path`` (a stream checkpoint, no pickle).

        It holds the edited weights, the editor's memory of earlier edits (AlphaEdit's keys, PRUNE's
        and UltraEdit's statistics), the observation statistics, the RNG and the request order;
        ``extra`` (numbers, strings, lists, dicts, arrays) travels with it, e.g. a runner's
        results so far; ``tag`` (plain JSON) names what made it, readable without loading
        (:func:`edit_gym.episode_file.read_info`). :meth:`load_episode` continues it, here or in another process. A
        finished episode can be saved too (its final evaluation is then all that is left).
        Written atomically: an interruption leaves the previous checkpoint whole.
        """
        from edit_gym.episode_file import write_episode

        if not hasattr(self, "_stream"):
            raise gym.error.ResetNeeded("no episode to save: call reset() first")
        state = {
            "fields": {name: getattr(self, name) for name in self._EPISODE_FIELDS},
            "weights": list(self._state.own),
            "rule": self._rule.episode_state(),
            "extra": extra or {},
        }
        info = {
            "config": self._config_json(),
            "seed": self._np_random_seed,
            "stream": [int(i) for i in self._stream],
            "requests_sha256": self._stream_digest(self._stream),
            "rng": self.np_random.bit_generator.state,
            "finished": not self._ready,
            "edits_done": min(self._t * self.cfg.edits_per_step, self.cfg.num_edits),
            "tag": tag,
        }
        return write_episode(path, state, info)

    def load_episode(self, path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
        """Continue the episode a :meth:`save_episode` folder holds: returns ``(observation, extra)``.

        The env must have the configuration the checkpoint was made with, and its data the same
        requests in the stream. Everything is checked before anything changes: a damaged folder,
        another configuration or changed data raises ``ValueError`` naming it, and leaves this
        env's weights and episode exactly as they were. A finished episode loads finished (step()
        asks for a reset; evaluate() scores it).
        """
        from edit_gym.episode_file import EpisodeFileError, read_episode

        state, info = read_episode(path, device=self._state.backbone.device)
        mine = self._config_json()
        diff = sorted(
            k for k in set(mine) | set(info.get("config", {})) if mine.get(k) != info["config"].get(k)
        )
        if diff:
            shown = ", ".join(f"{k}={info['config'].get(k)!r} (this env: {mine.get(k)!r})" for k in diff[:4])
            raise EpisodeFileError(f"{str(path)!r} was saved by an env with another configuration: {shown}")
        stream = info["stream"]
        if len(stream) != self.cfg.num_edits or not all(0 <= i < len(self._requests) for i in stream):
            raise EpisodeFileError(f"{str(path)!r}: its request order does not fit this env's data")
        if self._stream_digest(stream) != info["requests_sha256"]:
            raise EpisodeFileError(
                f"{str(path)!r}: the data's requests in its stream differ from those it was saved with"
            )
        weights, fields = state["weights"], state["fields"]
        shapes = [tuple(w.shape) for w in self._state.own]
        if [tuple(w.shape) for w in weights] != shapes or set(fields) != set(self._EPISODE_FIELDS):
            raise EpisodeFileError(f"{str(path)!r} does not hold this env's candidates or episode fields")
        self.reset(seed=info["seed"], options={"stream": stream})
        self._state.restore(
            [w.to(own.device, own.dtype) for w, own in zip(weights, self._state.own, strict=True)]
        )
        for name, value in fields.items():
            setattr(self, name, value)
        self._key_history = [
            h.to(c.param.device) for h, c in zip(self._key_history, self.candidates, strict=True)
        ]
        self._rule.load_episode_state(state["rule"])
        self.np_random.bit_generator.state = info["rng"]
        self._ready = not info["finished"]
        if self._ready:
            self._cap = self._capture(self._t)
        return self._observation(), state["extra"]

    def __getstate__(self) -> dict:
        """Pickle without the model: the config rebuilds it, and the edited candidates travel as tensors."""
        state = self.__dict__.copy()
        state["_state"] = None
        state["_rule"] = self._rule.episode_state()  # the editor is rebuilt around the new model
        state["_edited_weights"] = [c.param.detach().cpu().clone() for c in self._state.candidates]
        return state

    def __setstate__(self, state: dict) -> None:
        weights = state.pop("_edited_weights")
        self.__dict__.update(state)
        self._state = _ModelState(self.cfg)
        self._state.restore(
            [w.to(c.param.device) for w, c in zip(weights, self._state.candidates, strict=True)]
        )
        episode = self._rule
        self._rule = self._build_editor()
        self._rule.load_episode_state(episode)


__all__ = ["InvalidActionError", "LifelongEditEnv"]
