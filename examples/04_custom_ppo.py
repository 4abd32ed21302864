"""Train the package's own PPO (agents/ppo.py, CleanRL style) on the native Dict action.

Unlike SB3, it learns the mask *and* the per-candidate coefficient. The env's base step is 10x
below its calibrated value (step_size=0.1), so a good policy must raise its coefficients. This
is a one-minute smoke run: 256 steps are often not enough, and whether the trained policy
beats its own initialization on held-out streams depends on the seed; the script prints both so
you can see which way it went. Learning curves over longer runs: benchmarks/hiedit_learning_curve.py.
Read agents/ppo.py top to bottom: Args, Policy, then train (rollout -> GAE -> clipped updates).

python examples/04_custom_ppo.py
"""

import tempfile

import gymnasium as gym
import numpy as np

import edit_gym  # noqa: F401  registers the ids
from agents.ppo import Args, PPOAgent
from edit_gym.runner import run_episode

kwargs = {"num_edits": 8, "final_eval": False, "step_size": 0.1}
env = gym.make("LifelongEdit-Tiny-v0", **kwargs)
out = tempfile.mkdtemp(prefix="custom-ppo-")
args = Args(env_id="LifelongEdit-Tiny-v0", env_kwargs=kwargs, seed=0, tb_dir=f"{out}/tb")
untrained = PPOAgent(env, Args(seed=0))
agent = PPOAgent(env, args).learn(256)
agent.save(f"{out}/policy")
loaded = PPOAgent.load(f"{out}/policy", env)
held_out = range(100, 104)  # streams never seen in training
for name, policy in (("untrained", untrained), ("trained", loaded)):
    runs = [run_episode(env, policy, seed=s, extended=False, progress=False) for s in held_out]
    ret = np.mean([sum(c["reward"] for c in r["curve"]) for r in runs])
    eff = np.mean([r["final"]["efficacy"] for r in runs])
    coef = np.mean([c["coef_magnitude"] for r in runs for c in r["curve"]])
    print(f"{name:<9} held-out return {ret:+7.2f}  final efficacy {100 * eff:5.1f}%  mean |coef| {coef:.2f}")
print(f"checkpoint and TensorBoard run in {out}")
