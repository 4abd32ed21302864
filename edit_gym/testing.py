"""Checks for an agent you plug into edit-gym: the ones the suite runs on its own agents.

An edit-gym agent is any object with SB3's ``predict(obs, state=None, episode_start=None,
deterministic=True) -> (action, state)``; built from the env (``Agent(env)``), or loaded
(``Agent.load(path, env=env)``). ``check_agent`` plays a short seeded episode and raises
:class:`AgentCheckError` naming the first broken promise::

    from edit_gym.testing import check_agent
    check_agent(MyAgent(env), "LifelongEdit-Tiny-v0")   # or pass the env itself
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np


class AgentCheckError(AssertionError):
    """An agent broke a promise of the agent protocol (the message says which)."""


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return np.array_equal(np.asarray(a), np.asarray(b))


def check_agent(
    agent: Any, env: Any, *, num_edits: int = 4, seed: int = 0, deterministic_agent: bool = True
) -> dict:
    """Check ``agent`` on ``env`` (an env id or an env) over one seeded episode; return its summary.

    Checks, in order: ``predict`` exists and takes ``deterministic``; it returns an ``(action,
    state)`` pair; every action lies in the env's action space and is accepted by ``step``; it
    does not modify the observation it is given; deterministic predictions on the same
    observation are equal (skipped with ``deterministic_agent=False``, for agents that are random
    by design, like random-K); and the episode finishes without a fault. Returns ``{"edits",
    "return", "final_efficacy"}`` of the episode.
    """
    import gymnasium as gym

    import edit_gym  # noqa: F401  registers the ids

    own_env = isinstance(env, str)
    if own_env:
        env = gym.make(env, num_edits=num_edits)
    try:
        predict = getattr(agent, "predict", None)
        if not callable(predict):
            raise AgentCheckError(f"{type(agent).__name__} has no predict(obs, deterministic=True) method")
        obs, _ = env.reset(seed=seed)
        total, terminated, truncated, edits, info = 0.0, False, False, 0, {}
        while not (terminated or truncated):
            before = copy.deepcopy(obs)
            try:
                out = predict(obs, deterministic=True)
            except TypeError as err:
                raise AgentCheckError(f"predict(obs, deterministic=True) failed: {err}") from err
            if not (isinstance(out, tuple) and len(out) == 2):
                raise AgentCheckError(
                    f"predict must return (action, state) like SB3, got {type(out).__name__}"
                )
            action = out[0]
            if not _same(obs, before):
                raise AgentCheckError("predict modified the observation it was given")
            if deterministic_agent and not _same(action, predict(obs, deterministic=True)[0]):
                raise AgentCheckError("two deterministic predictions on the same observation differ")
            if not env.action_space.contains(action):
                raise AgentCheckError(
                    f"action {action!r} is not in the env's action space {env.action_space}"
                )
            try:
                obs, reward, terminated, truncated, info = env.step(action)
            except ValueError as err:  # InvalidActionError: e.g. a budget the action breaks
                raise AgentCheckError(f"the env refused the action: {err}") from err
            if info.get("fault"):
                raise AgentCheckError(f"the episode faulted at edit {info['edit_index']}: {info['fault']}")
            total += float(reward)
            edits = int(info["edit_index"])
        return {"edits": edits, "return": total, "final_efficacy": float(info.get("final_efficacy", np.nan))}
    finally:
        if own_env:
            env.close()
