"""Read an evaluation: the results table, the JSON fields, the three plots, a TensorBoard run.

The same as `edit-gym eval --agent fixed --env LifelongEdit-Tiny-v0 --edits 20 --json run.json
--plots plots/ --tensorboard tb/` followed by `edit-gym plot run.json`.

python examples/08_results_and_plots.py
"""

import json
import tempfile
from pathlib import Path

import gymnasium as gym
from torch.utils.tensorboard import SummaryWriter

import edit_gym  # noqa: F401  registers the ids
from agents import FixedBlockAgent
from edit_gym.plots import save_plots
from edit_gym.runner import results_table, run_episode
from edit_gym.tensorboard_layout import log_run

env = gym.make("LifelongEdit-Tiny-v0", num_edits=20, final_eval=False)
result = run_episode(
    env, FixedBlockAgent(env), seed=0, extended=False, progress=False, retention_points=5, samples=3
)
result["agent"] = "fixed"
print(results_table(result))

out = Path(tempfile.mkdtemp(prefix="results-"))
(out / "run.json").write_text(json.dumps(result, indent=1))
print("JSON fields:", ", ".join(result))
print("retention matrix rows (after edit j: mean efficacy of edits 1..j):")
for after, row in zip(result["retention"]["after_edit"], result["retention"]["efficacy"], strict=True):
    print(f"  after edit {after:>2}: {100 * sum(row) / len(row):5.1f}%")
sample = result["samples"][0]
print(
    f"sample: {sample['prompt']!r} -> target {sample['target_new']!r}; "
    f"before {sample['output_before']!r}, after {sample['output_after']!r}"
)
for name, path in save_plots(result, out / "plots").items():
    print(f"plot {name}: {path}")
with SummaryWriter(str(out / "tb")) as writer:
    log_run(writer, result)
print(f"TensorBoard run: tensorboard --logdir {out / 'tb'}")
