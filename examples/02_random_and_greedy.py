"""A random policy and a greedy one on the tiny environment, side by side.

The random policy samples the action space; the greedy one edits the K candidates with the largest
fine-tuning gradient for each request (agents.TopKGradientAgent), and "all" edits every candidate.
Same seeded stream for each, so the returns compare.

python examples/02_random_and_greedy.py
"""

import gymnasium as gym
import numpy as np

import edit_gym  # noqa: F401  registers the ids
from agents import AllCandidatesAgent, TopKGradientAgent


def play(env, policy, seed: int) -> tuple[float, float]:
    """Return (episode return, final efficacy) of ``policy(obs) -> action`` on a seeded stream."""
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        total += reward
        done = terminated or truncated
    return total, info["final_efficacy"]


env = gym.make("LifelongEdit-Tiny-v0", num_edits=10)
env.action_space.seed(0)
policies = {
    "random (action_space.sample)": lambda obs: env.action_space.sample(),
    "greedy top-3 by gradient norm": lambda obs: TopKGradientAgent(env, k=3).predict(obs)[0],
    "all candidates": lambda obs: AllCandidatesAgent(env).predict(obs)[0],
}
print(f"{'policy':<32} {'return':>8} {'final efficacy':>15}")
for name, policy in policies.items():
    results = [play(env, policy, seed) for seed in (0, 1, 2)]
    ret, eff = np.mean(results, axis=0)
    print(f"{name:<32} {ret:>8.2f} {100 * eff:>14.1f}%")
