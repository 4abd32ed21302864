"""A sweep of agents x editors x datasets x stream lengths into the leaderboard's run store.

Every cell is one seeded `edit_gym.runner.run_episode` (final timing after the whole stream, plus
the immediate means), recorded as its own file under ``results/runs/`` as soon as it finishes (a
long sweep keeps what it finished; a rerun of a cell replaces it), and the leaderboard
(``docs/results.md``, ``edit_gym.leaderboard``) is rebuilt after every run.

    python benchmarks/results_table.py                     # the default grid (see --help)
    python benchmarks/results_table.py --lengths 100 --rules ridge covariance --agents all fixed
    python benchmarks/results_table.py --rules rledit:runs/rledit-smollm2-cons \
        --agents hiedit:runs/hiedit-smollm2-maskable-k15 random:15 fixed:15

An agent is a baseline name, ``random:K`` / ``fixed:K`` (K candidates per edit; ``fixed:K@START``
puts the block at candidate START instead of the lower-middle third), or
``hiedit:DIR`` (a trained HiEdit selector; its env gets the checkpoint's action type and budget,
and the rule must be the checkpoint's low level).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from agents import BASELINES, FixedBlockAgent, RandomKAgent
from agents.hiedit import HiEditAgent
from edit_gym.cache import folder_sha256
from edit_gym.editing.rules import learned_checkpoint
from edit_gym.env import LifelongEditEnv
from edit_gym.leaderboard import build as leaderboard_build
from edit_gym.leaderboard import data_name, record_run, recorded_before
from edit_gym.runner import run_episode

ROOT = Path(__file__).resolve().parents[1]
COUNTERFACT_TEST = ROOT.parent / "shared" / "data" / "counterfact" / "knowedit_counterfact_test.json"
RULES = ["gradient", "ridge", "covariance", "covariance+nullspace", "ridge+topk", "ridge+spectral"]


def checkpoint_digests(rule: str, agent: str) -> dict[str, str]:
    """SHA-256 (first 16 hex digits) of the checkpoint folders behind a run: the learned rule's and
    the HiEdit selector's. Results name checkpoints by folder, and folders get retrained or lost;
    the digest says which weights a row really came from."""
    digests = {}
    folder = learned_checkpoint(rule)
    if folder is not None:
        digests["rule"] = folder_sha256(Path(folder))[:16]
    name, arg = parse_agent(agent)
    if name == "hiedit":
        digests["agent"] = folder_sha256(Path(arg))[:16]
    return digests


def parse_agent(spec: str) -> tuple[str, str]:
    """``NAME`` or ``NAME:ARG`` -> (name, arg), checked before any model is loaded."""
    name, _, arg = spec.partition(":")
    if name == "hiedit":
        if not arg:
            raise ValueError("hiedit needs its checkpoint folder: hiedit:DIR")
        HiEditAgent.read_meta(arg)  # a clear error for a folder that is not a HiEdit checkpoint
    elif name not in BASELINES:
        raise ValueError(f"unknown agent {name!r}; known: {sorted(BASELINES)} and hiedit:DIR")
    elif arg and not _valid_size(name, arg):
        raise ValueError(
            f"{spec!r}: only random:K, fixed:K and fixed:K@START take an argument "
            "(K a positive integer, START a candidate index)"
        )
    return name, arg


def _valid_size(name: str, arg: str) -> bool:
    size, at, start = arg.partition("@")
    ok_size = size.isdigit() and int(size) >= 1
    return (name == "random" and ok_size and not at) or (
        name == "fixed" and ok_size and (not at or start.isdigit())
    )


def _normalised(editor: str) -> str:
    """An editor spec with its checkpoint folder (if any) as an absolute path, for comparing."""
    folder = learned_checkpoint(editor)
    return editor if folder is None else editor.replace(folder, str(Path(folder).resolve()), 1)


def agent_env_options(spec: str, rule: str) -> dict | None:
    """Env options an agent needs beyond the rule (a HiEdit selector: its action type and budget),
    or None when the agent does not run under this rule (a selector runs over its own low level)."""
    name, arg = parse_agent(spec)
    if name != "hiedit":
        return {}
    meta = HiEditAgent.read_meta(arg)
    if _normalised(meta["editor"]) != _normalised(rule):
        return None
    return {"action_type": meta["action_type"], "budget": meta.get("env_budget")}


def make_agent(spec: str, env, seed: int):
    """The agent of a spec on ``env`` (random-K draws from ``seed``, so each seed is its own draw)."""
    name, arg = parse_agent(spec)
    if name == "hiedit":
        return HiEditAgent.load(arg, env)
    if name == "random":
        return RandomKAgent(env, k=int(arg) if arg else None, seed=seed)
    if name == "fixed":
        size, _, start = arg.partition("@")
        return FixedBlockAgent(env, start=int(start) if start else None, size=int(size) if size else None)
    return BASELINES[name](env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--datasets", nargs="+", default=[str(COUNTERFACT_TEST), "facts"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rules", nargs="+", default=RULES)
    parser.add_argument(
        "--agents",
        nargs="+",
        default=["all"],
        help=f"agents: {', '.join(sorted(BASELINES))}, random:K, fixed:K or hiedit:DIR (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default=str(ROOT / "results" / "runs"), help="the run store")
    parser.add_argument("--page", default=str(ROOT / "docs" / "results.md"), help="the leaderboard page")
    args = parser.parse_args()
    command = "python benchmarks/results_table.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    for spec in args.agents:
        try:
            if all(agent_env_options(spec, rule) is None for rule in args.rules):
                editor = HiEditAgent.read_meta(parse_agent(spec)[1])["editor"]
                parser.error(f"{spec} was trained over the rule {editor!r}, which is not among --rules")
        except ValueError as err:
            parser.error(str(err))
    runs_dir, page = Path(args.runs), Path(args.page)
    readme = ROOT / "README.md" if page == ROOT / "docs" / "results.md" else None
    figures = ROOT / "results" / "leaderboard" if readme is not None else page.parent / "leaderboard"
    for source in args.datasets:
        known_only = source == "facts"
        available = len(
            LifelongEditEnv(model=args.model, dataset=source, known_only=known_only, num_edits=1).requests
        )
        for length in args.lengths:
            edits = min(length, available)
            before = None  # the same stream for every rule and agent: pre-edit scores computed once
            for rule in args.rules:
                if edits < length:
                    print(
                        f"{data_name(source)}: {available} usable requests, running {edits} instead of {length}"
                    )
                envs: dict[str, LifelongEditEnv] = {}  # one env per distinct set of agent options
                for agent_name in args.agents:
                    options = agent_env_options(agent_name, rule)
                    if options is None:
                        continue  # a HiEdit selector runs only over its own low level
                    key = json.dumps(options, sort_keys=True)
                    if key not in envs:
                        envs[key] = LifelongEditEnv(
                            model=args.model,
                            dataset=source,
                            known_only=known_only,
                            num_edits=edits,
                            editor=rule,
                            final_eval=False,
                            **options,
                        )
                    env = envs[key]
                    if before is None:
                        before, _ = recorded_before(runs_dir, asdict(env.unwrapped.cfg), args.seed)
                    try:
                        agent = make_agent(agent_name, env, args.seed)
                    except ValueError as err:  # e.g. a fixed block that does not fit this model
                        parser.error(f"{agent_name}: {err}")
                    digests = checkpoint_digests(rule, agent_name)  # the weights this run reads
                    start = time.perf_counter()
                    result = run_episode(env, agent, args.seed, before=before)
                    before = result["before"]
                    result.update(
                        agent=agent_name, data=data_name(source), wall_seconds=time.perf_counter() - start
                    )
                    result["command"] = command
                    result["checkpoint_sha256"] = digests
                    record_run(result, runs_dir)
                    leaderboard_build(runs_dir, page, readme=readme, figures=figures)
                    fin = result["final"]
                    print(
                        f"{result['data']} {edits} {rule} {agent_name}: eff {fin['efficacy']:.3f} "
                        f"gen {fin.get('generalization', float('nan')):.3f} spec {fin.get('specificity', float('nan')):.3f} "
                        f"{result['seconds_per_edit']:.3f} s/edit ({result['wall_seconds']:.0f} s)",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
