"""Train Stable-Baselines3 PPO on the tiny environment.

SB3 cannot train on Dict actions, so the env exposes the mask alone (action_type="mask",
MultiBinary: edit a candidate or not, at the rule's own step). EditMetricsCallback logs the
env's reward terms and edit metrics in edit-gym's TensorBoard layout next to SB3's own tags.

python examples/03_sb3_ppo.py
"""

import tempfile

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

import edit_gym  # noqa: F401  registers the ids
from agents.callbacks import EditMetricsCallback
from agents.features import LayerStatsExtractor
from edit_gym.runner import run_episode

env = gym.make("LifelongEdit-Tiny-v0", action_type="mask", num_edits=8, final_eval=False)
logs = tempfile.mkdtemp(prefix="sb3-ppo-")
model = PPO(
    "MultiInputPolicy",
    env,
    n_steps=64,
    batch_size=32,
    n_epochs=4,
    gamma=0.95,
    seed=0,
    policy_kwargs={"features_extractor_class": LayerStatsExtractor},  # one encoder shared by layers
    tensorboard_log=logs,
)
model.learn(128, callback=EditMetricsCallback())
print(f"TensorBoard logs in {logs} (tensorboard --logdir {logs})")

result = run_episode(env, model, seed=100, extended=False, progress=False)  # a held-out stream
print(
    f"trained PPO on a held-out stream: final efficacy {100 * result['final']['efficacy']:.1f}%, "
    f"{result['layers_touched_per_edit']:.1f} candidates per edit, "
    f"mean reward {np.mean([c['reward'] for c in result['curve']]):+.3f}"
)
