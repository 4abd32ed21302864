"""An edit's latency per editor, as a ratio to one forward+backward pass of the model, in one run.

An edit is one forward+backward over the edit prompt (keys and value-gradients) followed by the
rule's update of every candidate and its application. For each editor this script times, on the
same requests and weights: the forward+backward alone, the update alone (rule + apply, every
candidate), and the whole ``env.step`` (which adds the post-edit scores), and prints medians and
the ratios ``edit / fwd+bwd`` and ``step / fwd+bwd`` (``edit_gym.bench.edit_latency``).

    python benchmarks/edit_latency.py --model smollm2-135m --editors ridge memit rledit:runs/rledit-smollm2-s0
"""

from __future__ import annotations

import argparse

import torch

from edit_gym.bench import edit_latency


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
        r = edit_latency(args.model, args.dataset, editor, args.steps, args.seed)
        print(
            f"{editor:<36} {r['fwd_bwd_s']:>9.4f} {r['update_s']:>9.4f} {r['edit_over_fwd_bwd']:>8.2f} "
            f"{r['step_s']:>8.4f} {r['step_over_fwd_bwd']:>8.2f}"
        )


if __name__ == "__main__":
    main()
