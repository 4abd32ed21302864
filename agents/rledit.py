"""RLEdit (arXiv 2502.05759): training the hypernetwork editor over whole edit sequences.

The net itself, and its use as an update rule, live in :mod:`edit_gym.editing.hypernet`
(``editor="rledit:DIR"``). This module owns how it is trained, as the paper does it and without
the flaws of its public code (design.md §1):

* **Whole sequences.** Each training sequence is a fresh episode of ``edits_per_sequence`` requests
  from the *training* data, applied one after another to the same weights: at step t the update is
  computed from (K, G) captured on the already-edited model W_{t-1} and applied, giving W_t.
* **The step loss** is a backtracking window over the last ``window`` requests (newest j = 0):

      L_t = sum_j mu^j [ CE(paraphrases of request t-j -> its target | W_t)
                         + c_loc KL(p_{W_{t-1}} || p_{W_t}) on request t-j's unrelated prompts ]
            + eta ||scale * dW_t||_F^2

  The L2 term is computed from the net's output, so it really has a gradient (the public code's has
  none).
* **Decoupled gradient.** W_t = W_{t-1} + scale * dW_t with dW_t = left_t @ K_t. The language model's
  graph is run on plain weights only: g_t = dL_t / dW_t comes from one backward through the LM, and
  the net receives it through the surrogate <scale * left_t @ K_t, g> (``left_t`` carries the net's
  graph). Because later weights are sums of earlier updates, update t' is charged with every later
  step's gradient: sum_{t >= t'} discount^(t - t') g_t (``discount=0`` charges each update with its own
  step only). That is the exact gradient of the summed sequence loss except through the later (K, G)
  captures, which the method treats as data. ``tests/test_rledit.py`` checks the decoupled gradient
  against a direct autograd graph.
* **Real optimisation.** One Adam step per sequence (``sequences_per_update`` to accumulate more),
  over as many sequences as asked; whitening statistics are gathered while training and frozen in
  the saved checkpoint; everything is seeded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.checkpointing import (
    PeriodicSave,
    jsonable,
    optimizer_parts,
    read_optimizer,
    write_optimizer,
)
from edit_gym.actions import encode_action
from edit_gym.cache import atomic_write_folder
from edit_gym.editing.capture import capture
from edit_gym.editing.hypernet import (
    CheckpointError,
    HyperNet,
    HyperNetConfig,
    load_hypernet,
    write_hypernet,
)
from edit_gym.editing.scores import answer_logprobs

AGENT_FILE = "agent.json"


@dataclass
class RLEditConfig:
    """Training hyperparameters (paper defaults where the paper gives them)."""

    window: int = 10  # k: requests in the backtracking window
    mu: float = 0.95  # weight decay along the window
    c_loc: float = 0.6  # weight of the locality KL
    locality_reference: str = "previous"  # KL to the model before this edit (paper) or "pristine"
    eta: float = 1e-4  # weight of the L2 penalty on each applied update
    discount: float = 1.0  # how much an update is charged with later steps' losses
    learning_rate: float = 1e-4  # the net's blocks
    scalar_learning_rate: float = 1e-2  # per-matrix log step size and log ridge strength
    max_grad_norm: float = 1.0
    sequences_per_update: int = 1
    paraphrases_per_request: int = 2  # rephrasings scored per window request (prompt itself if none)
    locality_per_request: int = 2  # unrelated prompts per window request
    rank: int = 32  # hypernet block rank
    blocks: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "window >= 1": self.window >= 1,
            "0 < mu <= 1": 0 < self.mu <= 1,
            "c_loc >= 0": self.c_loc >= 0,
            "eta >= 0": self.eta >= 0,
            "0 <= discount <= 1": 0 <= self.discount <= 1,
            "learning_rate > 0": self.learning_rate > 0 and self.scalar_learning_rate > 0,
            "sequences_per_update >= 1": self.sequences_per_update >= 1,
            "locality_reference in ('previous', 'pristine')": self.locality_reference
            in ("previous", "pristine"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid RLEdit config: need {', '.join(bad)}")


# Training defaults per built-in model (keyed by its exact name in edit_gym.backbones, never by a
# substring) where a sweep chose them: the paper's defaults collapse SmolLM2 within 100 edits
# (docs/rledit.md); the sweep behind these is results/rledit/rledit_sweep_smollm2.md
# (`python benchmarks/rledit_sweep.py --grid smollm2 ...`).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "window": 10,
        "c_loc": 5.0,
        "locality_reference": "pristine",
        "learning_rate": 3e-4,
        "scalar_learning_rate": 1e-3,
        "rank": 32,
    },
}


# The band of default candidates (START:STOP) that the same sweep chose per built-in model; an env
# setting, not a hypernet one, so `edit-gym train rledit` applies it when no --layers is given. On
# SmolLM2 the upper half (layers 15-29) beats all 30 for the untrained ridge rule and the trained net.
MODEL_BANDS: dict[str, str] = {"smollm2-135m": "15:30"}


def parse_band(text: str, count: int) -> slice:
    """``START:STOP`` (Python slice of the default candidates, e.g. ``8:16``) as a checked slice."""
    start_text, sep, stop_text = text.partition(":")
    try:
        start = int(start_text) if start_text else 0
        stop = int(stop_text) if stop_text else count
    except ValueError:
        start, stop, sep = 0, 0, ""
    if not sep or not (0 <= start < stop <= count):
        raise ValueError(f"--layers {text!r}: expected START:STOP with 0 <= START < STOP <= {count}")
    return slice(start, stop)


def training_band(names: list[str], model: str, layers: str | None = None) -> list[str] | None:
    """The candidates RLEdit trains on: ``layers`` (``START:STOP`` or ``all``), else the model's
    swept band (``MODEL_BANDS``), else every candidate (``None``: the env's own default)."""
    layers = layers or MODEL_BANDS.get(model)
    if not layers or layers == "all":
        return None
    return names[parse_band(layers, len(names))]


def default_config(model: str | None = None, **overrides: Any) -> RLEditConfig:
    """The paper's defaults, then ``MODEL_DEFAULTS[model]`` (if the model has swept ones), then
    ``overrides`` (e.g. the command line's explicit flags)."""
    return RLEditConfig(**{**MODEL_DEFAULTS.get(model or "", {}), **overrides})


@dataclass
class _Applied:
    """One applied update of the current sequence: what the surrogate needs to reach the net."""

    left: list[torch.Tensor | None]  # per candidate, d_out x N, with the net's graph; None: not edited
    right: list[torch.Tensor | None]  # per candidate, N x d_in (the keys, no graph)
    scale: np.ndarray


MaskFn = Callable[[int, list], np.ndarray]
"""(sequence seed, its stream of requests) -> bool (T, n): the candidates each step edits."""


@dataclass
class SequenceLog:
    loss: list[float] = field(default_factory=list)
    ce: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    l2: list[float] = field(default_factory=list)
    efficacy: list[float] = field(default_factory=list)  # right after each edit


def weight_gradients(candidates, loss_fn) -> tuple[tuple, list[torch.Tensor]]:
    """Run ``loss_fn()`` (a tuple whose first item is the loss) with the candidate weights as graph
    leaves; return its outputs and dL/dW per candidate, float32, in the d_out x d_in orientation.

    The weights are leaves only for this call (``requires_grad`` is restored even on error), so no
    other pass of the model ever builds a graph through them.
    """
    params = [c.param for c in candidates]
    for p in params:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            out = loss_fn()
            grads = torch.autograd.grad(out[0], params)
    finally:
        for p in params:
            p.requires_grad_(False)
    return out, [(g.t() if c.transposed else g).float() for g, c in zip(grads, candidates, strict=True)]


def _per_pair_mean(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean of per-answer-token ``values`` within each pair; ``counts`` = answer tokens per pair."""
    pair = torch.repeat_interleave(torch.arange(len(counts), device=values.device), counts)
    sums = torch.zeros(len(counts), device=values.device).index_add(0, pair, values)
    return sums / counts.clamp_min(1)


class RLEditTrainer:
    """The sequence loop. ``env`` supplies the model, candidates, encoder and training streams."""

    def __init__(self, env: Any, net: HyperNet, config: RLEditConfig) -> None:
        self.env = env.unwrapped
        self.net = net
        self.config = config
        scalars = [net.log_step, net.log_lambda]
        blocks = [p for p in net.parameters() if all(p is not s for s in scalars)]
        self.optimizer = torch.optim.Adam(
            [
                {"params": blocks, "lr": config.learning_rate},
                {"params": scalars, "lr": config.scalar_learning_rate},
            ]
        )

    # ------------------------------------------------------------- one step of a sequence
    def window_pairs(self, stream, t: int):
        """(paraphrase pairs, their window weights, locality pairs, their weights) for step ``t``."""
        cfg = self.config
        para, para_w, loc, loc_w = [], [], [], []
        for j in range(min(cfg.window, t + 1)):
            r = stream[t - j]
            weight = cfg.mu**j
            texts = list(r.paraphrases[: cfg.paraphrases_per_request]) or [r.prompt]
            para += [(q, r.target_new) for q in texts]
            para_w += [weight / len(texts)] * len(texts)
            probes = r.neighbourhood[: cfg.locality_per_request]
            loc += [(p.prompt, p.answer) for p in probes]
            loc_w += [weight / max(len(probes), 1)] * len(probes)
        return para, para_w, loc, loc_w

    def step_loss(self, stream, t: int, prev_loc_logp: torch.Tensor | None):
        """L_t on the current weights, with a graph back to the candidate weights only."""
        cfg, env = self.config, self.env
        para, para_w, loc, loc_w = self.window_pairs(stream, t)
        edit_pair = [(stream[t].prompt, stream[t].target_new)]
        batch = env.encoder.encode(edit_pair + para + loc, device=env.device)
        logp = answer_logprobs(env.model, batch, grad=True)
        labels = batch.labels[batch.answer_mask]
        token_ce = -logp.gather(1, labels[:, None]).squeeze(1)
        counts = batch.answer_mask.sum(1)
        pair_ce = _per_pair_mean(token_ce, counts)
        n_edit, n_para = 1, len(para)
        edit_rows = int(counts[0])
        efficacy = float((logp[:edit_rows].argmax(-1) == labels[:edit_rows]).float().mean())
        weights_p = torch.tensor(para_w, device=logp.device)
        ce = (pair_ce[n_edit : n_edit + n_para] * weights_p).sum()
        kl = torch.zeros((), device=logp.device)
        if loc:
            start = int(counts[: n_edit + n_para].sum())
            new = logp[start:]
            token_kl = (prev_loc_logp.exp() * (prev_loc_logp - new)).sum(-1)
            pair_kl = _per_pair_mean(token_kl, counts[n_edit + n_para :])
            kl = (pair_kl * torch.tensor(loc_w, device=new.device)).sum()
        return ce + cfg.c_loc * kl, float(ce.detach()), float(kl.detach()), efficacy

    def locality_reference(self, stream, t: int) -> torch.Tensor | None:
        """The reference distribution at the window's locality answer positions (no graph).

        ``locality_reference="previous"`` (the paper): p_{W_{t-1}}, the model before this edit.
        ``"pristine"``: p_{W_0}, the model before the sequence, so the KL sees the drift the whole
        sequence has accumulated (computed once per request, on the pristine weights, and cached).
        """
        _, _, loc, _ = self.window_pairs(stream, t)
        if not loc:
            return None
        if self.config.locality_reference == "pristine":
            return torch.cat([self._pristine_logp[i] for i in self._window_requests(stream, t)])
        return answer_logprobs(self.env.model, self.env.encoder.encode(loc, device=self.env.device))

    def _window_requests(self, stream, t: int) -> list[int]:
        """Indices (into the stream) of the window's requests that have locality prompts, newest first."""
        n_loc = self.config.locality_per_request
        return [t - j for j in range(min(self.config.window, t + 1)) if stream[t - j].neighbourhood[:n_loc]]

    def _cache_pristine(self, stream) -> None:
        """p_{W_0} on every request's locality prompts (call on the pristine weights)."""
        n_loc = self.config.locality_per_request
        self._pristine_logp = {}
        for i, r in enumerate(stream):
            probes = [(p.prompt, p.answer) for p in r.neighbourhood[:n_loc]]
            if probes:
                batch = self.env.encoder.encode(probes, device=self.env.device)
                self._pristine_logp[i] = answer_logprobs(self.env.model, batch)

    # ------------------------------------------------------------- one sequence
    def run_sequence(self, seed: int, mask_fn: MaskFn | None = None) -> tuple[torch.Tensor, SequenceLog]:
        """Edit one training sequence; return its surrogate objective (graph into the net) and logs.

        ``mask_fn(seed, stream)`` -> bool (T, n): edit only those candidates at each step (HiEdit's
        alternating fine-tuning on the selector's masks); None edits every candidate.
        """
        cfg, env, net = self.config, self.env, self.net
        env.reset(seed=seed)
        stream = env.stream
        if cfg.locality_reference == "pristine":
            self._cache_pristine(stream)
        cands = env.candidates
        n = len(cands)
        masks = np.ones((len(stream), n), bool) if mask_fn is None else np.asarray(mask_fn(seed, stream))
        if masks.shape != (len(stream), n) or masks.dtype != bool:
            raise ValueError(
                f"mask_fn must return a bool array of shape {(len(stream), n)}, got {masks.dtype} {masks.shape}"
            )
        applied: list[_Applied] = []
        objective = torch.zeros((), device=net.device)
        log = SequenceLog()
        for t in range(len(stream)):
            req = stream[t]
            cap = capture(
                env.model, cands, env.encoder.encode([(req.prompt, req.target_new)], device=env.device)
            )
            prev = self.locality_reference(stream, t)
            scale = env.update_scales(masks[t], np.zeros(n))
            lefts, rights = [], []
            l2 = torch.zeros((), device=net.device)
            for j, c in enumerate(cands):
                if not masks[t, j]:
                    lefts.append(None)
                    rights.append(None)
                    continue
                net.observe(j, cap.keys[j], cap.grads[j])
                left, right = net.factors(j, cap.keys[j], cap.grads[j])
                c.add_low_rank_(left.detach(), right, float(scale[j]))
                lefts.append(left)
                rights.append(right)
                # ||s left right||_F^2 = s^2 sum((left^T left) * (right right^T)), with a gradient path
                l2 = l2 + float(scale[j]) ** 2 * ((left.T @ left) * (right @ right.T)).sum()
            applied.append(_Applied(lefts, rights, scale))
            (loss, ce, kl, eff), grads = weight_gradients(cands, partial(self.step_loss, stream, t, prev))
            grads = [g.to(net.device) for g in grads]
            # charge every update so far with this step's gradient (discounted by its age)
            for age, past in enumerate(reversed(applied)):
                weight = cfg.discount**age
                if weight == 0.0:
                    break
                for j, g in enumerate(grads):
                    if past.left[j] is None:
                        continue  # not edited at that step
                    objective = (
                        objective
                        + weight * float(past.scale[j]) * (past.left[j] * (g @ past.right[j].T)).sum()
                    )
            objective = objective + cfg.eta * l2
            log.loss.append(float(loss.detach()) + cfg.eta * float(l2.detach()))
            log.ce.append(ce)
            log.kl.append(kl)
            log.l2.append(float(l2.detach()))
            log.efficacy.append(eff)
        return objective, log

    def train_step(self, seeds: list[int], mask_fn: MaskFn | None = None) -> list[SequenceLog]:
        """One optimizer step over ``len(seeds)`` sequences (gradients accumulated)."""
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        logs = []
        for s in seeds:
            objective, log = self.run_sequence(s, mask_fn)
            (objective / len(seeds)).backward()
            logs.append(log)
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        return logs


class RLEditAgent:
    """The RLEdit editor as an agent: all candidates at coefficient 0, the learned rule does the rest.

    ``learn`` trains the hypernet on the env's training stream; ``save(DIR)`` writes a checkpoint
    folder usable as ``editor="rledit:DIR"`` or ``edit-gym eval --agent rledit --checkpoint DIR``;
    ``predict`` is SB3-shaped. To *use* a trained net, the env must be built with that editor.
    """

    def __init__(
        self,
        env: Any,
        config: RLEditConfig | dict | None = None,
        net: HyperNet | None = None,
        **overrides: Any,
    ) -> None:
        cfg = config if isinstance(config, RLEditConfig) else RLEditConfig(**{**(config or {}), **overrides})
        self.config = cfg
        self.env = env
        inner = env.unwrapped
        self.num_candidates = inner.num_candidates
        self.action_type = inner.cfg.action_type
        self.coef_levels = inner.cfg.coef_levels
        names = [c.name for c in inner.candidates]
        shapes = [c.shape for c in inner.candidates]
        if net is None:
            torch.manual_seed(cfg.seed)
            net = HyperNet(
                HyperNetConfig(
                    names, shapes, rank=cfg.rank, blocks=cfg.blocks, init_log_lambda=inner.cfg.log_lambda
                )
            )
        net.check_candidates(names, shapes)
        self.net = net.to(inner.candidates[0].param.device)
        self.sequences_trained = int(net.config.extra.get("sequences_trained", 0))
        self._trainer: RLEditTrainer | None = None
        self._rng: np.random.Generator | None = None  # the sequence-seed stream, saved for resuming
        self._optimizer_state: dict | None = None  # from a checkpoint, applied when training starts

    # ------------------------------------------------------------------ SB3-shaped API
    def predict(self, obs: Any, state=None, episode_start=None, deterministic: bool = True):
        """Every candidate at coefficient 0 (the learned rule sets each matrix's step itself)."""
        mask = np.ones(self.num_candidates, dtype=bool)
        return encode_action(mask, np.zeros(self.num_candidates), self.action_type, self.coef_levels), state

    def learn(
        self,
        total_sequences: int,
        callback: Any = None,
        progress_bar: bool = True,
        tb_log_dir: str | Path | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 0,
        mask_fn: MaskFn | None = None,
    ) -> RLEditAgent:
        """Train over ``total_sequences`` more edit sequences (seeded: ``config.seed`` and the count so far).

        ``mask_fn(seed, stream)`` -> bool (T, n) edits only the chosen candidates at each step (e.g.
        ``agents.alternating.SelectorMasks``: the masks a HiEdit selector picks); default: all.

        ``callback(agent, logs) -> bool | None`` runs after each optimizer step; returning False stops.
        ``checkpoint_every`` > 0 saves to ``checkpoint_dir`` that often (atomic: an interrupted run
        keeps its last whole checkpoint).
        """
        from tqdm.auto import tqdm

        if total_sequences < 1:
            raise ValueError(f"total_sequences must be >= 1, got {total_sequences}")
        checkpoint = PeriodicSave(self.save, checkpoint_dir, checkpoint_every, start=self.sequences_trained)
        cfg = self.config
        if self._trainer is None:
            self._trainer = RLEditTrainer(self.env, self.net, cfg)
            if self._optimizer_state is not None:
                self._trainer.optimizer.load_state_dict(self._optimizer_state)
                self._optimizer_state = None
        writer = _writer(tb_log_dir)
        self.net.freeze_statistics(False)  # training gathers whitening statistics (a loaded net is frozen)
        if self._rng is None:
            self._rng = np.random.default_rng([cfg.seed, self.sequences_trained])
        rng = self._rng
        done, logs = 0, []
        bar = tqdm(total=total_sequences, desc="rledit", unit="seq", disable=not progress_bar)
        try:
            while done < total_sequences:
                count = min(cfg.sequences_per_update, total_sequences - done)
                seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=count)]
                logs = self._trainer.train_step(seeds, mask_fn)
                done += count
                self.sequences_trained += count
                bar.update(count)
                loss = float(np.mean([np.sum(g.loss) for g in logs]))
                bar.set_postfix(
                    seq_loss=f"{loss:.3f}", eff=f"{np.mean([np.mean(g.efficacy) for g in logs]):.2f}"
                )
                if writer is not None:
                    self._log(writer, logs)
                checkpoint(self.sequences_trained)
                if callback is not None and callback(self, logs) is False:
                    break
        finally:
            bar.close()
            if writer is not None:
                from edit_gym.tensorboard_layout import log_hparams

                metrics = {
                    "hparam/sequence_loss": float(np.mean([np.sum(g.loss) for g in logs])) if logs else None,
                    "hparam/immediate_efficacy": float(np.mean([np.mean(g.efficacy) for g in logs]))
                    if logs
                    else None,
                }
                log_hparams(writer, {**asdict(cfg), "sequences_trained": self.sequences_trained}, metrics)
                writer.close()
            self.env.unwrapped.reset(seed=cfg.seed)  # leave the env's weights pristine
            self.net.eval()
        return self

    def _log(self, writer, logs: list[SequenceLog]) -> None:
        step = self.sequences_trained
        mean = lambda key: float(np.mean([np.mean(getattr(g, key)) for g in logs]))  # noqa: E731
        writer.add_scalar("losses/sequence_loss", float(np.mean([np.sum(g.loss) for g in logs])), step)
        writer.add_scalar("losses/edit_ce", mean("ce"), step)
        writer.add_scalar("losses/locality_kl", mean("kl"), step)
        writer.add_scalar("losses/l2", mean("l2"), step)
        writer.add_scalar("edit/immediate_efficacy", mean("efficacy"), step)
        names = self.net.config.candidates
        steps = self.net.log_step.detach().exp().cpu()
        lams = self.net.log_lambda.detach().cpu()
        for j, name in enumerate(names):
            writer.add_scalar(f"step_size/{name}", float(steps[j]), step)
            writer.add_scalar(f"log_lambda/{name}", float(lams[j]), step)
        writer.add_histogram("step_size/all", steps, step)

    # ------------------------------------------------------------------ persistence
    def editor_spec(self, path: str | Path) -> str:
        """The env ``editor`` string that uses a checkpoint saved at ``path``."""
        return f"rledit:{Path(path)}"

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint folder atomically (hypernet tensors + JSON; nothing executable)."""
        self.net.config.extra["sequences_trained"] = self.sequences_trained
        inner = self.env.unwrapped
        meta = {
            "agent": "rledit",
            "config": asdict(self.config),
            "sequences_trained": self.sequences_trained,
            "rng_state": jsonable(self._rng.bit_generator.state) if self._rng is not None else None,
            "optimizer_param_groups": None,
            "env": {
                "model": inner.cfg.model,
                "dataset": str(inner.cfg.dataset),
                "spec_id": _spec_id(self.env),
            },
        }

        optimizer = (
            self._trainer.optimizer.state_dict() if self._trainer is not None else self._optimizer_state
        )
        groups, tensors = optimizer_parts(optimizer)

        def build(tmp: Path) -> None:
            write_hypernet(self.net, tmp)
            write_optimizer(tmp, tensors, meta, groups)
            (tmp / AGENT_FILE).write_text(json.dumps(meta, indent=1))

        atomic_write_folder(Path(path), build)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, env: Any) -> RLEditAgent:
        """Load a checkpoint folder for ``env`` (whose candidates must be the ones it was trained on)."""
        path = Path(path)
        meta_path = path / AGENT_FILE
        if not meta_path.is_file():
            raise CheckpointError(f"{path} is not an RLEdit agent folder (no {AGENT_FILE})")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{meta_path} is not valid JSON ({err})") from None
        if meta.get("agent") != "rledit":
            raise CheckpointError(f"{meta_path} is not an RLEdit agent file")
        net = load_hypernet(path)
        agent = cls(env, RLEditConfig(**meta["config"]), net=net)
        agent.sequences_trained = int(meta.get("sequences_trained", 0))
        if meta.get("rng_state"):
            agent._rng = np.random.default_rng()
            agent._rng.bit_generator.state = meta["rng_state"]
        agent._optimizer_state = read_optimizer(path, meta, AGENT_FILE)
        return agent


def _spec_id(env: Any) -> str | None:
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else None


def _writer(log_dir: str | Path | None):
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir))
