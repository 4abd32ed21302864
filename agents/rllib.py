"""Ray RLlib on edit-gym: PPO with env runners in separate processes, on a local Ray or a cluster.

RLlib brings the scale-out (env runner actors, learners, fault tolerance); this module only adapts
the env to what RLlib's default models take:

- a flat observation: gymnasium's ``FlattenObservation`` over the Dict (request, layer_stats,
  progress), applied by :func:`make_env` inside every runner;
- an action space RLlib's default distributions cover: ``MultiDiscrete`` (per candidate: skip, or
  edit at one of the coefficient levels; the ``LifelongEdit-*-MultiDiscrete-v0`` ids) or ``Box``.
  A Dict action with a ``MultiBinary`` mask is not one of them, so it is refused with that reason.

Every runner builds its env by calling :func:`make_env` (registered with RLlib under
:data:`ENV_NAME`), so each runner process imports edit-gym and loads its own model. On a cluster,
install edit-gym on every node (or ship it with ``runtime_env``); see docs/rllib.md.

:class:`RLlibAgent` puts a trained RLModule behind edit-gym's ``predict`` protocol, so
``edit_gym.runner.run_episode``, ``edit-gym eval --agent module:Class`` style tooling and
``edit_gym.testing.check_agent`` all work on it. Needs ``pip install "edit-gym[rllib]"``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ENV_NAME = "edit-gym"
DEFAULT_ENV_ID = "LifelongEdit-Tiny-MultiDiscrete-v0"
RLLIB_ACTION_SPACES = (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.Box)


def make_env(env_config: dict | None = None) -> gym.Env:
    """The env one RLlib runner steps: ``env_config["env_id"]`` made with the other keys, flattened.

    ``env_config`` is RLlib's ``EnvContext`` (a dict); ``env_id`` defaults to :data:`DEFAULT_ENV_ID`.
    """
    import edit_gym  # noqa: F401  registers the ids in this (runner) process

    kwargs = dict(env_config or {})
    env_id = kwargs.pop("env_id", DEFAULT_ENV_ID)
    env = gym.make(env_id, **kwargs)
    if not isinstance(env.action_space, RLLIB_ACTION_SPACES):
        env.close()
        raise ValueError(
            f"{env_id} has action space {env.action_space}, which RLlib's default PPO models cannot "
            "sample; use a MultiDiscrete or Box id (e.g. LifelongEdit-Tiny-MultiDiscrete-v0) or pass "
            "action_type='multidiscrete'"
        )
    return gym.wrappers.FlattenObservation(env)


def ppo_config(
    env_id: str = DEFAULT_ENV_ID,
    env_kwargs: dict | None = None,
    num_env_runners: int = 2,
    rollout_fragment_length: int = 32,
    num_epochs: int = 4,
    minibatch_size: int = 32,
    learning_rate: float = 3e-4,
    gamma: float = 0.95,
    seed: int = 0,
):
    """An RLlib ``PPOConfig`` for an edit-gym id; one training iteration collects
    ``num_env_runners * rollout_fragment_length`` env steps (one batch per runner)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    if num_env_runners < 1:
        raise ValueError(f"num_env_runners must be >= 1 (runner processes), got {num_env_runners}")
    register_env(ENV_NAME, make_env)
    env_config = {"env_id": env_id, **(env_kwargs or {})}
    return (
        PPOConfig()
        .environment(ENV_NAME, env_config=env_config)
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=1,
            rollout_fragment_length=rollout_fragment_length,
        )
        .training(
            train_batch_size_per_learner=num_env_runners * rollout_fragment_length,
            minibatch_size=minibatch_size,
            num_epochs=num_epochs,
            lr=learning_rate,
            gamma=gamma,
        )
        .debugging(seed=seed)
    )


def runner_pids(algo) -> list[int]:
    """Process ids of the algorithm's remote env runners (to show they are separate processes)."""
    import os

    return sorted(
        algo.env_runner_group.foreach_env_runner(lambda _runner: os.getpid(), local_env_runner=False)
    )


class RLlibAgent:
    """A trained RLlib RLModule as an edit-gym agent: ``predict(obs) -> (action, state)``, greedy.

    ``observation_space`` is the env's Dict space (before flattening); ``predict`` flattens exactly as
    :func:`make_env` did during training. With a Box ``action_space``, actions are clipped to its
    bounds, as RLlib does before stepping the env.
    """

    def __init__(
        self, module: Any, observation_space: gym.spaces.Space, action_space: gym.spaces.Space | None = None
    ) -> None:
        self.module = module
        self.observation_space = observation_space
        self.action_space = action_space

    @classmethod
    def from_algorithm(cls, algo: Any, env: gym.Env) -> RLlibAgent:
        return cls(algo.get_module(), env.observation_space, env.action_space)

    def predict(self, obs: Any, state=None, episode_start=None, deterministic: bool = True):
        import torch

        flat = gym.spaces.flatten(self.observation_space, obs).astype(np.float32)
        with torch.no_grad():
            out = self.module.forward_inference({"obs": torch.as_tensor(flat[None])})
            dist = self.module.get_inference_action_dist_cls().from_logits(out["action_dist_inputs"])
            if deterministic:
                dist = dist.to_deterministic()
            action = dist.sample()[0].numpy()
        if isinstance(self.action_space, gym.spaces.Box):
            # RLlib clips Box actions to the bounds before the env sees them; do the same
            action = np.clip(action, self.action_space.low, self.action_space.high).astype(
                self.action_space.dtype
            )
        return action, state
