"""Does a rule's cost grow with the number of edits already made? Seconds per step at edit ~10 vs ~N.

For each editor, one seeded episode of N sequential edits (every candidate selected, coefficient
0); prints the median step time over steps 5-55 and over the last 50 steps (wide windows: prompt
lengths vary along the stream), and their ratio. Rules
that keep no history should stay near 1.0; AlphaEdit keeps the edited keys and may grow.

    python benchmarks/edit_cost.py --model tiny --edits 1000 \
        --dataset ../shared/data/counterfact/knowedit_counterfact_train.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edit_gym.env import LifelongEditEnv

EDITORS = ["gradient", "ridge", "memit", "ridge+alphaedit", "memit+alphaedit", "ridge+rect", "ridge+prune"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dataset", default="facts")
    parser.add_argument("--edits", type=int, default=500)
    parser.add_argument("--editors", nargs="+", default=EDITORS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"model={args.model} dataset={args.dataset} edits={args.edits} seed={args.seed}")
    print(f"{'editor':<18} {'s/step @10':>11} {'s/step @end':>12} {'ratio':>6} {'faults':>7}")
    for editor in args.editors:
        env = LifelongEditEnv(
            model=args.model,
            dataset=args.dataset,
            known_only=False,
            num_edits=args.edits,
            editor=editor,
            final_eval=False,
        )
        n = env.num_candidates
        action = {"mask": np.ones(n, np.int8), "coef": np.zeros(n, np.float32)}
        env.reset(seed=args.seed)
        times, faults = [], 0
        for _ in range(args.edits):
            start = time.perf_counter()
            _, _, terminated, _, info = env.step(action)
            times.append(time.perf_counter() - start)
            if info["fault"]:
                faults += 1
                break
        early, late = float(np.median(times[5:55])), float(np.median(times[-50:]))
        print(
            f"{editor:<18} {early:>11.4f} {late:>12.4f} {late / early:>6.2f} {faults:>7} ({len(times)} steps)"
        )


if __name__ == "__main__":
    main()
