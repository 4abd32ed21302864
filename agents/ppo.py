"""PPO for edit-gym's native Dict action, in one readable file (CleanRL style).

The policy reads the Dict observation with one small encoder shared by every candidate (the
(L, F) per-layer statistics are L samples of the same kind of thing, so the same weights score
each layer), conditioned on a context vector from the request embedding and the progress. Per
layer it outputs a Bernoulli logit (edit this candidate or not) and the mean of a Gaussian
coefficient; the value head reads the mean of the per-layer features.

Read top to bottom: ``Args``, ``Policy``, then ``train`` (rollout -> GAE -> clipped updates).

Gymnasium 1.x vector envs autoreset on the *next* step (NEXT_STEP): the step after a terminal one
resets that sub-env, ignores its action and returns reward 0. CleanRL's loop (written for 0.29)
would learn from those fake transitions; here they are masked out of the loss (``valid``), and a
terminal step never bootstraps from the next observation.

    python -m agents.ppo --env-id LifelongEdit-Tiny-v0 --total-timesteps 2048 --tb-dir runs/ppo
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Bernoulli, Normal
from tqdm.auto import tqdm

from agents.checkpointing import layout_mismatch
from edit_gym.tensorboard_layout import StepAverager, log_hparams


@dataclass
class Args:
    env_id: str = "LifelongEdit-Tiny-v0"
    """the environment id"""
    env_kwargs: dict = field(default_factory=lambda: {"num_edits": 8, "final_eval": False})
    """keyword arguments for gym.make (JSON-able)"""
    seed: int = 0
    """seed of torch, numpy and the environments"""
    total_timesteps: int = 1024
    """environment steps over all sub-envs"""
    num_envs: int = 2
    """parallel sub-environments (SyncVectorEnv)"""
    num_steps: int = 16
    """steps per sub-env per rollout"""
    learning_rate: float = 3e-3
    """Adam learning rate"""
    anneal_lr: bool = True
    """linearly anneal the learning rate to 0"""
    gamma: float = 0.95
    """discount"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    num_minibatches: int = 2
    """minibatches per epoch"""
    update_epochs: int = 4
    """epochs over each rollout"""
    clip_coef: float = 0.2
    """PPO clip range"""
    ent_coef: float = 0.0
    """entropy bonus"""
    vf_coef: float = 0.5
    """value loss weight"""
    max_grad_norm: float = 0.5
    """gradient clipping"""
    target_kl: float | None = None
    """stop the epoch loop early above this approximate KL"""
    hidden: int = 64
    """width of the per-layer encoder"""
    init_log_std: float = -0.5
    """initial log std of the coefficient head"""
    tb_dir: str | None = None
    """TensorBoard log folder (None: no logging)"""
    progress_bar: bool = True
    """show a tqdm progress bar over the training steps"""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return max(1, self.batch_size // self.num_minibatches)


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class LayerEncoder(nn.Module):
    """Reads the Dict observation one candidate at a time, with the same weights for every row.

    The (L, F) per-layer statistics are L samples of the same kind of thing; each row, scaled to
    [-1, 1] by the space's bounds, is encoded together with a context vector (request embedding and
    progress) and a learned position (which layer it is). Shared by :class:`Policy` and by the SB3
    features extractor of :mod:`agents.hiedit`.
    """

    def __init__(self, observation_space: gym.spaces.Dict, hidden: int = 64) -> None:
        super().__init__()
        stats = observation_space["layer_stats"]
        self.num_layers, self.num_stats = stats.shape
        # fixed input scaling from the space's bounds: [low, high] -> [-1, 1]
        self.register_buffer("low", torch.as_tensor(stats.low, dtype=torch.float32))
        self.register_buffer(
            "span", torch.as_tensor(stats.high - stats.low, dtype=torch.float32).clamp_min(1e-6)
        )
        prog = observation_space["progress"]
        self.register_buffer("prog_high", torch.as_tensor(prog.high, dtype=torch.float32).clamp_min(1e-6))
        context_in = observation_space["request"].shape[0] + prog.shape[0]
        self.context = nn.Sequential(layer_init(nn.Linear(context_in, hidden)), nn.Tanh())
        self.position = nn.Parameter(torch.zeros(self.num_layers, hidden))  # which layer this is
        self.encoder = nn.Sequential(
            layer_init(nn.Linear(self.num_stats + hidden, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)),
            nn.Tanh(),
        )

    def features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L, hidden): each layer's statistics with the request/progress context and its position."""
        stats = 2 * (obs["layer_stats"] - self.low) / self.span - 1
        ctx = self.context(torch.cat([obs["request"], obs["progress"] / self.prog_high], dim=-1))
        ctx = ctx[:, None, :] + self.position[None]
        return self.encoder(torch.cat([stats, ctx], dim=-1))


class Policy(LayerEncoder):
    """Per-layer shared encoder -> (mask logit, coefficient mean) per candidate; pooled value."""

    def __init__(
        self, observation_space: gym.spaces.Dict, hidden: int = 64, init_log_std: float = -0.5
    ) -> None:
        super().__init__(observation_space, hidden)
        self.mask_head = layer_init(nn.Linear(hidden, 1), std=0.01)
        self.coef_head = layer_init(nn.Linear(hidden, 1), std=0.01)
        self.log_std = nn.Parameter(torch.full((self.num_layers,), float(init_log_std)))
        self.value_head = layer_init(nn.Linear(hidden, 1), std=1.0)

    def get_value(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.value_head(self.features(obs).mean(1)).squeeze(-1)

    def get_action_and_value(
        self, obs: dict[str, torch.Tensor], action: dict[str, torch.Tensor] | None = None
    ):
        h = self.features(obs)
        mask_dist = Bernoulli(logits=self.mask_head(h).squeeze(-1))
        coef_dist = Normal(self.coef_head(h).squeeze(-1), self.log_std.exp().expand(h.shape[0], -1))
        if action is None:
            action = {"mask": mask_dist.sample(), "coef": coef_dist.sample()}
        logprob = mask_dist.log_prob(action["mask"]).sum(-1) + coef_dist.log_prob(action["coef"]).sum(-1)
        entropy = mask_dist.entropy().sum(-1) + coef_dist.entropy().sum(-1)
        value = self.value_head(h.mean(1)).squeeze(-1)
        return action, logprob, entropy, value

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> dict[str, np.ndarray]:
        """One env action (mask int8, coef clipped to [-1, 1]) for a single or batched observation."""
        single = obs["layer_stats"].ndim == 2
        t = {
            k: torch.as_tensor(v, dtype=torch.float32)[None] if single else torch.as_tensor(v)
            for k, v in obs.items()
        }
        h = self.features(t)
        if deterministic:
            # each candidate's more likely choice; if that selects none, the single most likely one
            # (an empty mask skips the edit, which the independent per-layer modes would do by accident)
            logits = self.mask_head(h).squeeze(-1)
            mask = (logits > 0).float()
            none = mask.sum(-1) == 0
            mask[none, logits[none].argmax(-1)] = 1.0
            coef = self.coef_head(h).squeeze(-1)
        else:
            action, *_ = self.get_action_and_value(t)
            mask, coef = action["mask"], action["coef"]
        out = {"mask": mask.numpy().astype(np.int8), "coef": np.clip(coef.numpy(), -1, 1).astype(np.float32)}
        return {k: v[0] for k, v in out.items()} if single else out


def to_env_action(action: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Sampled tensors -> a batched Dict action the env accepts (coefficients clipped to [-1, 1])."""
    return {
        "mask": action["mask"].cpu().numpy().astype(np.int8),
        "coef": np.clip(action["coef"].cpu().numpy(), -1.0, 1.0).astype(np.float32),
    }


def _obs_tensor(obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in obs.items()}


def train(
    args: Args,
    envs: gym.vector.VectorEnv | None = None,
    policy: Policy | None = None,
    callback: Callable[[int, Policy, Any], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    start_step: int = 0,
) -> tuple[Policy, list[float]]:
    """Run PPO; returns the policy and the episodic returns seen during training (in order).

    ``callback(global_step, policy, writer)`` runs after every update (e.g. a held-out evaluation);
    ``writer`` is the TensorBoard writer, or None.

    Continuing a run: pass its ``policy``, its ``optimizer`` (Adam's moments) and ``start_step``,
    the env steps it has trained (a multiple of the batch); ``args.total_timesteps`` is then the
    total to reach. The learning-rate schedule picks up at ``start_step`` of that total, and the
    envs and RNGs are seeded with ``seed + start_step``: fresh episodes, not a replay of the first.
    """
    import random

    if start_step % args.batch_size or not 0 <= start_step <= args.total_timesteps:
        raise ValueError(
            f"start_step must be a multiple of the batch ({args.batch_size}) between 0 and "
            f"total_timesteps ({args.total_timesteps}), got {start_step}"
        )
    seed = args.seed + start_step
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if envs is None:
        import edit_gym  # noqa: F401  registers the ids

        envs = gym.make_vec(args.env_id, num_envs=args.num_envs, vectorization_mode="sync", **args.env_kwargs)
    if not isinstance(envs.single_action_space, gym.spaces.Dict):
        raise ValueError("agents.ppo trains on the native Dict action (action_type='dict')")
    policy = policy or Policy(envs.single_observation_space, args.hidden, args.init_log_std)
    optimizer = optimizer or make_optimizer(policy, args)
    writer = None
    if args.tb_dir:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(args.tb_dir)
        rows = "\n".join(f"|{f.name}|{getattr(args, f.name)}|" for f in fields(args))
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{rows}")

    n, t_steps, num_layers = args.num_envs, args.num_steps, policy.num_layers
    obs_buf = {k: torch.zeros((t_steps, n, *s.shape)) for k, s in envs.single_observation_space.items()}
    mask_buf = torch.zeros((t_steps, n, num_layers))
    coef_buf = torch.zeros((t_steps, n, num_layers))
    logprobs = torch.zeros((t_steps, n))
    rewards = torch.zeros((t_steps, n))
    dones = torch.zeros((t_steps, n))  # the transition ended its episode
    valid = torch.zeros((t_steps, n))  # 0 for NEXT_STEP autoreset steps (action ignored, reward 0)
    values = torch.zeros((t_steps, n))

    global_step, start = start_step, time.time()
    step_stats = StepAverager()
    next_obs, _ = envs.reset(seed=seed)
    next_obs = _obs_tensor(next_obs)
    resetting = np.zeros(n, dtype=bool)  # the next step of this sub-env is an autoreset step
    ep_return, ep_returns = np.zeros(n), []
    num_iterations = max(1, args.total_timesteps // args.batch_size)
    first = start_step // args.batch_size + 1
    bar = tqdm(
        total=num_iterations * args.batch_size,
        initial=start_step,
        desc="ppo",
        unit="step",
        disable=not args.progress_bar,
    )
    for iteration in range(first, num_iterations + 1):
        bar.update(args.batch_size)
        if ep_returns:
            bar.set_postfix(ret=f"{np.mean(ep_returns[-10:]):.2f}")
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate

        # ---- rollout
        for step in range(t_steps):
            global_step += n
            for k in obs_buf:
                obs_buf[k][step] = next_obs[k]
            with torch.no_grad():
                action, logprob, _, value = policy.get_action_and_value(next_obs)
            mask_buf[step], coef_buf[step] = action["mask"], action["coef"]
            logprobs[step], values[step] = logprob, value
            valid[step] = torch.as_tensor(~resetting, dtype=torch.float32)
            obs, reward, terminated, truncated, infos = envs.step(to_env_action(action))
            step_stats.add_vector(infos, reward, ~resetting)
            done = np.logical_and(np.logical_or(terminated, truncated), ~resetting)
            rewards[step] = torch.as_tensor(np.where(resetting, 0.0, reward), dtype=torch.float32)
            dones[step] = torch.as_tensor(done, dtype=torch.float32)
            ep_return += np.where(resetting, 0.0, reward)
            for i in np.flatnonzero(done):
                ep_returns.append(float(ep_return[i]))
                if writer is not None:
                    writer.add_scalar("charts/episodic_return", ep_return[i], global_step)
                ep_return[i] = 0.0
            resetting = done
            next_obs = _obs_tensor(obs)

        # ---- GAE: a terminal step does not bootstrap; an autoreset step's next value is a new episode's
        with torch.no_grad():
            next_value = policy.get_value(next_obs)
            advantages = torch.zeros_like(rewards)
            lastgaelam = torch.zeros(n)
            for t in reversed(range(t_steps)):
                nv = next_value if t == t_steps - 1 else values[t + 1]
                nonterminal = 1.0 - dones[t]
                # an autoreset step has nothing to learn from; cut the recursion through it as well
                delta = (rewards[t] + args.gamma * nv * nonterminal - values[t]) * valid[t]
                lastgaelam = delta + args.gamma * args.gae_lambda * nonterminal * lastgaelam * valid[t]
                advantages[t] = lastgaelam
            returns = advantages + values

        # ---- flatten the valid transitions and update
        keep = valid.reshape(-1) > 0
        b_obs = {k: v.reshape(-1, *v.shape[2:])[keep] for k, v in obs_buf.items()}
        b_mask = mask_buf.reshape(-1, num_layers)[keep]
        b_coef = coef_buf.reshape(-1, num_layers)[keep]
        b_logprobs, b_adv = logprobs.reshape(-1)[keep], advantages.reshape(-1)[keep]
        b_returns, b_values = returns.reshape(-1)[keep], values.reshape(-1)[keep]
        size = int(keep.sum())
        mb = max(1, size // args.num_minibatches)
        clipfracs, approx_kl = [], torch.zeros(())
        pg_loss = v_loss = entropy_loss = torch.zeros(())
        for _epoch in range(args.update_epochs):
            order = torch.randperm(size)
            for s in range(0, size, mb):
                idx = order[s : s + mb]
                _, newlogprob, entropy, newvalue = policy.get_action_and_value(
                    {k: v[idx] for k, v in b_obs.items()}, {"mask": b_mask[idx], "coef": b_coef[idx]}
                )
                logratio = newlogprob - b_logprobs[idx]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(float(((ratio - 1.0).abs() > args.clip_coef).float().mean()))
                adv = b_adv[idx]
                if len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(
                    -adv * ratio, -adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)
                ).mean()
                v_loss = 0.5 * ((newvalue - b_returns[idx]) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
                optimizer.step()
            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        if writer is not None:
            var_y = b_returns.var()
            explained = float("nan") if var_y == 0 else float(1 - (b_returns - b_values).var() / var_y)
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            for tag, value in step_stats.flush().items():  # reward/*, edit/*, action/* (shared layout)
                writer.add_scalar(tag, value, global_step)
            writer.add_scalar("losses/policy_loss", float(pg_loss.detach()), global_step)
            writer.add_scalar("losses/value_loss", float(v_loss.detach()), global_step)
            writer.add_scalar("losses/entropy", float(entropy_loss.detach()), global_step)
            writer.add_scalar("losses/approx_kl", float(approx_kl), global_step)
            writer.add_scalar("losses/clipfrac", float(np.mean(clipfracs)) if clipfracs else 0.0, global_step)
            writer.add_scalar("losses/explained_variance", explained, global_step)
            sps = (global_step - start_step) / (time.time() - start)
            writer.add_scalar("charts/SPS", int(sps), global_step)
        if callback is not None:
            callback(global_step, policy, writer)
    bar.close()
    if writer is not None:
        last = ep_returns[-10:]
        log_hparams(
            writer, asdict(args), {"hparam/mean_return_last_10": float(np.mean(last)) if last else None}
        )
        writer.close()
    return policy, ep_returns


def make_optimizer(policy: Policy, args: Args) -> torch.optim.Adam:
    """The PPO optimizer of ``policy`` (a continued run loads its saved state into a new one)."""
    return torch.optim.Adam(policy.parameters(), lr=args.learning_rate, eps=1e-5)


def write_policy(policy: Policy, folder: Path, args: Args) -> None:
    """Policy weights (safetensors: tensors only) and the args (JSON) into ``folder``."""
    import json

    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in policy.state_dict().items()}, str(Path(folder) / "policy.safetensors")
    )
    from edit_gym.cache import file_sha256

    weights = Path(folder) / "policy.safetensors"
    meta = {
        "format": "edit-gym-ppo-policy",
        "version": 1,
        "args": asdict(args),
        "sha256": file_sha256(weights),
    }
    (Path(folder) / "policy.json").write_text(json.dumps(meta, indent=1))


def save_policy(policy: Policy, path: str | Path, args: Args) -> Path:
    """Write the policy folder atomically (the previous one survives an interruption)."""
    from edit_gym.cache import atomic_write_folder

    atomic_write_folder(Path(path), lambda tmp: write_policy(policy, tmp, args))
    return Path(path)


def load_policy(path: str | Path, observation_space: gym.spaces.Dict) -> tuple[Policy, Args]:
    import json

    from safetensors.torch import load_file

    path = Path(path)
    try:
        meta = json.loads((path / "policy.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a saved PPO policy folder ({err})") from None
    if meta.get("format") != "edit-gym-ppo-policy":
        raise ValueError(f"{path / 'policy.json'}: not an edit-gym PPO policy")
    if meta.get("version") != 1:
        raise ValueError(f"{path / 'policy.json'}: version {meta.get('version')!r}, this edit-gym reads 1")
    from edit_gym.editing.hypernet import verify_sha256

    weights = path / "policy.safetensors"
    if not weights.is_file():
        raise ValueError(f"{weights} is missing")
    if "sha256" in meta:  # folders from before the checksum carry none
        verify_sha256(weights, meta["sha256"], "policy.json")
    args = Args(**meta["args"])
    policy = Policy(observation_space, args.hidden, args.init_log_std)
    try:
        policy.load_state_dict(load_file(str(weights)))
    except RuntimeError as err:  # tensor shapes of another observation layout or candidate count
        raise layout_mismatch(weights, observation_space, err) from None
    return policy, args


class PPOAgent:
    """A trained :class:`Policy` behind the SB3-shaped agent protocol (``predict``, ``save``, ``load``)."""

    def __init__(self, env: Any, args: Args | None = None, policy: Policy | None = None) -> None:
        self.env = env
        self.args = args or Args()
        if policy is None:
            torch.manual_seed(self.args.seed)  # a seeded initial policy: runs with one seed are repeatable
            policy = Policy(env.observation_space, self.args.hidden, self.args.init_log_std)
        self.policy = policy
        self.optimizer = make_optimizer(policy, self.args)
        self.steps_trained = 0

    def learn(
        self,
        total_timesteps: int,
        envs: gym.vector.VectorEnv | None = None,
        callback: Callable[[int, Policy, Any], None] | None = None,
    ) -> PPOAgent:
        """Train ``total_timesteps`` more env steps (continuing ``steps_trained``, the optimizer and
        the learning-rate schedule of a loaded agent)."""
        self.args.total_timesteps = self.steps_trained + total_timesteps
        self.policy, self.episodic_returns = train(
            self.args, envs, self.policy, callback, optimizer=self.optimizer, start_step=self.steps_trained
        )
        num_iterations = max(1, self.args.total_timesteps // self.args.batch_size)
        self.steps_trained = max(self.steps_trained, num_iterations * self.args.batch_size)
        return self

    def predict(self, obs: dict, state=None, episode_start=None, deterministic: bool = True):
        return self.policy.act(obs, deterministic), state

    def save(self, path: str | Path) -> Path:
        return save_policy(self.policy, path, self.args)

    @classmethod
    def load(cls, path: str | Path, env: Any) -> PPOAgent:
        policy, args = load_policy(path, env.observation_space)
        return cls(env, args, policy)


def main() -> None:
    parser = argparse.ArgumentParser(description="PPO on an edit-gym env (native Dict action)")
    parser.add_argument("--env-id", default=Args.env_id)
    parser.add_argument("--num-edits", type=int, default=8, help="edits per episode")
    parser.add_argument("--total-timesteps", type=int, default=Args.total_timesteps)
    parser.add_argument("--num-envs", type=int, default=Args.num_envs)
    parser.add_argument("--num-steps", type=int, default=Args.num_steps)
    parser.add_argument("--learning-rate", type=float, default=Args.learning_rate)
    parser.add_argument("--seed", type=int, default=Args.seed)
    parser.add_argument("--tb-dir", help="TensorBoard log folder")
    parser.add_argument("--out", help="save the policy folder here")
    ns = parser.parse_args()
    args = Args(
        env_id=ns.env_id,
        env_kwargs={"num_edits": ns.num_edits, "final_eval": False},
        total_timesteps=ns.total_timesteps,
        num_envs=ns.num_envs,
        num_steps=ns.num_steps,
        learning_rate=ns.learning_rate,
        seed=ns.seed,
        tb_dir=ns.tb_dir,
    )
    policy, returns = train(args)
    print(
        f"{len(returns)} episodes; first returns {np.round(returns[:3], 2)}, last {np.round(returns[-3:], 2)}"
    )
    if ns.out:
        save_policy(policy, ns.out, args)
        print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
