"""HiEdit: a high-level policy picks which layers to edit, a low-level rule writes the update.

The selector is trained with PPO on the advantage reward: the step's outcome minus the outcome
had every candidate been edited, minus a sparsity cost. Here the low-level rule is ridge; pass
an RLEdit checkpoint folder (examples/05_rledit.py) to use the learned rule instead.

python examples/06_hiedit.py
"""

import tempfile

import edit_gym  # noqa: F401  registers the ids
from agents.hiedit import HiEditAgent, make_training_env
from edit_gym.runner import run_episode

env = make_training_env("LifelongEdit-Tiny-v0", "ridge", "ppo", num_edits=6)
agent = HiEditAgent(env, "ppo", seed=0, learning_rate=3e-3).learn(128)
folder = tempfile.mkdtemp(prefix="hiedit-") + "/selector"
agent.save(folder)
loaded = HiEditAgent.load(folder, env=env)
result = run_episode(env, loaded, seed=100, extended=False, progress=False)
print(
    f"HiEdit (ridge low level) on a held-out stream: final efficacy "
    f"{100 * result['final']['efficacy']:.1f}%, {result['layers_touched_per_edit']:.1f} of "
    f"{env.unwrapped.num_candidates} candidates per edit; saved to {folder}"
)
