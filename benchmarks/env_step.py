"""Env step cost against the model passes a step needs, measured in one run.

A step needs one forward+backward over the edit prompt (keys, value-gradients, statistics) and one
forward over the edit prompt and its neighbourhood (post-edit scores). This script times
``env.step`` and, on the same requests and weights, those two passes alone, and prints the ratio
(the env's overhead) and the peak resident memory of a fresh process per id.

    python benchmarks/env_step.py                       # both ids, 10 timed steps each
    python benchmarks/env_step.py --ids LifelongEdit-Tiny-v0 --steps 20
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import numpy as np
import torch

from edit_gym.editing.capture import capture
from edit_gym.editing.scores import answer_logprobs
from edit_gym.env import LifelongEditEnv
from edit_gym.registration import env_ids


def _model_passes(env: LifelongEditEnv, step: int) -> float:
    """Seconds for the two model passes of one step, on the current weights."""
    reqs = [env.requests[i] for i in env._batch_requests(step)]
    enc, device = env._state.encoder, env._state.backbone.device
    edit = enc.encode([(r.prompt, r.target_new) for r in reqs], device=device)
    probes = [(r.prompt, r.target_new) for r in reqs] + [
        (p.prompt, p.answer) for r in reqs for p in r.neighbourhood
    ]
    post = enc.encode(probes, device=device)
    start = time.perf_counter()
    capture(env.model, env.candidates, edit)
    answer_logprobs(env.model, post)
    return time.perf_counter() - start


def bench(env_id: str, steps: int, seed: int) -> dict:
    kwargs = dict(env_ids()[env_id])
    kwargs.update(num_edits=steps + 1, final_eval=False)
    env = LifelongEditEnv(**kwargs)
    n = env.num_candidates
    action = {"mask": np.ones(n, dtype=np.int8), "coef": np.zeros(n, dtype=np.float32)}
    env.reset(seed=seed)
    env.step(action)  # warm-up
    step_times, pass_times = [], []
    for _ in range(steps):
        pass_times.append(_model_passes(env, env._t))
        start = time.perf_counter()
        env.step(action)
        step_times.append(time.perf_counter() - start)
    step_s, pass_s = float(np.median(step_times)), float(np.median(pass_times))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "id": env_id,
        "step_s": step_s,
        "passes_s": pass_s,
        "ratio": step_s / pass_s,
        "candidates": n,
        "peak_mib": peak,
    }


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
            row = pool.apply(bench, (env_id, args.steps, args.seed))
        print(
            f"{row['id']:<24} {row['candidates']:>3} {row['step_s']:>8.4f} {row['passes_s']:>9.4f}"
            f" {row['ratio']:>6.2f} {row['peak_mib']:>13.0f}"
        )


if __name__ == "__main__":
    main()
