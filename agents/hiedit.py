"""HiEdit (arXiv 2604.11214): a high-level policy chooses which candidates each edit writes to.

The low level is the env's update rule (usually a trained RLEdit hypernet, ``editor="rledit:DIR"``);
the high level is a policy over the per-layer statistics and the request embedding, trained as real
RL on the env's ``reward="advantage"`` (r(mask) - r(all candidates) - w_sparse * touched), two ways:

* ``trainer="ppo"``: the single-file PPO of :mod:`agents.ppo` on the native Dict action (Bernoulli
  mask, Gaussian coefficients), with its per-layer shared encoder;
* ``trainer="sb3"``: Stable-Baselines3 PPO on the ``mask`` action (MultiBinary), with
  :class:`agents.features.LayerStatsExtractor` (the same per-layer shared encoder, as an SB3
  features extractor);
* ``trainer="maskable"``: sb3-contrib ``MaskablePPO`` under a layer budget K: the ``slots`` action
  (K picks, each a candidate or none) with the env's ``action_masks()``, so every edit touches 1 to
  K candidates by construction (the same extractor);
* ``trainer="straight-through"``: the published code's mode, for comparison: the selector's scores
  pick the top K candidates, and the gradient of the post-edit loss reaches the scores through a
  straight-through estimator, dL/dm_j = s_j <dL/dW_j, dW_j> (:class:`StraightThroughSelector`).

A checkpoint folder holds ``hiedit.json`` (trainer, the low-level editor, the action type, the env
steps trained) and the policy (``policy.safetensors`` + ``policy.json`` and Adam's moments in
``optimizer.safetensors`` for ``ppo`` and ``straight-through``; ``model.zip`` for ``sb3`` and
``maskable``, SB3's own format, which holds its optimizer).
``edit-gym eval --agent hiedit --checkpoint DIR`` rebuilds the env with the same editor and action type;
``edit-gym train hiedit --resume --out DIR`` continues its training (:meth:`HiEditAgent.learn` on a
loaded agent trains on from ``steps_trained``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from agents.checkpointing import PeriodicSave, optimizer_parts, read_optimizer, write_optimizer
from agents.features import LayerStatsExtractor
from edit_gym.cache import atomic_write_folder
from edit_gym.tensorboard_layout import step_scalars

TRAINERS = ("ppo", "sb3", "maskable", "straight-through")
ACTION_TYPE = {"ppo": "dict", "sb3": "mask", "maskable": "slots", "straight-through": "dict"}
SB3_SETTINGS = {"n_steps": 64, "batch_size": 32, "n_epochs": 4, "gamma": 0.95}  # short, costly episodes
META_FILE = "hiedit.json"


def make_training_env(
    env_id: str, low_level: str, trainer: str, budget: int | None = None, **kwargs: Any
) -> gym.Env:
    """The env HiEdit trains on: the low-level rule as ``editor``, the advantage reward.

    ``maskable`` needs a layer budget K; without one it takes half the candidates.
    """
    if trainer not in TRAINERS:
        raise ValueError(f"unknown HiEdit trainer {trainer!r} (known: {', '.join(TRAINERS)})")
    settings = {
        "editor": editor_spec(low_level),
        "reward": "advantage",
        "action_type": ACTION_TYPE[trainer],
        "final_eval": False,
        **kwargs,
    }
    if trainer == "maskable" and budget is None:
        probe = gym.make(env_id, **{**settings, "action_type": "mask"})
        budget = max(1, probe.unwrapped.num_candidates // 2)
        probe.close()
    return gym.make(env_id, budget=budget, **settings)


def editor_spec(low_level: str) -> str:
    """A checkpoint folder (or a shipped RLEdit checkpoint's name) becomes ``rledit:DIR``; a rule
    spec (``ridge``, ``rledit:DIR``) stays."""
    from edit_gym.shipped import resolve_checkpoint

    if Path(resolve_checkpoint(low_level)).is_dir():
        return f"rledit:{low_level}"  # a shipped name stays the name (the env resolves it), as in eval
    return low_level


class HiEditAgent:
    """The high-level selector; ``predict`` returns the env's action (mask, and coefficients for ppo)."""

    def __init__(self, env: Any, trainer: str = "ppo", model: Any = None, **trainer_kwargs: Any) -> None:
        if trainer not in TRAINERS:
            raise ValueError(f"unknown HiEdit trainer {trainer!r} (known: {', '.join(TRAINERS)})")
        inner = env.unwrapped
        if inner.cfg.action_type != ACTION_TYPE[trainer]:
            raise ValueError(
                f"the {trainer} trainer needs action_type={ACTION_TYPE[trainer]!r}, the env has "
                f"{inner.cfg.action_type!r} (use agents.hiedit.make_training_env)"
            )
        self.env, self.trainer = env, trainer
        self.editor = inner.cfg.editor
        if model is None:
            if trainer == "ppo":
                from agents.ppo import Args, PPOAgent

                known = {k: v for k, v in trainer_kwargs.items() if k in Args.__dataclass_fields__}
                model = PPOAgent(env, Args(env_id=_env_id(env), env_kwargs=_env_kwargs(env), **known))
            elif trainer == "straight-through":
                model = StraightThroughSelector(env, **trainer_kwargs)
            else:
                algorithm = _sb3_algorithm(trainer)
                policy_kwargs = {"features_extractor_class": LayerStatsExtractor}
                settings = {**SB3_SETTINGS, **trainer_kwargs}
                model = algorithm("MultiInputPolicy", env, policy_kwargs=policy_kwargs, verbose=0, **settings)
        self.model = model

    @property
    def steps_trained(self) -> int:
        """Env steps this selector has trained (over every ``learn`` call and resumed run)."""
        if self.trainer in ("sb3", "maskable"):
            return int(self.model.num_timesteps)
        return int(self.model.steps_trained)

    def learn(
        self,
        total_timesteps: int,
        tb_log_dir: str | None = None,
        progress_bar: bool = False,
        callback=None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 0,
    ) -> HiEditAgent:
        """Train the selector. ``callback(global_step, policy, writer)`` runs after every PPO update
        (``ppo``: with the custom PPO's writer; ``sb3`` / ``maskable``: with writer None) or, for
        ``straight-through``, after every optimizer step (one per env step, with its writer),
        e.g. a held-out evaluation (``benchmarks/hiedit_learning_curve.py``).

        ``checkpoint_every`` > 0 saves this agent to ``checkpoint_dir`` each time training passes
        another multiple of that many env steps (the custom ``ppo``: at the next update boundary;
        ``sb3`` / ``maskable`` / ``straight-through``: at that step).
        Saves are atomic, so an interrupted run (Ctrl-C) keeps its last whole checkpoint.

        ``total_timesteps`` are env steps *more*: a loaded agent continues from ``steps_trained``
        with its optimizer state (and, for ``ppo``, its learning-rate schedule), on fresh episodes
        (seeded by seed + steps so far). Step counts given to callbacks count from the first run.
        """
        checkpoint = PeriodicSave(self.save, checkpoint_dir, checkpoint_every, start=self.steps_trained)
        if self.trainer == "ppo":
            self.model.args.tb_dir = tb_log_dir
            self.model.args.progress_bar = progress_bar

            def after_update(global_step: int, policy, writer) -> None:
                checkpoint(global_step)
                if callback is not None:
                    callback(global_step, policy, writer)

            self.model.learn(total_timesteps, callback=after_update)
        elif self.trainer == "straight-through":
            selector = self.model

            def after_step(steps: int, writer) -> None:
                checkpoint(steps)
                if callback is not None:
                    callback(steps, selector.policy, writer)

            selector.learn(
                total_timesteps, tb_log_dir=tb_log_dir, progress_bar=progress_bar, after_step=after_step
            )
        else:
            from agents.callbacks import EditMetricsCallback, StepCallback

            if tb_log_dir:
                from stable_baselines3.common.logger import configure

                self.model.set_logger(configure(tb_log_dir, ["tensorboard"]))
            callbacks = [EditMetricsCallback(), StepCallback(checkpoint)]
            policy = self.model.policy

            def after_update(steps: int) -> None:
                if callback is not None:
                    callback(steps, policy, None)

            callbacks.append(StepCallback(after_update, on="update"))
            if self.model.num_timesteps:  # a loaded model: seed its fresh episodes past the old ones
                self.model.set_random_seed((self.model.seed or 0) + self.model.num_timesteps)
            self.model.learn(
                total_timesteps, progress_bar=progress_bar, callback=callbacks, reset_num_timesteps=False
            )
            after_update(self.model.num_timesteps)  # the last update has no next rollout start
        return self

    def predict(self, obs: Any, state=None, episode_start=None, deterministic: bool = True):
        extra = {}
        if self.trainer == "maskable":  # the env's masks: the first slot may not pick "none"
            extra["action_masks"] = self.env.unwrapped.action_masks()
        return self.model.predict(
            obs, state=state, episode_start=episode_start, deterministic=deterministic, **extra
        )

    def save(self, path: str | Path) -> Path:
        meta = {
            "agent": "hiedit",
            "trainer": self.trainer,
            "editor": self.editor,
            "action_type": ACTION_TYPE[self.trainer],
            "env_budget": self.env.unwrapped.cfg.budget,
            # how a named method writes a partial selection, and what the advantage compares it with
            "target_block": self.env.unwrapped.cfg.target_block,
            "reference": self.env.unwrapped.cfg.reference,
            "steps_trained": self.steps_trained,
        }
        if self.trainer in ("ppo", "straight-through"):
            groups, tensors = optimizer_parts(self.model.optimizer.state_dict())

        def build(tmp: Path) -> None:
            if self.trainer in ("ppo", "straight-through"):
                from agents.ppo import write_policy

                write_policy(self.model.policy, tmp, self.model.args)
                write_optimizer(tmp, tensors, meta, groups)
                meta["budget"] = getattr(self.model, "budget", None)
                meta["episodes"] = getattr(self.model, "episodes", None)
            else:
                self.model.save(tmp / "model.zip")
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1))

        atomic_write_folder(Path(path), build)
        return Path(path)

    @staticmethod
    def read_meta(path: str | Path) -> dict:
        meta_path = Path(path) / META_FILE
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a HiEdit checkpoint folder ({err})") from None
        if meta.get("agent") != "hiedit" or meta.get("trainer") not in TRAINERS:
            raise ValueError(f"{meta_path} is not a HiEdit checkpoint")
        return meta

    @classmethod
    def load(cls, path: str | Path, env: Any) -> HiEditAgent:
        meta = cls.read_meta(path)
        if meta["trainer"] in ("ppo", "straight-through"):
            from agents.ppo import PPOAgent, load_policy

            if meta["trainer"] == "ppo":
                model = PPOAgent.load(path, env)
            else:
                policy, args = load_policy(path, env.observation_space)
                model = StraightThroughSelector(
                    env, budget=meta["budget"], seed=args.seed, policy=policy, args=args
                )
                model.episodes = int(meta.get("episodes") or 0)
            model.steps_trained = int(meta.get("steps_trained") or 0)
            state = read_optimizer(Path(path), meta, META_FILE)
            if state is not None:
                model.optimizer.load_state_dict(state)
        else:
            from agents.sb3_safe import load_sb3

            model = load_sb3(Path(path) / "model.zip", env)  # never unpickles from the file
        return cls(env, meta["trainer"], model=model)


class StraightThroughSelector:
    """HiEdit's published selector training: top-K scores, straight-through gradient of the edit loss.

    Each step: scores s = f(obs) (the :class:`agents.ppo.Policy` mask logits), hard mask = top
    ``budget`` scores; the env applies the low-level update of the chosen candidates. The post-edit
    loss L (answer cross-entropy of the request's prompt and paraphrases) is differentiated with
    respect to the candidate weights, and since W_j = W_j + m_j s_j dW_j, dL/dm_j = s_j <dL/dW_j, dW_j>.
    The straight-through mask m = hard + sigmoid(s) - sigmoid(s).detach() carries that gradient to
    the scores. (Spreading makes s_j depend on the mask size; that dependence is ignored, as in the
    published code.) Coefficients are 0.
    """

    def __init__(
        self,
        env: Any,
        budget: int | None = None,
        learning_rate: float = 1e-3,
        seed: int = 0,
        policy=None,
        args=None,
    ) -> None:
        from agents.ppo import Args, Policy

        inner = env.unwrapped
        if getattr(inner, "method", None) is not None:
            raise ValueError(
                f"the straight-through trainer needs a one-step low level (its gradient is <dL/dW_j, dW_j> of "
                f"each candidate's own update); {inner.cfg.editor!r} spreads one target over the selection: "
                "train HiEdit over it with --trainer maskable, sb3 or ppo"
            )
        self.env = env
        n = inner.num_candidates
        self.budget = int(budget) if budget is not None else max(1, n // 2)
        if not 1 <= self.budget <= n:
            raise ValueError(f"budget must be between 1 and {n}, got {self.budget}")
        torch.manual_seed(seed)
        self.args = args or Args(env_id=_env_id(env), env_kwargs=_env_kwargs(env), seed=seed)
        self.policy = policy or Policy(env.observation_space, self.args.hidden, self.args.init_log_std)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=learning_rate)
        self.seed = seed
        self.steps_trained = 0  # optimizer steps (one per env step) over every learn call
        self.episodes = 0  # episodes finished; episode e runs on the stream of reset(seed + e)

    def scores(self, obs: dict) -> torch.Tensor:
        t = {k: torch.as_tensor(v, dtype=torch.float32)[None] for k, v in obs.items()}
        return self.policy.mask_head(self.policy.features(t)).squeeze(-1)[0]

    def hard_mask(self, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(scores)
        mask[scores.topk(self.budget).indices] = 1.0
        return mask

    def predict(self, obs: Any, state=None, episode_start=None, deterministic: bool = True):
        import numpy as np

        with torch.no_grad():
            mask = self.hard_mask(self.scores(obs)).numpy().astype(np.int8)
        return {"mask": mask, "coef": np.zeros_like(mask, dtype=np.float32)}, state

    def mask_gradient(self, obs: dict) -> tuple[torch.Tensor, dict]:
        """One env step; returns the selector's surrogate (graph into the policy) and the step's info."""
        import numpy as np

        from agents.rledit import weight_gradients
        from edit_gym.editing.scores import answer_logprobs

        inner = self.env.unwrapped
        s = self.scores(obs)
        hard = self.hard_mask(s.detach())
        soft = torch.sigmoid(s)
        mask_st = hard + soft - soft.detach()
        n = inner.num_candidates
        req = inner.stream[inner._t]
        cap = inner._cap  # the env's own capture of this request on the current weights
        with torch.no_grad():
            updates = [
                inner._rule.update(j, cap.keys[j], cap.grads[j], c.weight())
                for j, c in enumerate(inner.candidates)
            ]
        scales = inner.update_scales(hard.numpy().astype(bool), np.zeros(n))
        action = {"mask": hard.numpy().astype(np.int8), "coef": np.zeros(n, np.float32)}
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        # dL/dW at the edited weights, on the prompt and its paraphrases
        pairs = [(q, req.target_new) for q in (req.prompt, *req.paraphrases[:2])]
        batch = inner.encoder.encode(pairs, device=inner.device)

        def post_edit_loss() -> tuple[torch.Tensor]:
            logp = answer_logprobs(inner.model, batch, grad=True)
            return (-logp.gather(1, batch.labels[batch.answer_mask][:, None]).mean(),)

        (loss,), grads = weight_gradients(inner.candidates, post_edit_loss)
        # with a hard 0 the update was not applied: score it at the unit scale the spread would give
        unit = float(max(scales.max(), 1e-12))
        dm = torch.zeros(n)
        for j, g in enumerate(grads):
            dm[j] = (float(scales[j]) or unit) * float((g * updates[j].matrix()).sum())
        info = {
            **info,
            "obs": next_obs,
            "terminated": terminated or truncated,
            "reward": reward,
            "loss": float(loss.detach()),
        }
        return (mask_st * dm).sum(), info

    def learn(
        self,
        total_timesteps: int,
        tb_log_dir: str | None = None,
        progress_bar: bool = False,
        after_step: Callable[[int, Any], None] | None = None,
    ) -> StraightThroughSelector:
        """Train ``total_timesteps`` more steps. ``after_step(steps_done, writer)`` runs after every
        optimizer step (e.g. a periodic checkpoint, a held-out evaluation), ``steps_done`` counting
        from the first run; ``writer`` is the TensorBoard writer or None.

        A continued selector starts episode ``episodes`` on its stream (``reset(seed + episodes)``):
        saved at an episode's end, it goes on exactly as an uninterrupted run; saved inside one, it
        starts that episode over."""
        writer = None
        if tb_log_dir:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(tb_log_dir)
        from tqdm.auto import tqdm

        obs, _ = self.env.reset(seed=self.seed + self.episodes)
        first = self.steps_trained
        steps = range(first, first + total_timesteps)
        for step in tqdm(steps, desc="hiedit", unit="step", disable=not progress_bar):
            surrogate, info = self.mask_gradient(obs)
            self.optimizer.zero_grad()
            surrogate.backward()
            self.optimizer.step()
            if writer is not None:
                writer.add_scalar("losses/post_edit_loss", info["loss"], step)
                for tag, value in step_scalars(info, info["reward"]).items():  # the shared layout
                    writer.add_scalar(tag, value, step)
            self.steps_trained = step + 1
            if info["terminated"]:
                self.episodes += 1
                obs, _ = self.env.reset(seed=self.seed + self.episodes)
            else:
                obs = info["obs"]
            if after_step is not None:
                after_step(step + 1, writer)
        if writer is not None:
            writer.close()
        return self


def _sb3_algorithm(trainer: str):
    """SB3's PPO, or sb3-contrib's MaskablePPO for the budgeted ``slots`` action."""
    if trainer == "maskable":
        try:
            from sb3_contrib import MaskablePPO
        except ImportError:
            raise ImportError("the maskable trainer needs sb3-contrib: pip install sb3-contrib") from None
        return MaskablePPO
    from stable_baselines3 import PPO

    return PPO


def _env_id(env: Any) -> str:
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else "LifelongEdit-Tiny-v0"


def _env_kwargs(env: Any) -> dict:
    spec = getattr(env, "spec", None)
    return dict(spec.kwargs) if spec is not None else {}
