"""How many edits AlphaEdit's null space holds on a backbone: its write share and leak along a stream.

    python benchmarks/alphaedit_capacity.py --edits 839 --out results/editors/alphaedit_capacity-smollm2-135m.md
    # the page again from its recorded .json
    python benchmarks/alphaedit_capacity.py --render results/editors/alphaedit_capacity-smollm2-135m.json

AlphaEdit writes each step inside the null space P of the preserved keys (C0's small directions),
with the keys edited so far, K_p, held by a penalty (``write.AlphaEditWriter``). On a 1.5-8B model
the null space has thousands of directions; on a 1,536-wide key it has a few hundred, and every
edit's key claims part of it. This benchmark replays a real stream's *keys* through the write of
one band layer at a time, with no target stage (so it costs minutes, not hours), and reports for
each null-space rule and L2:

* ``dim``: the null space's dimension (trace of P);
* ``share@t``: the fraction of a request's residual its own write delivers, mean over the step's
  keys, at edit t (diag of K X, X = (P (K^T K + K_p^T K_p) + L2 I)^-1 P K^T): the write's capacity;
* ``leak``: the output change the write makes on ordinary text (the held-out model samples' keys)
  per unit of residual, summed over the stream (||K_o X||_F^2 / tokens, residual directions taken as
  independent): how much of every edit lands on what the model already does;
* ``old@end``: the same on the keys edited earlier (disturbance of the kept edits), summed.

Approximations (stated in the output): keys are read on the pristine model (a real stream reads
them after the lower layers were written); each layer is taken alone (MEMIT's spreading passes
what a layer could not write to the next one up).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from edit_gym.cache import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
COUNTERFACT_TEST = ROOT.parent / "shared" / "data" / "counterfact" / "knowedit_counterfact_test.json"
DEFAULT_CONFIGS = (
    "energy:0.02:3",
    "energy:0.02:10",
    "energy:0.05:3",
    "energy:0.05:10",
    "energy:0.1:3",
    "energy:0.1:10",
    "energy:0.2:10",
    "relative:0.02:10",
)


def parse_config(text: str) -> tuple[str, float, float]:
    """``RULE:VALUE:L2`` (e.g. ``energy:0.02:3``) -> (rule, value, L2)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"config {text!r}: expected RULE:VALUE:L2, e.g. energy:0.02:3")
    return parts[0], float(parts[1]), float(parts[2])


@torch.no_grad()
def stream_keys(env, layers: list[int], steps: list[list[int]]) -> dict[int, list[torch.Tensor]]:
    """Per band candidate, the (n, d) subject keys of every step (pristine weights, MEMIT's average)."""
    from edit_gym.editing.keys import build_sites, read_sites

    method = env.method
    templates = method.templates()
    top = method.ctx.blocks[max(method.ctx.block_index[j] for j in layers)]
    modules = [env.candidates[j].module for j in layers]
    out: dict[int, list[torch.Tensor]] = {j: [] for j in layers}
    for idx in steps:
        sites = build_sites(env.encoder, [env.requests[i] for i in idx], templates, env.device)
        keys, _ = read_sites(env.model, sites, modules, top)
        for j, k in zip(layers, keys, strict=True):
            out[j].append(k.cpu())
    return out


@torch.no_grad()
def ordinary_keys(env, layers: list[int]) -> dict[int, torch.Tensor]:
    """Per band candidate, its input at every token of the held-out model samples."""
    from edit_gym.editing.capture import module_inputs

    samples = torch.tensor(env._heldout_samples(), device=env.device)
    rows: list[list[torch.Tensor]] = [[] for _ in layers]
    with module_inputs([env.candidates[j].module for j in layers], lambda i, x: rows[i].append(x.cpu())):
        env.model(input_ids=samples)
    return {j: torch.cat(r) for j, r in zip(layers, rows, strict=True)}


def replay(
    c0: torch.Tensor, step_keys: list[torch.Tensor], k_ord: torch.Tensor, rule: str, value: float, l2: float
) -> dict:
    """One layer's write share and leaks along the stream (module doc), through the env's own writer."""
    from edit_gym.editing.write import AlphaEditWriter

    writer = AlphaEditWriter(lambda: [c0.float()], l2, rule, value, "penalty")
    k_ord = k_ord.float()
    old: torch.Tensor | None = None
    shares, leak, old_leak = [], 0.0, 0.0
    for k in step_keys:
        k = k.float()
        # the write of a unit residual per key: X (d x n) maps a residual to the weight change
        x = writer.solve(0, k, torch.eye(len(k))).matrix().T
        shares.append(float((k @ x).diagonal().mean()))
        leak += float((k_ord @ x).pow(2).sum() / k_ord.shape[0])
        if old is not None:
            old_leak += float((old @ x).pow(2).sum() / old.shape[0])
        writer.record(0, k)
        old = k if old is None else torch.cat([old, k])
    dim = round(float(writer.projector(0).diagonal().sum()))
    return {"dim": dim, "shares": shares, "leak": leak, "old_leak": old_leak}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=str(COUNTERFACT_TEST))
    ap.add_argument("--edits", type=int, default=839)
    ap.add_argument("--edits-per-step", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), help="RULE:VALUE:L2 ...")
    ap.add_argument("--out", default=None, help="a .md file (the .json beside it)")
    ap.add_argument("--render", default=None, help="rewrite the .md beside a recorded .json and stop")
    args = ap.parse_args(argv)
    if args.render:
        source = Path(args.render)
        atomic_write_text(source.with_suffix(".md"), render(json.loads(source.read_text())))
        print(f"wrote {source.with_suffix('.md')}")
        return
    configs = [parse_config(c) for c in args.configs]

    from edit_gym.env import LifelongEditEnv

    started = time.time()
    env = LifelongEditEnv(
        model=args.model,
        dataset=args.data,
        editor="alphaedit",
        num_edits=args.edits,
        edits_per_step=args.edits_per_step,
        known_only=False,
        final_eval=False,
    )
    # the stream env.reset(seed=...) draws, without reset's pre-edit references (minutes on 839 records)
    stream = env.stream_for(args.seed)
    steps = [stream[i : i + args.edits_per_step] for i in range(0, len(stream), args.edits_per_step)]
    band = env.method.band()
    cov = env._state.covariance()
    keys = stream_keys(env, band, steps)
    k_ord = ordinary_keys(env, band)
    marks = sorted({1, len(steps) // 4, len(steps) // 2, (3 * len(steps)) // 4, len(steps)} - {0})
    rows = []
    for rule, value, l2 in configs:
        for j in band:
            r = replay(cov[j].cpu(), keys[j], k_ord[j], rule, value, l2)
            rows.append({"rule": rule, "value": value, "L2": l2, "candidate": env.candidate_names[j], **r})
            print(
                f"{rule} {value} L2 {l2} {env.candidate_names[j]}: dim {r['dim']}, "
                + ", ".join(f"share@{m * args.edits_per_step} {r['shares'][m - 1]:.3f}" for m in marks)
                + f", leak {r['leak']:.3g}, old {r['old_leak']:.3g}",
                flush=True,
            )
    seconds = time.time() - started
    command = "python benchmarks/alphaedit_capacity.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    record = {
        "command": command,
        "model": args.model,
        "data": Path(args.data).stem,
        "edits": len(stream),
        "edits_per_step": args.edits_per_step,
        "seed": args.seed,
        "band": [env.candidate_names[j] for j in band],
        "marks": {str(min(m * args.edits_per_step, len(stream))): m - 1 for m in marks},
        "rows": rows,
        "seconds": seconds,
        "machine": f"{platform.platform()}, torch {torch.__version__}",
    }
    if args.out:
        out = Path(args.out)
        atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
        atomic_write_text(out, render(record))
        print(f"wrote {out} and {out.with_suffix('.json')}")


def band_delivers(layer_shares: list[float]) -> float:
    """The fraction of a residual MEMIT's spreading delivers over the band (layers in order).

    Layer i of m takes 1 / (m - i) of what is left and delivers ``layer_shares[i]`` of that; what
    it does not deliver stays in the residual for the layers above.
    """
    left = 1.0
    m = len(layer_shares)
    for i, e in enumerate(layer_shares):
        left *= 1.0 - e / (m - i)
    return 1.0 - left


def render(record: dict) -> str:
    """The capacity table: one row per (rule, value, L2), layers of the band averaged."""
    marks = record["marks"]
    groups: dict[tuple, list[dict]] = {}
    for r in record["rows"]:
        groups.setdefault((r["rule"], r["value"], r["L2"]), []).append(r)
    head = "| null space | L2 | dim (per layer) | " + " | ".join(f"share @{m}" for m in marks)
    head += " | ordinary-text leak | earlier-edit leak |"
    lines = [
        f"# AlphaEdit's null-space capacity: {record['model']}, {record['data']}, {record['edits']} edits",
        "",
        f"Generated by `{record['command']}` ({record['seconds']:.0f} s; {record['machine']}).",
        f"Stream seed {record['seed']}, {record['edits_per_step']} requests a step; band "
        f"{', '.join(record['band'])}. *share @t*: the fraction of a request's residual that its own",
        "write delivers at edit t (1 = all of it), mean over the band's layers, and in brackets what",
        "MEMIT's spreading over the band delivers with those shares (``band_delivers``); *leak*:",
        "the output change on ordinary text (held-out model samples) and on earlier edited keys per unit",
        "residual, summed over the stream (relative: compare rows). Keys read on the pristine model, each",
        "layer alone (benchmarks/alphaedit_capacity.py).",
        "",
        head,
        "|" + "---|" * (5 + len(marks)),
    ]
    for (rule, value, l2), rs in groups.items():
        n = len(rs)
        dims = "/".join(str(r["dim"]) for r in rs)
        share = [sum(r["shares"][i] for r in rs) / n for i in marks.values()]
        band = [band_delivers([r["shares"][i] for r in rs]) for i in marks.values()]
        leak = sum(r["leak"] for r in rs) / n
        old = sum(r["old_leak"] for r in rs) / n
        lines.append(
            f"| {rule} {value:g} | {l2:g} | {dims} | "
            + " | ".join(f"{s:.3f} ({b:.2f})" for s, b in zip(share, band, strict=True))
            + f" | {leak:.3g} | {old:.3g} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
