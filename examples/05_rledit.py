"""RLEdit: train a hypernetwork update rule over whole edit sequences, then edit with it.

The trained checkpoint folder is an update rule: gym.make(..., editor="rledit:DIR") edits with
it, and the agent that goes with it selects every candidate (the net sets each matrix's step).
Training uses the train split of the built-in facts; evaluation the test split (no overlap).

python examples/05_rledit.py
"""

import tempfile

import gymnasium as gym

import edit_gym  # noqa: F401  registers the ids
from agents import AllCandidatesAgent, RLEditAgent
from edit_gym.runner import run_episode

train_env = gym.make("LifelongEdit-Tiny-v0", dataset="facts-train", num_edits=6)
agent = RLEditAgent(train_env, window=3, rank=4, seed=0)
agent.learn(total_sequences=6, progress_bar=False)
folder = tempfile.mkdtemp(prefix="rledit-") + "/checkpoint"
agent.save(folder)
print(f"trained on {agent.sequences_trained} sequences; checkpoint {folder}")

for editor in ("ridge", f"rledit:{folder}"):
    env = gym.make("LifelongEdit-Tiny-v0", dataset="facts-test", num_edits=10, editor=editor)
    result = run_episode(env, AllCandidatesAgent(env), seed=0, extended=False, progress=False)
    final = result["final"]
    name = "rledit" if editor.startswith("rledit") else editor
    print(
        f"{name:<7} efficacy {100 * final['efficacy']:5.1f}%  generalization "
        f"{100 * final['generalization']:5.1f}%  specificity {100 * final['specificity']:5.1f}%  "
        f"{result['seconds_per_edit']:.3f} s/edit"
    )
