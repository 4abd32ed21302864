"""HiEdit learning curve: the selector's held-out return over training, next to random-K and all.

Trains the HiEdit selector on the training split, on the env's ``reward="advantage"``
(r(mask) - r(all candidates) - w_sparse * touched / L), with any of the four trainers: the custom
PPO (``--trainer ppo``) or SB3's PPO (``--trainer sb3``) on a free mask (any number of candidates),
sb3-contrib's MaskablePPO under a layer budget (``--trainer maskable --budget K``: at most K
candidates per edit), or the paper's straight-through top-K scores (``--trainer straight-through
--budget K``: exactly K; it learns from the post-edit loss, not the reward, so its curve shows what
that objective does to the reward). Every ``--eval-every`` env steps
it plays the *held-out* streams (test split, fixed seeds) with the deterministic selector, a
random-K selector, a fixed block of K candidates (K = the budget, or as many candidates per edit as
the learned selector touched), over a named method (``--low-level memit`` / ``alphaedit``) the
method's own band (its paper's recipe, the ``band`` agent), and all candidates (advantage 0 under
``--reference all``, so its return is the sparsity cost alone). Writes a JSON, a Markdown table and
a PNG plot (mean and 95% t-interval over the held-out seeds; with the candidate sets the learned
selector chose on the held-out streams), and the same curves to TensorBoard
(``eval/return_<selector>``). ``--combine`` makes one curve of several training seeds' runs.

    python benchmarks/hiedit_learning_curve.py --env LifelongEdit-Tiny-v0 --low-level ridge \
        --timesteps 2048 --eval-every 256 --out results/hiedit/hiedit_learning_curve
    python benchmarks/hiedit_learning_curve.py --trainer maskable --budget 2 --out results/hiedit/hiedit_learning_curve_k2
    # over MEMIT, against its band, 3 training seeds, then one curve of the three
    for s in 0 1 2; do python benchmarks/hiedit_learning_curve.py --low-level memit --reference band \
        --target-block band --trainer maskable --budget 2 --seed $s --out results/hiedit/curve_memit_seed$s; done
    python benchmarks/hiedit_learning_curve.py --combine results/hiedit/curve_memit_seed{0,1,2}.json \
        --out results/hiedit/curve_memit
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import edit_gym  # noqa: F401  registers the ids
from agents import AllCandidatesAgent, BandAgent, FixedBlockAgent, RandomKAgent
from agents.hiedit import TRAINERS, HiEditAgent, make_training_env
from edit_gym.cache import atomic_write_bytes, atomic_write_text
from edit_gym.config import METHOD_OPTION_DEFAULTS, METHOD_OPTIONS
from edit_gym.stats import interval

SELECTORS = ("learned", "random_k", "fixed_k", "band", "all")
BASELINES = SELECTORS[1:]  # selectors that do not learn: the same episodes whatever the training seed
SCORES = ("efficacy", "specificity")  # immediate, per edit: what the held-out edits did, beside the return
BUDGETED = ("maskable", "straight-through")  # trainers that take --budget
LABELS = {"learned": "learned", "random_k": "random-K", "fixed_k": "fixed-K", "band": "band", "all": "all"}
# what a combined curve (--combine) requires its runs to share
SHARED_ARGS = (
    "env",
    "low_level",
    "train_data",
    "test_data",
    "edits",
    "timesteps",
    "eval_every",
    "eval_seeds",
    "trainer",
    "budget",
    "learning_rate",
    "w_sparse",
    "reference",
    "target_block",
)


def play(env, agent, seed: int, masks: set | None = None) -> tuple[float, float, float, float]:
    """One held-out episode with ``agent.predict``: (return, mean fraction of candidates touched,
    mean immediate efficacy, mean immediate specificity of its edits); adds each step's set of
    edited candidates to ``masks`` if given."""
    obs, _ = env.reset(seed=seed)
    total, touched, efficacy, specificity, done = 0.0, [], [], [], False
    while not done:
        obs, reward, terminated, truncated, info = env.step(agent.predict(obs, deterministic=True)[0])
        total += float(reward)
        touched.append(info["layers_touched"] / env.unwrapped.num_candidates)
        efficacy.append(float(info["efficacy"]))
        specificity.append(float(info["specificity"]))
        if masks is not None:
            masks.add(tuple(info["edited_candidates"]))
        done = terminated or truncated
    return total, float(np.mean(touched)), float(np.mean(efficacy)), float(np.mean(specificity))


def evaluate(
    env, selector, seeds: list[int], budget: int | None = None, baselines: dict | None = None
) -> dict:
    """Held-out returns of the learned selector (anything with ``predict``), random-K, fixed-K, the
    named method's own band (when the env's editor is one and its band fits the budget) and all
    candidates; K = ``budget``, else as many candidates per edit as the learned one touched.

    The baselines do not learn, so their seeded episodes are played once per K: ``baselines`` is a
    dict kept between calls (on SmolLM2 this saves most of an evaluation's time)."""
    chosen: set[tuple[int, ...]] = set()
    learned = [play(env, selector, s, chosen) for s in seeds]
    n = env.unwrapped.num_candidates
    k = budget or max(1, round(float(np.mean([run[1] for run in learned])) * n))
    baselines = {} if baselines is None else baselines
    writable = np.flatnonzero(env.unwrapped.writable())  # target_block="band": at or below its top
    start = None if len(writable) == n else max(0, int(writable[-1]) - k + 1)  # a block ending there
    if k not in baselines:
        baselines[k] = (
            [play(env, RandomKAgent(env, k=k, seed=s), s) for s in seeds],
            [play(env, FixedBlockAgent(env, start=start, size=k), s) for s in seeds],
            [play(env, AllCandidatesAgent(env), s) for s in seeds] if budget is None or budget >= n else [],
        )
    if "band" not in baselines:  # does not depend on K
        method = getattr(env.unwrapped, "method", None)
        fits = method is not None and len(method.band()) <= (budget or n)
        baselines["band"] = [play(env, BandAgent(env), s) for s in seeds] if fits else []
    randoms, fixed, alls = baselines[k]
    point = {
        "k": k,
        "learned_masks": sorted(chosen, key=lambda m: (len(m), m))[:20],
        "distinct_masks": len(chosen),
    }
    for name, runs in zip(SELECTORS, (learned, randoms, fixed, baselines["band"], alls), strict=True):
        means = np.mean([run[1:] for run in runs], axis=0).tolist() if runs else [0.0] * 3  # 0: not run
        point[name] = {
            "returns": [run[0] for run in runs],
            **dict(zip(("touched", *SCORES), means, strict=True)),
        }
    return point


def plot(data: dict, path: Path) -> None:
    """Held-out return vs training steps, one line per selector, shaded 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["step"] for p in data["points"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    budget = data["args"].get("budget")
    k = f"K={budget}" if budget else "K matched"
    labels = {
        "learned": f"HiEdit selector ({data['args'].get('trainer', 'ppo')})",
        "random_k": f"random-K ({k})",
        "fixed_k": f"fixed block ({k})",
        "band": f"{data['args']['low_level']}'s band",
        "all": "all candidates",
    }
    for name in SELECTORS:
        if not data["points"][0].get(name, {}).get("returns"):
            continue  # not measured in this run (older JSON, or all candidates exceed the budget)
        stats = [interval(p[name]["returns"]) for p in data["points"]]
        mean = np.array([m for m, _ in stats])
        half = np.array([h for _, h in stats])
        ax.plot(steps, mean, marker="o", label=labels[name])
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
    ax.set_xlabel("training env steps")
    ax.set_ylabel("held-out episode return (advantage reward)")
    args = data["args"]
    seeds = data.get("training_seeds")
    over = f"{len(seeds)} training seeds (learned), " if seeds else ""
    ax.set_title(
        f"{args['env']}: {args['edits']} edits on {Path(args['test_data']).stem}\n"
        f"{over}{len(args['eval_seeds'])} held-out seeds\n"
        f"w_sparse {args.get('w_sparse', 0.1)}, reference {args.get('reference', 'all')}, "
        f"target block {args.get('target_block', 'selection')}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_markdown(data: dict, path: Path) -> None:
    args = data["args"]
    lines = [
        "# HiEdit learning curve",
        "",
        "Generated by `benchmarks/hiedit_learning_curve.py`; do not edit by hand. Plot: "
        f"`{Path(path).with_suffix('.png').name}`.",
        "",
        f"- command: `{data['command']}`",
        f"- machine: {data['machine']}",
        f"- env {args['env']}, low level `{args['low_level']}`, trained on `{args['train_data']}` "
        f"({args['edits']}-edit episodes), held-out `{args['test_data']}` streams with seeds "
        f"{args['eval_seeds']}; return = sum of the advantage reward (w_sparse "
        f"{args.get('w_sparse', 0.1)}, reference `{args.get('reference', 'all')}`, target block "
        f"`{args.get('target_block', 'selection')}`) over the episode; "
        + (
            f"learned: mean ± 95% t-interval over {len(data['training_seeds'])} training seeds "
            f"{data['training_seeds']} (each the mean of its held-out streams), the baselines (which do "
            "not learn) over the held-out seeds; "
            if data.get("training_seeds")
            else "mean ± 95% t-interval over the held-out seeds; "
        )
        + (
            f"selector trained with `{args.get('trainer', 'ppo')}` under a budget of K = {args['budget']} "
            "candidates per edit; random-K and fixed-K (a contiguous block) use the same K."
            if args.get("budget")
            else f"selector trained with `{args.get('trainer', 'ppo')}`, no budget; random-K and fixed-K "
            "touch as many candidates as the learned selector."
        ),
        f"- training: {data['seconds']:.0f} s.",
        "",
    ]
    shown = [name for name in SELECTORS if data["points"][0].get(name, {}).get("returns")]
    lines += [
        "| env steps | "
        + " | ".join(LABELS[name] for name in shown)
        + " | K | learned touched | learned masks |",
        "|---|" + "---|" * len(shown) + "---|---|---|",
    ]
    for p in data["points"]:
        cells = [f"{m:.3f} ± {h:.3f}" for m, h in (interval(p[name]["returns"]) for name in shown)]
        masks = p.get("distinct_masks")
        if masks is None:
            chosen = "-"  # not recorded by older runs
        elif masks <= 2:
            chosen = " and ".join("{" + ",".join(map(str, m)) + "}" for m in p["learned_masks"])
        else:
            chosen = f"{masks} distinct"
        lines.append(
            f"| {p['step']} | "
            + " | ".join(cells)
            + f" | {p['k']} | {100 * p['learned']['touched']:.0f}% | {chosen} |"
        )
    last = data["points"][-1]
    if all(score in last[name] for name in shown for score in SCORES):
        lines += [
            "",
            f"What the held-out edits did at the last evaluation (step {last['step']}; means over the "
            "held-out episodes"
            + (", and over the training seeds for the learned selector" if data.get("training_seeds") else "")
            + "; immediate scores, each edit right after its write):",
            "",
            "| selector | touched | immediate efficacy | immediate specificity |",
            "|---|---|---|---|",
        ]
        for name in shown:
            row = last[name]
            lines.append(
                f"| {LABELS[name]} | {100 * row['touched']:.0f}% | {100 * row['efficacy']:.1f} | "
                f"{100 * row['specificity']:.1f} |"
            )
    atomic_write_text(path, "\n".join(lines) + "\n")


def combine(paths: list[Path]) -> dict:
    """One curve from runs that differ only in their training seed (``--seed``): at each step, the
    learned selector's value per run is the mean of its held-out returns (the interval is then over
    training seeds); the baselines do not learn, so their held-out episodes must be the same in
    every run, and they keep their held-out returns."""
    if len(paths) < 2:
        raise SystemExit("--combine takes two or more learning-curve JSON files")
    runs = []
    for path in paths:
        try:
            runs.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{path}: not a readable learning-curve JSON ({exc})") from exc
    first = runs[0]
    for path, run in zip(paths[1:], runs[1:], strict=True):
        differ = [key for key in SHARED_ARGS if run["args"].get(key) != first["args"].get(key)]
        if differ:
            raise SystemExit(f"{path}: not the same setting as {paths[0]} ({', '.join(differ)} differ)")
        if [p["step"] for p in run["points"]] != [p["step"] for p in first["points"]]:
            raise SystemExit(f"{path}: evaluated at other steps than {paths[0]}")
    seeds = [run["args"]["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--combine: training seeds repeat ({seeds})")
    points = []
    for at, base in enumerate(first["points"]):
        per_run = [run["points"][at] for run in runs]
        masks = sorted({tuple(m) for p in per_run for m in p["learned_masks"]}, key=lambda m: (len(m), m))
        point = {
            "step": base["step"],
            "k": base["k"],
            "learned_masks": masks[:20],
            "distinct_masks": len(masks),
            "learned": {
                "returns": [float(np.mean(p["learned"]["returns"])) for p in per_run],
                **{
                    key: float(np.mean([p["learned"][key] for p in per_run]))
                    for key in ("touched", *SCORES)
                    if all(key in p["learned"] for p in per_run)  # older runs lack the scores
                },
            },
        }
        for name in BASELINES:
            if name not in base:
                continue
            if any(p.get(name) != base[name] for p in per_run):
                raise SystemExit(
                    f"the {name} baseline's held-out returns differ between the runs at step {base['step']}"
                )
            point[name] = base[name]
        points.append(point)
    return {
        "args": {**first["args"], "seed": seeds},
        "training_seeds": seeds,
        "combined_from": [str(path) for path in paths],
        "command": "python benchmarks/hiedit_learning_curve.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": first["machine"],
        "seconds": float(sum(run["seconds"] for run in runs)),
        "points": points,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="LifelongEdit-Tiny-v0")
    parser.add_argument("--low-level", default="ridge", help="rule or RLEdit checkpoint folder")
    parser.add_argument("--train-data", default="facts-train")
    parser.add_argument("--test-data", default="facts-test")
    parser.add_argument("--edits", type=int, default=20, help="edits per episode (train and held-out)")
    parser.add_argument("--timesteps", type=int, default=2048)
    parser.add_argument("--eval-every", type=int, default=256)
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[100, 101, 102])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trainer", choices=TRAINERS, default="ppo", help="selector trainer")
    parser.add_argument(
        "--budget",
        type=int,
        help="maskable: at most K candidates per edit; straight-through: exactly K (default: half)",
    )
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="ppo trainer's learning rate")
    parser.add_argument("--w-sparse", type=float, default=0.1, help="the env's sparsity weight (default 0.1)")
    parser.add_argument("--tensorboard", help="TensorBoard folder (training and eval curves)")
    parser.add_argument(
        "--out", default="results/hiedit/hiedit_learning_curve", help="path stem for .json/.md/.png"
    )
    parser.add_argument(
        "--save", help="also save the trained selector here (a folder for `edit-gym eval --agent hiedit`)"
    )
    parser.add_argument(
        "--reference",
        choices=METHOD_OPTIONS["reference"],
        default=METHOD_OPTION_DEFAULTS["reference"],
        help="the advantage reward's reference selection under a named method (the env's `reference`)",
    )
    parser.add_argument(
        "--target-block",
        choices=METHOD_OPTIONS["target_block"],
        default=METHOD_OPTION_DEFAULTS["target_block"],
        help="under a named method: the target at the selection's top block or the band's (the env's "
        "`target_block`)",
    )
    parser.add_argument("--render-only", action="store_true", help="redraw the table and plot from the JSON")
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="JSON",
        help="write one curve over training seeds from runs of one setting (their --out .json files)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.combine:
        data = combine([Path(p) for p in args.combine])
        atomic_write_text(out.with_suffix(".json"), json.dumps(data, indent=1))
    elif args.render_only:
        data = json.loads(out.with_suffix(".json").read_text())
    else:
        if args.budget is not None and args.trainer not in BUDGETED:
            parser.error("--budget goes with --trainer maskable or straight-through")
        env_budget = args.budget if args.trainer == "maskable" else None  # the env enforces it
        common = {"num_edits": args.edits, "w_sparse": args.w_sparse, "budget": env_budget}
        for option, default in METHOD_OPTION_DEFAULTS.items():
            if getattr(args, option) != default:  # one-step rules take only the env's defaults
                common[option] = getattr(args, option)
        train_env = make_training_env(
            args.env, args.low_level, args.trainer, dataset=args.train_data, **common
        )
        test_env = make_training_env(args.env, args.low_level, args.trainer, dataset=args.test_data, **common)
        extra = {"learning_rate": args.learning_rate} if args.trainer == "ppo" else {}
        if args.trainer == "straight-through":
            extra["budget"] = args.budget  # the selector's own top-K
        agent = HiEditAgent(train_env, args.trainer, seed=args.seed, **extra)
        # K of the random and fixed baselines: the budget (maskable's default half included), else matched
        args.budget = getattr(agent.model, "budget", None) or test_env.unwrapped.cfg.budget
        held_out = HiEditAgent(test_env, args.trainer, model=agent.model)  # same policy, test env's masks
        points: list[dict] = []
        baselines: dict = {}  # the baselines' held-out episodes, played once per K
        eval_writer = None
        if args.tensorboard and args.trainer in ("sb3", "maskable"):  # the others pass their own writer
            from torch.utils.tensorboard import SummaryWriter

            eval_writer = SummaryWriter(str(Path(args.tensorboard) / "eval"))

        def record(step: int, policy, writer) -> None:
            point = {"step": step, **evaluate(test_env, held_out, args.eval_seeds, args.budget, baselines)}
            points.append(point)
            means = {
                name: interval(point[name]["returns"])[0] for name in SELECTORS if point[name]["returns"]
            }
            print(
                f"step {step}: "
                + "  ".join(f"{LABELS[n]} {m:.3f}" for n, m in means.items())
                + f" (K={point['k']})",
                flush=True,
            )
            writer = writer or eval_writer  # the SB3 trainers pass no writer
            if writer is not None:
                for name, value in means.items():
                    writer.add_scalar(f"eval/return_{name}", value, step)

        next_eval = [0]

        def callback(step: int, policy, writer) -> None:
            if step >= next_eval[0]:
                record(step, policy, writer)
                next_eval[0] = step + args.eval_every

        start = time.perf_counter()
        record(0, agent.model.policy, None)  # the untrained selector
        next_eval[0] = args.eval_every
        agent.learn(args.timesteps, tb_log_dir=args.tensorboard, callback=callback)
        seconds = time.perf_counter() - start
        if points[-1]["step"] < args.timesteps:
            record(args.timesteps, agent.model.policy, None)
        if eval_writer is not None:
            eval_writer.close()
        data = {
            "args": vars(args),
            "command": "python benchmarks/hiedit_learning_curve.py "
            + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}",
            "seconds": seconds,
            "points": points,
        }
        atomic_write_text(out.with_suffix(".json"), json.dumps(data, indent=1))
        if args.save:  # after the curve is safely written
            agent.save(args.save)
    write_markdown(data, out.with_suffix(".md"))
    plot(data, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
