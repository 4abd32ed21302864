"""An edit's latency per editor, as a ratio to one forward+backward pass of the model, in one run.

An edit is one forward+backward over the edit prompt (keys and value-gradients) followed by the
rule's update of every candidate and its application. For each editor this script times, on the
same requests and weights: the forward+backward alone, the update alone (rule + apply, every
candidate), and the whole ``env.step`` (which adds the post-edit scores), and prints medians and
the ratios ``edit / fwd+bwd`` and ``step / fwd+bwd`` (``edit_gym.bench.edit_latency``).

``--optimized-iterations N`` (default 25; 0 skips it) adds the optimization-based reference the
RLEdit paper compares against: FT-L style, N Adam steps on every candidate per edit
(``edit_gym.bench.optimized_edit_latency``), on the same stream, with its answer loss before and
after the optimization.

    python benchmarks/edit_latency.py --model smollm2-135m --editors ridge memit rledit:runs/rledit-smollm2-s0
    python benchmarks/edit_latency.py --model tiny --editors ridge --optimized-iterations 5 --steps 3
"""

from __future__ import annotations

import argparse

import torch

from edit_gym.bench import edit_latency, optimized_edit_latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="facts")
    parser.add_argument("--editors", nargs="+", default=["gradient", "ridge", "memit", "memit+alphaedit"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--optimized-iterations",
        type=int,
        default=25,
        help="Adam steps of the FT-L reference per edit (0: skip it)",
    )
    parser.add_argument("--optimized-lr", type=float, default=5e-4)
    args = parser.parse_args()
    if args.steps < 1 or args.optimized_iterations < 0:
        parser.error(
            f"need --steps >= 1 and --optimized-iterations >= 0, got {args.steps}, {args.optimized_iterations}"
        )
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
    if args.optimized_iterations:
        r = optimized_edit_latency(
            args.model, args.dataset, args.optimized_iterations, args.optimized_lr, args.steps, args.seed
        )
        print(
            f"{r['editor']:<36} {r['fwd_bwd_s']:>9.4f} {r['update_s']:>9.4f} {r['edit_over_fwd_bwd']:>8.2f} "
            f"{'-':>8} {'-':>8}   answer loss {r['loss_before']:.2f} -> {r['loss_after']:.2f}"
        )


if __name__ == "__main__":
    main()
