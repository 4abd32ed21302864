"""The ``edit-gym`` command: ``envs`` lists the ids, ``demo`` runs the README's main job.

edit-gym envs
edit-gym demo [--env LifelongEdit-v0] [--agent all|fixed|random|topk-grad] [--edits 20] [--seed 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

AGENT_CHOICES = ("all", "fixed", "random", "topk-grad")


def _cmd_envs(_args: argparse.Namespace) -> int:
    from edit_gym.registration import env_ids

    print(f"{'id':<36} {'model':<14} {'dataset':<8} {'action_type':<14} num_edits")
    for env_id, kw in env_ids().items():
        print(f"{env_id:<36} {kw['model']:<14} {kw['dataset']:<8} {kw['action_type']:<14} {kw['num_edits']}")
    return 0


def format_table(rows: dict[str, dict[str, float]], metrics: tuple[str, ...]) -> str:
    """A plain-text table: one row per entry of ``rows``, one column per metric (in %)."""
    head = f"{'':<10}" + "".join(f"{m:>16}" for m in metrics)
    lines = [head, "-" * len(head)]
    for name, values in rows.items():
        lines.append(f"{name:<10}" + "".join(f"{100 * values.get(m, float('nan')):>15.1f}%" for m in metrics))
    return "\n".join(lines)


def _cmd_demo(args: argparse.Namespace) -> int:
    import gymnasium as gym
    from tqdm.auto import tqdm

    import edit_gym  # noqa: F401  registers the ids
    from agents import BASELINES

    print(f"loading {args.env} (first run converts/trains and caches the model)...", file=sys.stderr)
    env = gym.make(args.env, num_edits=args.edits)
    inner = env.unwrapped
    agent = BASELINES[args.agent](env)
    obs, _ = env.reset(seed=args.seed)
    before = inner.evaluate("stream")
    start = time.perf_counter()
    rewards, terminated, info = [], False, {}
    with tqdm(total=inner.num_steps, desc=f"editing ({args.agent})", unit="step") as bar:
        while not terminated:
            action, _ = agent.predict(obs, deterministic=True)
            obs, reward, terminated, _, info = env.step(action)
            rewards.append(reward)
            bar.update(1)
            bar.set_postfix(loss=f"{info['edit_loss_after']:.2f}", eff=f"{info['efficacy']:.2f}")
    seconds = (time.perf_counter() - start) / args.edits
    after = {k.removeprefix("final_"): v for k, v in info.items() if k.startswith("final_")}
    metrics = ("efficacy", "generalization", "specificity")
    print()
    print(
        f"{args.env}: {args.edits} sequential edits, agent={args.agent}, editor={inner.cfg.editor}, seed={args.seed}"
    )
    print(
        "teacher-forced token top-1; specificity = agreement with the pre-edit model; 'after' = final timing"
    )
    print(format_table({"before": before, "after": after}, metrics))
    print(
        f"mean reward {sum(rewards) / len(rewards):+.3f}; {seconds:.3f} s per edit; success={info.get('is_success')}"
    )
    if args.json:
        result = {
            "env": args.env,
            "agent": args.agent,
            "config": inner.spec.kwargs if inner.spec else {},
            "seed": args.seed,
            "protocol": {"metrics": "teacher-forced token top-1", "timing": "final"},
            "before": before,
            "after": after,
            "seconds_per_edit": seconds,
            "mean_reward": sum(rewards) / len(rewards),
        }
        from pathlib import Path

        from edit_gym.cache import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    env.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edit-gym", description="Lifelong model editing as RL environments."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    envs = sub.add_parser("envs", help="list the registered environment ids")
    envs.set_defaults(func=_cmd_envs)
    demo = sub.add_parser(
        "demo", help="run a baseline policy on an edit stream and print before/after scores"
    )
    demo.add_argument("--env", default="LifelongEdit-v0", help="environment id (default: %(default)s)")
    demo.add_argument(
        "--agent", default="fixed", choices=AGENT_CHOICES, help="baseline policy (default: %(default)s)"
    )
    demo.add_argument("--edits", type=int, default=20, help="sequential edits (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="stream seed (default: %(default)s)")
    demo.add_argument("--json", help="also write the results to this JSON file")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "edits", 1) < 1:
        parser.error("--edits must be a positive integer")
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        print(f"edit-gym: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
