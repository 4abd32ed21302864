"""Does a rule's cost grow with the number of edits already made? Seconds per step at edit ~10 vs ~N.

For each editor, two envs on the same seeded stream of N + window edits (every candidate selected,
coefficient 0): one is first advanced, untimed, to edit N; then the two take turns, one step each:
the early env over edits 5 .. 5 + window, the late one over edits N .. N + window. Interleaving
puts both under the same machine load, so the ratio of their median step times measures the
rule, not whatever else the machine was doing. Rules that keep no history should stay near 1.0;
AlphaEdit keeps the edited keys and may grow.

    python benchmarks/edit_cost.py --model tiny --edits 1000 \
        --dataset ../shared/data/counterfact/knowedit_counterfact_train.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edit_gym.env import LifelongEditEnv

EDITORS = ["gradient", "ridge", "memit", "ridge+alphaedit", "memit+alphaedit", "ridge+rect", "ridge+prune"]


def _timed_step(env: LifelongEditEnv, action: dict) -> tuple[float, bool]:
    start = time.perf_counter()
    _, _, _, _, info = env.step(action)
    return time.perf_counter() - start, bool(info["fault"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dataset", default="facts")
    parser.add_argument("--edits", type=int, default=500, help="N: where the late window starts")
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--editors", nargs="+", default=EDITORS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"model={args.model} dataset={args.dataset} edits={args.edits} window={args.window} seed={args.seed}"
    )
    print(f"{'editor':<18} {'s/step @10':>11} {f's/step @{args.edits}':>12} {'ratio':>6} {'faults':>7}")
    total = args.edits + args.window
    for editor in args.editors:
        envs = [
            LifelongEditEnv(
                model=args.model,
                dataset=args.dataset,
                known_only=False,
                num_edits=total,
                editor=editor,
                final_eval=False,
            )
            for _ in range(2)
        ]
        early, late = envs
        n = early.num_candidates
        action = {"mask": np.ones(n, np.int8), "coef": np.zeros(n, np.float32)}
        faults = 0
        for env in envs:
            env.reset(seed=args.seed)
        for _ in range(args.edits):  # untimed: bring the late env to edit N
            faults += _timed_step(late, action)[1]
        for _ in range(5):
            faults += _timed_step(early, action)[1]
        early_times, late_times = [], []
        for _ in range(args.window):
            t, f = _timed_step(early, action)
            early_times.append(t)
            t2, f2 = _timed_step(late, action)
            late_times.append(t2)
            faults += f + f2
        e, l_ = float(np.median(early_times)), float(np.median(late_times))
        print(f"{editor:<18} {e:>11.4f} {l_:>12.4f} {l_ / e:>6.2f} {faults:>7}", flush=True)


if __name__ == "__main__":
    main()
