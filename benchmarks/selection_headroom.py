"""How much a per-request layer choice could gain over a faithful editor's band (issue 21's question).

HiEdit's premise is that picking, per request, which layers carry the edit beats a fixed band.
Before training a selector, this measures the room it has: along a stream edited with the
method's band (the ``band`` agent), at every step the step's one target (``method.plan`` for the
band: the optimized v* at the band's top block) is written over each of a family of alternative
selections of the candidates at or below that block, scored with the env's own post-edit metrics
and reward, and rolled back bit-exactly; then the stream goes on with the band's write of the
same target (no second optimization). The per-step *oracle* is the best selection of the family
by the env's reward: an upper bound for a myopic selector over that family, given the band's
history.

    python benchmarks/selection_headroom.py --editor memit --edits 100 --seeds 0 1 2

Families (candidates ``C`` at or below the target block, ``B`` the band, ``top`` its last):
``band``; ``all`` (every one of ``C``); ``window:k`` (the contiguous run of ``C`` from the k-th
to ``top``); ``single:j``; ``random:r`` (``len(B)`` of ``C`` drawn with the benchmark's seed); a selection
met twice keeps its first name.
Writes ``results/hiedit/headroom-MODEL-EDITOR-EDITS.json`` and a Markdown table beside it.
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

ROOT = Path(__file__).resolve().parents[1]
COUNTERFACT_TEST = ROOT.parent / "shared" / "data" / "counterfact" / "knowedit_counterfact_test.json"
OUT = ROOT / "results" / "hiedit"


def selection_family(env, num_random: int, rng: np.random.Generator) -> dict[str, list[int]]:
    """The named selections of the candidates at or below the band's top block (module doc)."""
    method = env.unwrapped.method
    band = method.order(method.band())
    top = method.ctx.block_index[band[-1]]
    below = method.order([j for j in range(env.unwrapped.num_candidates) if method.ctx.block_index[j] <= top])
    named = [("band", band), ("all", below)]
    named += [(f"window:{below[k]}", below[k:]) for k in range(len(below))]
    named += [(f"single:{j}", [j]) for j in below]
    for r in range(num_random):
        pick = rng.choice(below, size=min(len(band), len(below)), replace=False)
        named.append((f"random:{r}", method.order(pick)))
    family: dict[str, list[int]] = {}
    for name, sel in named:  # a selection met twice keeps its first name
        sel = [int(j) for j in sel]
        if sel not in family.values():
            family[name] = sel
    return family


def step_outcomes(env, family: dict[str, list[int]]) -> tuple[dict[str, dict], dict]:
    """At the env's current step: each selection of ``family`` written with the step's one target
    (the band's plan), scored and rolled back; then the env steps with the band, on that plan.

    Returns the per-selection outcomes (``reward``, ``efficacy``, ``specificity``, ``edit_loss``,
    ``kl``, ``touched``) and the env's step ``info`` with the step's ``reward``. Weights and the method's state after the call
    are those of an ordinary band step.
    """
    from edit_gym.actions import encode_action

    inner = env.unwrapped
    method, cfg = inner.method, inner.cfg
    band = family["band"]
    inner._state.activate()
    reqs = [inner._requests[i] for i in inner._batch_requests(inner._t)]
    plan = method.plan(reqs, band)
    if plan.target is None or plan.fault:
        raise RuntimeError(
            f"{cfg.editor} has no target to spread over a selection here: {plan.fault or 'no target stage'}"
        )
    touched = sorted({j for sel in family.values() for j in sel})
    outcomes = {}
    snapshot = method.snapshot()
    inner._state.backup(touched)
    for name, sel in family.items():
        with torch.no_grad():
            written = method.apply(plan, sel, np.zeros(len(sel)), cfg.coef_range, inner._cap)
            m = inner._post_edit_metrics() if not written.get("fault") else None
        inner._state.roll_back(sel)
        method.restore(snapshot)
        if m is None or not np.isfinite(m["edit_loss_after"]):
            outcomes[name] = {"fault": written.get("fault", "non-finite loss"), "touched": len(sel)}
            continue
        frac = len(sel) / inner.num_candidates
        outcomes[name] = {
            "reward": sum(inner._reward_terms(m, frac).values()),
            "efficacy": m["efficacy"],
            "specificity": m["specificity"],
            "edit_loss": m["edit_loss_after"],
            "kl": m["kl"],
            "touched": frac,
        }
    mask = np.zeros(inner.num_candidates, dtype=bool)
    mask[band] = True
    action = encode_action(mask, np.zeros(inner.num_candidates), cfg.action_type, cfg.coef_levels)
    method.plan = lambda _reqs, _sel, _at=None: plan  # the band's step reuses this step's target
    try:
        _, reward, _, _, info = env.step(action)
    finally:
        del method.plan
    return outcomes, {**info, "reward": float(reward)}


def best_selection(outcomes: dict[str, dict]) -> str:
    """The name of the step's best selection by reward (faulted ones left out)."""
    return max((n for n in outcomes if "fault" not in outcomes[n]), key=lambda n: outcomes[n]["reward"])


def summarize(steps: list[dict[str, dict]]) -> dict[str, dict[str, list[float]]]:
    """Per selection (and the per-step ``oracle``, best by reward), the per-step differences from
    the band in reward, efficacy and specificity (points of the env's 0-1 scores), and touched."""
    rows: dict[str, dict[str, list[float]]] = {}
    for outcomes in steps:
        band = outcomes["band"]
        ok = {n: o for n, o in outcomes.items() if "fault" not in o}
        best = best_selection(outcomes)
        named = {**ok, "oracle": ok[best]}
        for name, o in named.items():
            row = rows.setdefault(name, {"reward": [], "efficacy": [], "specificity": [], "touched": []})
            for key in ("reward", "efficacy", "specificity"):
                row[key].append(o[key] - band[key])
            row["touched"].append(o["touched"])
        rows["oracle"].setdefault("choice", []).append(best)
    return rows


def table(rows: dict[str, dict[str, list]], steps: int) -> str:
    from edit_gym.stats import interval

    def cell(values, scale=1.0):
        mean, half = interval(values)
        return (
            f"{scale * mean:+.3f} ± {scale * half:.3f}"
            if scale == 1.0
            else f"{scale * mean:+.1f} ± {scale * half:.1f}"
        )

    lines = [
        "| selection | Δ reward | Δ efficacy (pts) | Δ specificity (pts) | touched | steps |",
        "|---|---|---|---|---|---|",
    ]
    order = sorted(rows, key=lambda n: -np.mean(rows[n]["reward"]))
    for name in order:
        r = rows[name]
        lines.append(
            f"| {name} | {cell(r['reward'])} | {cell(r['efficacy'], 100)} | {cell(r['specificity'], 100)} "
            f"| {100 * np.mean(r['touched']):.1f}% | {len(r['reward'])} of {steps} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--editor", default="memit")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default=str(COUNTERFACT_TEST))
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--edits-per-step", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--random", type=int, default=4, help="random selections of the band's size per step")
    parser.add_argument("--out", default=None, help="JSON to write (default results/hiedit/headroom-...json)")
    args = parser.parse_args()

    from edit_gym.cache import atomic_write_text
    from edit_gym.env import LifelongEditEnv
    from edit_gym.leaderboard import data_name

    steps, per_seed, start = [], {}, time.perf_counter()
    for seed in args.seeds:
        env = LifelongEditEnv(
            model=args.model,
            dataset=args.data,
            editor=args.editor,
            num_edits=args.edits,
            edits_per_step=args.edits_per_step,
            known_only=False if args.data != "facts" else None,
            final_eval=False,
        )
        env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        seed_steps = []
        for t in range(env.num_steps):
            outcomes, info = step_outcomes(env, selection_family(env, args.random, rng))
            seed_steps.append(outcomes)
            best = best_selection(outcomes)
            print(
                f"seed {seed} step {t}: band reward {outcomes['band']['reward']:.3f}, best {best} "
                f"{outcomes[best]['reward']:.3f}; env step reward {info['reward']:.3f}",
                flush=True,
            )
            if info.get("fault"):
                break
        per_seed[seed] = seed_steps
        steps += seed_steps
        env.close()
    rows = summarize(steps)
    name = f"headroom-{args.model}-{args.editor}-{args.edits}"
    out = Path(args.out) if args.out else OUT / f"{name}.json"
    record = {
        "kind": "selection_headroom",
        "command": "python benchmarks/selection_headroom.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "editor": args.editor,
        "model": args.model,
        "data": data_name(args.data),
        "edits": args.edits,
        "edits_per_step": args.edits_per_step,
        "seeds": args.seeds,
        "steps": {str(s): v for s, v in per_seed.items()},
        "summary": rows,
        "wall_seconds": time.perf_counter() - start,
        "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores",
    }
    atomic_write_text(out, json.dumps(record, indent=1))
    md = [
        f"# Room for a per-request layer choice: {args.editor} on {args.model}",
        "",
        f"Generated by `{record['command']}` ({record['machine']}, {record['wall_seconds']:.0f} s).",
        f"{args.edits} edits, {args.edits_per_step} a step, stream seeds {args.seeds}; along the band's",
        "stream, each step's one target written over every selection below and rolled back",
        "(`benchmarks/selection_headroom.py`). Differences from the band, per step: mean ± 95% interval",
        "over the steps of all seeds (steps of one stream are not independent: read the interval as a",
        "guide). *oracle*: the best selection of each step by the env's reward.",
        "",
        table(rows, len(steps)),
        "",
        "Oracle choices: "
        + ", ".join(
            f"{c} x{rows['oracle']['choice'].count(c)}" for c in sorted(set(rows["oracle"]["choice"]))
        ),
        "",
    ]
    atomic_write_text(out.with_suffix(".md"), "\n".join(md))
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
