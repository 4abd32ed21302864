"""Does a rule's cost grow with the number of edits already made? Seconds per step at edit ~10 vs ~N.

For each editor, two envs on the same seeded stream of N + window edits (every candidate selected,
coefficient 0): one is first advanced, untimed, to edit N; then the two take turns, one step each:
the early env over edits 5 .. 5 + window, the late one over edits N .. N + window. Interleaving
puts both under the same machine load, so the ratio of their median step times measures the
rule, not whatever else the machine was doing. Rules that keep no history should stay near 1.0;
AlphaEdit keeps the edited keys and may grow (``edit_gym.bench.cost_growth``).

    python benchmarks/edit_cost.py --model tiny --edits 1000 \
        --dataset ../shared/data/counterfact/knowedit_counterfact_train.json
"""

from __future__ import annotations

import argparse

from edit_gym.bench import cost_growth

EDITORS = [
    "gradient",
    "ridge",
    "covariance",
    "ridge+nullspace",
    "covariance+nullspace",
    "ridge+topk",
    "ridge+spectral",
]


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
    for editor in args.editors:
        r = cost_growth(args.model, args.dataset, editor, args.edits, args.window, args.seed)
        print(
            f"{editor:<18} {r['early_s']:>11.4f} {r['late_s']:>12.4f} {r['ratio']:>6.2f} {r['faults']:>7}",
            flush=True,
        )


if __name__ == "__main__":
    main()
