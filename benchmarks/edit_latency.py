"""An edit's latency per editor, as a ratio to one forward+backward pass of the model, in one run.

An edit is one forward+backward over the edit prompt (keys and value-gradients) followed by the
rule's update of every candidate and its application. For each editor this script times, on the
same requests and weights: the forward+backward alone, the update alone (rule + apply, every
candidate), and the whole ``env.step`` (which adds the post-edit scores), and prints medians and
the ratios ``edit / fwd+bwd`` and ``step / fwd+bwd``.

    python benchmarks/edit_latency.py --model smollm2-135m --editors ridge memit rledit:runs/rledit-smollm2-s0
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from edit_gym.editing.capture import capture
from edit_gym.env import LifelongEditEnv


def bench(model: str, dataset: str, editor: str, steps: int, seed: int) -> dict:
    env = LifelongEditEnv(model=model, dataset=dataset, known_only=False, num_edits=steps + 2, editor=editor)
    n = env.num_candidates
    mask, coef = np.ones(n, bool), np.zeros(n)
    action = {"mask": np.ones(n, np.int8), "coef": np.zeros(n, np.float32)}
    scales = env.update_scales(mask, coef)
    env.reset(seed=seed)
    env.step(action)  # warm-up
    fb, upd, step = [], [], []
    for _ in range(steps):
        req = env.stream[env._t]
        batch = env.encoder.encode([(req.prompt, req.target_new)], device=env.device)
        start = time.perf_counter()
        cap = capture(env.model, env.candidates, batch)
        fb.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            updates = [
                env._rule.update(j, cap.keys[j], cap.grads[j], c.weight())
                for j, c in enumerate(env.candidates)
            ]
            weights = [c.param.detach().clone() for c in env.candidates]
            for j, u in enumerate(updates):
                u.apply_(env.candidates[j], float(scales[j]))
                env._rule.restrain(j)
            upd.append(time.perf_counter() - start)
            for c, w in zip(env.candidates, weights, strict=True):  # undo: the env step below edits
                c.param.copy_(w)
        start = time.perf_counter()
        env.step(action)
        step.append(time.perf_counter() - start)
    fb_s, upd_s, step_s = (float(np.median(x)) for x in (fb, upd, step))
    return {"editor": editor, "fwd_bwd_s": fb_s, "update_s": upd_s, "step_s": step_s, "candidates": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="facts")
    parser.add_argument("--editors", nargs="+", default=["gradient", "ridge", "memit", "memit+alphaedit"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"model={args.model} dataset={args.dataset} steps={args.steps} torch threads={torch.get_num_threads()}"
    )
    print(f"{'editor':<36} {'fwd+bwd s':>9} {'update s':>9} {'edit/fb':>8} {'step s':>8} {'step/fb':>8}")
    for editor in args.editors:
        r = bench(args.model, args.dataset, editor, args.steps, args.seed)
        edit = r["fwd_bwd_s"] + r["update_s"]
        print(
            f"{editor:<36} {r['fwd_bwd_s']:>9.4f} {r['update_s']:>9.4f} {edit / r['fwd_bwd_s']:>8.2f} "
            f"{r['step_s']:>8.4f} {r['step_s'] / r['fwd_bwd_s']:>8.2f}"
        )


if __name__ == "__main__":
    main()
