"""First steps: make the tiny environment, look at an observation, edit with every candidate.

python examples/01_first_steps.py
"""

import gymnasium as gym
import numpy as np

import edit_gym  # noqa: F401  registers the ids

env = gym.make("LifelongEdit-Tiny-v0", num_edits=5, render_mode="ansi")
obs, info = env.reset(seed=0)
inner = env.unwrapped
request = inner.requests[int(inner._stream[0])]
print(f"first request: {request.prompt!r} -> {request.target_new!r} (was {request.target_true!r})")
print("layer_stats columns:", [name for name, *_ in edit_gym.env.LAYER_STATS])
print(obs["layer_stats"].round(2))

terminated = False
while not terminated:
    n = inner.num_candidates
    action = {"mask": np.ones(n, dtype=np.int8), "coef": np.zeros(n, dtype=np.float32)}
    obs, reward, terminated, truncated, info = env.step(action)
    print(f"reward {reward:+.3f}  loss {info['edit_loss_before']:.2f} -> {info['edit_loss_after']:.2f}")
print(env.render())
print({k: round(v, 3) for k, v in info.items() if k.startswith("final_")})
