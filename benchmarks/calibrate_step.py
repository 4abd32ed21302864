"""Choose a backbone's default ridge step size: sweep it with every candidate edited at coef 0.

For each step size, runs one seeded episode of N sequential edits and prints immediate efficacy,
mean KL on neighbourhood prompts, and the final efficacy / generalization / specificity. The default
in ``edit_gym.backbones.BUILTIN_BACKBONES`` is the smallest step whose immediate efficacy reaches
0.5: the action's coefficient then spans gentle (x0.1) to overshooting (x10) edits around it.

    python benchmarks/calibrate_step.py --model tiny --edits 20
    python benchmarks/calibrate_step.py --model smollm2-135m --edits 20 --steps 0.01 0.03 0.1 0.3 1
"""

from __future__ import annotations

import argparse

import numpy as np

from edit_gym.env import LifelongEditEnv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0, 3.0])
    args = parser.parse_args()
    env = LifelongEditEnv(model=args.model, num_edits=args.edits)
    n = env.num_candidates
    action = {"mask": np.ones(n, dtype=np.int8), "coef": np.zeros(n, dtype=np.float32)}
    print(f"model={args.model} edits={args.edits} seed={args.seed} candidates={n}")
    print(f"{'step':>7} {'imm_eff':>8} {'mean_kl':>8} {'final_eff':>9} {'final_gen':>9} {'final_spe':>9}")
    chosen = None
    for step in sorted(args.steps):
        env.step_size = step
        env.reset(seed=args.seed)
        eff, kl = [], []
        terminated = False
        while not terminated:
            _, _, terminated, _, info = env.step(action)
            eff.append(info["efficacy"])
            kl.append(info["kl"])
        f_eff, f_gen, f_spe = (
            info.get(f"final_{k}", float("nan")) for k in ("efficacy", "generalization", "specificity")
        )
        print(
            f"{step:>7.3g} {np.mean(eff):>8.3f} {np.mean(kl):>8.3f} {f_eff:>9.3f} {f_gen:>9.3f} {f_spe:>9.3f}"
        )
        if chosen is None and np.mean(eff) >= 0.5:
            chosen = step
    print(f"chosen default step_size (smallest with immediate efficacy >= 0.5): {chosen}")


if __name__ == "__main__":
    main()
