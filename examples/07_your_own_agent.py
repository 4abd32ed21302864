"""Plug in your own agent: an object with SB3's predict(obs, deterministic=True) -> (action, state).

edit_gym.testing.check_agent runs the checks the suite runs on its own agents (action in the
space, observation untouched, deterministic, a clean episode) and names the first broken one.
The same class works on the command line: edit-gym eval --agent my_module:LastLayersAgent ...

python examples/07_your_own_agent.py
"""

import gymnasium as gym
import numpy as np

import edit_gym  # noqa: F401  registers the ids
from edit_gym.actions import encode_action
from edit_gym.runner import results_table, run_episode
from edit_gym.testing import check_agent


class LastLayersAgent:
    """Edit the last ``k`` candidate matrices, at a coefficient that grows with the edit loss."""

    def __init__(self, env, k: int = 2):
        inner = env.unwrapped
        self.n, self.k = inner.num_candidates, k
        self.action_type, self.levels = inner.cfg.action_type, inner.cfg.coef_levels

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        mask = np.zeros(self.n, dtype=bool)
        mask[-self.k :] = True
        loss = float(np.asarray(obs["layer_stats"])[0, 3])  # column 3: the request's edit loss
        coef = np.full(self.n, np.clip(loss / 10.0, 0.0, 1.0))
        return encode_action(mask, coef, self.action_type, self.levels), state


env = gym.make("LifelongEdit-Tiny-v0", num_edits=10)
agent = LastLayersAgent(env)
print("check_agent:", check_agent(agent, env))
result = run_episode(env, agent, seed=0, extended=False, progress=False)
result["agent"] = "LastLayersAgent"
print(results_table(result))
