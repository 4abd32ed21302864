"""A small sweep of RLEdit training settings: train each, evaluate on held-out requests, next to ridge.

Each setting trains a fresh hypernet on ``--train`` data and evaluates it on a seeded stream of
``--edits`` requests from ``--test`` (final timing), beside the untrained rule it starts from
(``ridge``, which an untrained net equals). Prints one row per setting and writes JSON.

    python benchmarks/rledit_sweep.py --env LifelongEdit-Tiny-v0 --train facts-train --test facts-test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym

import edit_gym  # noqa: F401  registers the ids
from agents import AllCandidatesAgent
from agents.rledit import RLEditAgent, RLEditConfig
from edit_gym.cache import atomic_write_text
from edit_gym.runner import run_episode

# (name, edits per training sequence, config overrides)
SETTINGS = [
    ("T10 c_loc0.6", 10, {}),
    ("T10 c_loc0.6 discount0", 10, {"discount": 0.0}),
    ("T10 c_loc2", 10, {"c_loc": 2.0}),
    ("T25 c_loc0.6", 25, {}),
    ("T25 c_loc2", 25, {"c_loc": 2.0}),
]


def evaluate(
    env_id: str, test: str, edits: int, editor: str, seed: int, agent_cls=AllCandidatesAgent
) -> dict:
    env = gym.make(env_id, dataset=test, num_edits=edits, editor=editor, final_eval=False)
    result = run_episode(env, agent_cls(env), seed)
    env.close()
    return {k: result["final"][k] for k in ("efficacy", "generalization", "specificity", "retention_first_n")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="LifelongEdit-Tiny-v0")
    parser.add_argument("--train", default="facts-train")
    parser.add_argument("--test", default="facts-test")
    parser.add_argument("--sequences", type=int, default=30)
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="run only these setting names")
    parser.add_argument("--out", default="runs/rledit-sweep")
    args = parser.parse_args()
    out = Path(args.out)
    rows = [
        {"setting": "ridge (untrained net)", **evaluate(args.env, args.test, args.edits, "ridge", args.seed)}
    ]
    print(f"{args.env}: train {args.train}, test {args.test}, {args.edits} edits, seed {args.seed}")
    header = f"{'setting':<26} {'eff':>6} {'gen':>6} {'spec':>6} {'ret@10':>7} {'train s':>8}"
    print(header)

    def show(row: dict) -> None:
        print(
            f"{row['setting']:<26} {100 * row['efficacy']:>6.1f} {100 * row['generalization']:>6.1f} "
            f"{100 * row['specificity']:>6.1f} {100 * row['retention_first_n']:>7.1f} {row.get('train_s', 0):>8.0f}",
            flush=True,
        )

    show(rows[0])
    for name, length, overrides in SETTINGS:
        if args.only and name not in args.only:
            continue
        env = gym.make(args.env, dataset=args.train, num_edits=length, final_eval=False)
        agent = RLEditAgent(env, RLEditConfig(learning_rate=args.lr, seed=args.seed, **overrides))
        start = time.perf_counter()
        agent.learn(args.sequences, progress_bar=False)
        train_s = time.perf_counter() - start
        path = agent.save(out / name.replace(" ", "_"))
        env.close()
        row = {"setting": name, **evaluate(args.env, args.test, args.edits, f"rledit:{path}", args.seed)}
        row.update(train_s=train_s, sequences=args.sequences, edits_per_sequence=length, overrides=overrides)
        rows.append(row)
        show(row)
        atomic_write_text(out / "sweep.json", json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
