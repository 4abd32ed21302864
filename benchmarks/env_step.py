"""Env step cost against the model passes a step needs, measured in one run.

A step needs one forward+backward over the edit prompt (keys, value-gradients, statistics) and one
forward over the edit prompt and its neighbourhood (post-edit scores). This script times
``env.step`` and, on the same requests and weights, those two passes alone, and prints the ratio
(the env's overhead) and the peak resident memory of a fresh process per id
(``edit_gym.bench.step_overhead``; ``edit-gym bench`` prints the same and writes JSON).

    python benchmarks/env_step.py                       # both ids, 10 timed steps each
    python benchmarks/env_step.py --ids LifelongEdit-Tiny-v0 --steps 20
"""

from __future__ import annotations

import argparse
import multiprocessing

import torch

from edit_gym.bench import step_overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", nargs="+", default=["LifelongEdit-Tiny-v0", "LifelongEdit-v0"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"{'id':<24} {'L':>3} {'step s':>8} {'passes s':>9} {'ratio':>6} {'peak RSS MiB':>13}")
    ctx = multiprocessing.get_context("spawn")  # one fresh process per id: its own peak memory
    for env_id in args.ids:
        with ctx.Pool(1) as pool:
            row = pool.apply(step_overhead, (env_id, args.steps, args.seed))
        print(
            f"{row['id']:<24} {row['candidates']:>3} {row['step_s']:>8.4f} {row['passes_s']:>9.4f}"
            f" {row['overhead_ratio']:>6.2f} {row['peak_rss_mib']:>13.0f}"
        )


if __name__ == "__main__":
    main()
