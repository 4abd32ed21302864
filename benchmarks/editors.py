"""The named editors measured: single edits on the pristine model, sequential streams, one table.

    # single edits, first 100 CounterFact test records in file order, each from the pristine model
    python benchmarks/editors.py single --editors rome memit alphaedit --records 100
    # sequential streams (band agent: the method's own layers), both protocols recorded
    python benchmarks/editors.py stream --editors memit alphaedit --edits 100 --seeds 0 1 2 --wild
    # results/editors/editors.md from every run file under results/editors/
    python benchmarks/editors.py table

Every run writes one JSON file under ``results/editors/`` (atomically, named by what it ran), so
a long queue keeps what it finished and no file grows without bound; ``table`` reads them all.
Single edits batch the *target* stage over ``--batch`` records (each request's target is the one a
one-at-a-time run gives: tests/test_methods.py) and write each edit alone into pristine weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from edit_gym.cache import atomic_write_text
from edit_gym.leaderboard import build as leaderboard_build
from edit_gym.leaderboard import data_name, record_run, recorded_before, run_file_name
from edit_gym.stats import interval

ROOT = Path(__file__).resolve().parents[1]
COUNTERFACT_TEST = ROOT.parent / "shared" / "data" / "counterfact" / "knowedit_counterfact_test.json"
RESULTS = ROOT / "results" / "editors"
RUNS = ROOT / "results" / "runs"  # sequential streams: the leaderboard's run store
STREAM_CHECKPOINTS = ROOT / "runs" / "stream-checkpoints"  # streams in progress (not in git)
SINGLE_METRICS = (
    "efficacy_score",
    "efficacy",
    "paraphrase_score",
    "generalization",
    "neighbourhood_score",
    "specificity",
)
STREAM_METRICS = (
    "efficacy_score",
    "paraphrase_score",
    "neighbourhood_score",
    "efficacy",
    "generalization",
    "specificity",
    "retention_first_n",
    "wild_efficacy_em",
    "wild_efficacy_f1",
    "wild_generalization_f1",
    "wild_specificity_f1",
)


def _command() -> str:
    return "python benchmarks/editors.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _env(args, editor: str, num_edits: int, edits_per_step: int):
    from edit_gym.env import LifelongEditEnv

    params = json.loads(args.editor_params) if args.editor_params else None
    return LifelongEditEnv(
        model=args.model,
        dataset=args.data,
        editor=editor,
        num_edits=num_edits,
        edits_per_step=edits_per_step,
        known_only=False if args.data != "facts" else None,
        editor_params=params,
        final_eval=False,
    )


def single_edits(env, records: int, batch: int, label: str = "") -> list[dict]:
    """Each of the env's first ``records`` stream requests edited alone into pristine weights.

    The target stage runs over ``batch`` requests at a time (each one's target is what a
    one-at-a-time run gives); every write starts from the pristine model and is scored alone.
    """
    from edit_gym.editing.capture import capture as run_capture
    from edit_gym.editing.keys import build_sites
    from edit_gym.editing.pipeline import Plan
    from edit_gym.editing.targets import Target
    from edit_gym.evaluation import score_requests

    method, state = env.method, env._state
    band = method.band()
    zeros = np.zeros(len(band))
    stream = [int(i) for i in env._stream[:records]]
    rows: list[dict] = []
    for at in range(0, records, batch):
        idx = stream[at : at + batch]
        reqs = [env.requests[i] for i in idx]
        state.restore()
        plan = method.plan(reqs, band) if method.method.target != "none" else Plan(reqs)
        for i, (k, r) in enumerate(zip(idx, reqs, strict=True)):
            state.restore()
            method.reset()
            sub, capture, extra = Plan([r]), None, {}
            if plan.target is not None:
                t = plan.target
                if t.fault:
                    rows.append({"uid": r.uid, "fault": t.fault})
                    continue
                sub.sites = build_sites(env.encoder, [r], method.templates(), env.device)
                sub.target = Target(
                    t.layer, t.z[i : i + 1], t.delta[i : i + 1], t.h[i : i + 1], [t.nll[i]], [t.steps[i]]
                )
                extra = {"target_nll": t.nll[i], "target_steps": t.steps[i]}
            else:
                batch_i = env.encoder.encode([(r.prompt, r.target_new)], device=env.device)
                capture = run_capture(env.model, env.candidates, batch_i)
            with torch.no_grad():
                method.apply(sub, band, zeros, env.cfg.coef_range, capture)
            scores = score_requests(env.model, env.encoder, [r], [env._references[k]], env.device)
            rows.append({"uid": r.uid, **scores, **extra})
        print(f"{label}: {len(rows)}/{records}", file=sys.stderr, flush=True)
    state.restore()
    method.reset()
    return rows


def summarize(rows: list[dict], metrics=SINGLE_METRICS) -> dict:
    return {m: interval([r[m] for r in rows if m in r]) for m in metrics if any(m in r for r in rows)}


def single(args) -> None:
    """Each of the first ``--records`` records (file order) edited alone into the pristine model."""
    for editor in args.editors:
        env = _env(args, editor, args.records, 1)
        env.reset(seed=0, options={"stream": list(range(args.records))})
        start = time.perf_counter()
        rows = single_edits(env, args.records, args.batch, editor)
        seconds = time.perf_counter() - start
        summary = summarize(rows)
        record = {
            "kind": "single",
            "command": _command(),
            "model": args.model,
            "data": data_name(args.data),
            "editor": editor + (f" ({args.tag})" if args.tag else ""),
            "params": dict(env.method.params),
            "band": [env.candidate_names[j] for j in env.method.band()],
            "records": args.records,
            "c0_tokens": _c0_tokens(),
            "faults": sum(1 for r in rows if "fault" in r),
            "summary": summary,
            "seconds_per_edit": seconds / args.records,
            "rows": rows,
            "machine": _machine(),
        }
        tag = f"-{args.tag}" if args.tag else ""
        path = RESULTS / f"single-{args.model}-{data_name(args.data)}-{args.records}-{editor}{tag}.json"
        atomic_write_text(path, json.dumps(record, indent=1))
        cells = ", ".join(f"{m} {100 * v:.1f} +- {100 * h:.1f}" for m, (v, h) in summary.items())
        print(f"{editor}: {cells}; {seconds / args.records:.2f} s per edit -> {path}")


def _c0_tokens() -> int:
    from edit_gym.editing.covariance import SAMPLE_SETS

    count, length, _ = SAMPLE_SETS["covariance"]
    return count * length


def _machine() -> str:
    return f"{platform.platform()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def stream(args) -> None:
    """Sequential streams of ``--edits`` edits, ``--edits-per-step`` at a time, on the same weights."""
    from agents.baselines import AllCandidatesAgent, BandAgent
    from edit_gym.runner import run_episode

    for editor in args.editors:
        for seed in args.seeds:
            env = _env(args, editor, args.edits, args.edits_per_step)
            agent = BandAgent(env) if env.method is not None else AllCandidatesAgent(env)
            agent_name = "band" if env.method is not None else "all"
            cfg = {"model": args.model, "num_edits": args.edits, "editor": editor}
            probe = {"config": {**cfg, "edits_per_step": args.edits_per_step}}
            probe.update(data=data_name(args.data), agent=agent_name, seed=seed, final={})
            probe["editor"] = editor + (f" ({args.tag})" if args.tag else "")
            path = RUNS / run_file_name(probe)
            if path.exists() and not args.force:
                print(f"{path} exists (--force reruns it)")
                continue
            before, before_from = (None, None)
            if args.reuse_before:
                needs = ("wild_efficacy_f1",) if args.wild else ()
                before, before_from = recorded_before(RUNS, asdict(env.cfg), seed, needs)
                if before_from:  # the record names it from the repository root
                    before_from = Path(before_from).resolve().relative_to(ROOT).as_posix()
            start = time.perf_counter()
            # a stopped run continues from its last checkpoint when the command is run again
            checkpoint = (
                STREAM_CHECKPOINTS / path.relative_to(RUNS).with_suffix("") if args.checkpoint_every else None
            )
            if checkpoint is not None and checkpoint.exists():
                print(f"continuing {path.name} from {checkpoint}", flush=True)
            result = run_episode(  # per_edit: which edits the stream kept, by age (a few s more)
                env,
                agent,
                seed,
                extended=True,
                progress=args.progress,
                wild=args.wild,
                before=before,
                per_edit=True,
                checkpoint=checkpoint,
                checkpoint_every=args.checkpoint_every,
            )
            result.update(
                {
                    "before_from": before_from,
                    "kind": "stream",
                    "command": _command(),
                    "data": data_name(args.data),
                    "editor": editor + (f" ({args.tag})" if args.tag else ""),
                    "agent": agent_name,
                    # of this process; a resumed run (result["resumed_at"]) ran in pieces
                    "wall_seconds": time.perf_counter() - start,
                    "c0_tokens": _c0_tokens(),
                    "machine": _machine(),
                }
            )
            path = record_run(result, RUNS)
            if checkpoint is not None:
                shutil.rmtree(checkpoint, ignore_errors=True)
            leaderboard_build(
                RUNS,
                ROOT / "docs" / "results.md",
                readme=ROOT / "README.md",
                figures=ROOT / "results" / "leaderboard",
            )
            fin = result["final"]
            cells = ", ".join(f"{m} {100 * fin[m]:.1f}" for m in STREAM_METRICS if m in fin)
            print(
                f"{editor} seed {seed}: {cells}; ppl {fin.get('perplexity', float('nan')):.2f}; "
                f"{result['seconds_per_edit']:.2f} s/edit; fault {result['fault']!r} -> {path}",
                flush=True,
            )


def speed(args) -> None:
    """An edit's cost in forward+backward passes of the model, measured in one run.

    One pass = one forward+backward over *one* edit prompt (the capture a step makes), the median
    over the step's requests, each timed alone. Per editor: an env step with one request, and a
    step of ``--batch`` requests divided by their number, each as a multiple of that pass.

    Beside that time-equivalent count, *model calls per edit*: the full forwards (those that reach
    the model's top block) during the env step, each batched over the step's requests, divided by
    the requests. A target optimization's Adam step is one; so are the step's own scoring passes
    (reward, next observation). Forwards that stop early (the key captures, the target's first
    pass to its layer) are not counted. On a CPU a batched call costs about what its tokens cost;
    on an accelerator a call of a few short prompts costs about one pass, so there the step's time
    follows the call count more than the time-equivalent one.
    """
    from edit_gym.actions import encode_action
    from edit_gym.architectures import architecture_for
    from edit_gym.editing.capture import capture

    lines, timings = [], {}
    for editor in args.editors:
        for per_step in (1, args.batch):
            env = _env(args, editor, per_step * args.steps, per_step)
            env.reset(seed=0)
            mask = np.zeros(env.num_candidates, bool)
            mask[env.method.band() if env.method is not None else slice(None)] = True
            action = encode_action(
                mask, np.zeros(env.num_candidates), env.cfg.action_type, env.cfg.coef_levels
            )
            ratios, seconds, calls = [], [], []
            blocks = architecture_for(env._state.backbone.model_type).blocks
            top = env.model.get_submodule(blocks)[-1]  # every full forward of the model ends here
            counter = [0]

            def count(*_: object, counter: list[int] = counter) -> None:
                counter[0] += 1

            for t in range(args.steps):
                reqs = [env.requests[i] for i in env._batch_requests(t)]
                passes = []
                for r in reqs:
                    one = env.encoder.encode([(r.prompt, r.target_new)], device=env.device)
                    for _ in range(3):
                        start = time.perf_counter()
                        capture(env.model, env.candidates, one)
                        passes.append(time.perf_counter() - start)
                counter[0] = 0
                handle = top.register_forward_hook(count)
                try:
                    start = time.perf_counter()
                    env.step(action)
                    seconds.append((time.perf_counter() - start) / per_step)
                finally:
                    handle.remove()
                ratios.append(seconds[-1] / float(np.median(passes)))
                calls.append(counter[0] / per_step)
            timings.setdefault(editor, {})[per_step] = {
                "passes_per_edit": float(np.median(ratios)),
                "model_calls_per_edit": float(np.median(calls)),
                "seconds_per_edit": float(np.median(seconds)),
            }
            line = (
                f"{editor}: {per_step} request(s) per step: {np.median(ratios):.1f} forward+backward passes "
                f"per edit (time-equivalent), {np.median(calls):.1f} batched model calls per edit, "
                f"{np.median(seconds):.3f} s (median of {args.steps} steps)"
            )
            lines.append(line)
            print(line, flush=True)
    first = args.editors[0]
    for editor in args.editors[1:]:
        for per_step, t in timings[editor].items():
            ratio = t["seconds_per_edit"] / timings[first][per_step]["seconds_per_edit"]
            line = (
                f"{editor} / {first}, {per_step} request(s) per step: {100 * ratio:.1f}% of the time per edit"
            )
            lines.append(line)
            print(line, flush=True)
    record = {
        "kind": "speed",
        "command": _command(),
        "model": args.model,
        "lines": lines,
        "timings": {e: {str(k): v for k, v in t.items()} for e, t in timings.items()},
        "machine": _machine(),
    }
    out = Path(args.out) if args.out else RESULTS / f"speed-{args.model}.json"
    atomic_write_text(out, json.dumps(record, indent=1))


LEGACY_C0_TOKENS = 6144  # run files without the field were made before C0 moved to 512 x 48 tokens


def _cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    mean, half = interval(values)
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * half:.{digits}f}" if len(values) > 1 else "")


def table(args) -> None:
    """results/editors/editors.md from every run file under results/editors/."""
    files = sorted(RESULTS.glob("*.json"))
    runs = [json.loads(f.read_text()) for f in files]
    singles = [r for r in runs if r.get("kind") == "single"]
    lines = [
        "# The named editors, measured",
        "",
        "Generated by `python benchmarks/editors.py table` from the run files in `results/editors/`;",
        "each file records the command that made it. Scores in %, mean ± 95% t-interval over what the",
        "row says. Protocols: *probability* scores are CounterFact's (MEMIT / AlphaEdit tables): efficacy",
        "score = p(new) > p(true) on the prompt, paraphrase score the same on paraphrases, neighbourhood",
        "score = p(true) > p(new) on other subjects of the same relation (mean per-token log-probs);",
        "*teacher-forced* token scores (EasyEdit's): eff / gen = top-1 of every target token; spec =",
        "agreement with the pre-edit model on the record's locality prompts (for KnowEdit CounterFact:",
        "the same subject under other relations, *relation specificity*); *generation* (in the wild,",
        "arXiv 2502.11177): greedy answers with natural stopping, exact match (EM) and token F1.",
        "",
    ]
    if singles:
        lines += [
            "## Single edits on the pristine model",
            "",
            "| model | data | editor | records | band | C0 tokens | target steps | L2 | eff. score | token eff | para. score | token gen | neigh. score | spec | s/edit | faults |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(singles, key=lambda r: (r["model"], r["data"], r["editor"])):
            rows = [x for x in r["rows"] if "fault" not in x]
            cells = [_cell([x[m] for x in rows if m in x]) for m in SINGLE_METRICS]
            blocks = [n.split(".")[2] for n in r["band"]]
            lines.append(
                f"| {r['model']} | {r['data']} | {r['editor']} | {r['records']} | {','.join(blocks)} | "
                f"{r.get('c0_tokens', LEGACY_C0_TOKENS)} | {r['params'].get('v_num_grad_steps', '-')} | "
                f"{r['params'].get('L2', '-')} | "
                + " | ".join(cells)
                + f" | {r['seconds_per_edit']:.2f} | {r['faults']} |"
            )
        lines += ["", "Commands: " + "; ".join(sorted({f"`{r['command']}`" for r in singles})), ""]
    speeds = [r for r in runs if r.get("kind") == "speed"]
    if speeds:
        lines += ["## Speed: an edit in forward+backward passes of the model", ""]
        for r in speeds:
            lines += [f"- {line}" for line in r["lines"]]
            lines += [f"  (`{r['command']}`; {r['machine']})"]
        lines += [""]
    lines += [
        "Sequential streams (both protocols, over stream seeds) are on the leaderboard,",
        "[docs/results.md](../../docs/results.md), built from `results/runs/` by `edit-gym leaderboard`.",
        "",
    ]
    out = ROOT / "results" / "editors" / "editors.md"
    atomic_write_text(out, "\n".join(lines))
    print(f"wrote {out} from {len(files)} run files")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("single", "stream"):
        p = sub.add_parser(name)
        p.add_argument("--editors", nargs="+", required=True)
        p.add_argument("--model", default="smollm2-135m")
        p.add_argument("--data", default=str(COUNTERFACT_TEST))
        p.add_argument(
            "--editor-params", default=None, help="JSON overrides of the method's hyper-parameters"
        )
        p.add_argument("--tag", default="", help="a name for a variant run (with --editor-params)")
    sub.choices["single"].add_argument("--records", type=int, default=100)
    sub.choices["single"].add_argument("--batch", type=int, default=10)
    st = sub.choices["stream"]
    st.add_argument("--edits", type=int, default=100)
    st.add_argument("--edits-per-step", type=int, default=10)
    st.add_argument("--seeds", type=int, nargs="+", default=[0])
    st.add_argument("--wild", action="store_true", help="also record the generation-based protocol")
    st.add_argument("--force", action="store_true")
    st.add_argument(
        "--reuse-before",
        action="store_true",
        help="take the pre-edit scores of the same stream from a recorded run instead of computing them",
    )
    st.add_argument("--progress", action="store_true")
    st.add_argument(
        "--checkpoint-every",
        type=int,
        default=5,
        help="steps between stream checkpoints in runs/stream-checkpoints/ (0: none); "
        "a stopped run continues from its last one when the command is run again",
    )
    sp = sub.add_parser("speed")
    sp.add_argument("--editors", nargs="+", required=True)
    sp.add_argument("--model", default="smollm2-135m")
    sp.add_argument("--data", default=str(COUNTERFACT_TEST))
    sp.add_argument("--editor-params", default=None)
    sp.add_argument("--batch", type=int, default=10)
    sp.add_argument("--steps", type=int, default=3)
    sp.add_argument(
        "--out", default=None, help="the JSON to write (default results/editors/speed-MODEL.json)"
    )
    sub.add_parser("table")
    args = parser.parse_args()
    {"single": single, "stream": stream, "speed": speed, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
