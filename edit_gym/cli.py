"""The ``edit-gym`` command: ``envs`` lists the ids, ``demo`` runs the README's main job.

edit-gym envs
edit-gym checkpoints
edit-gym demo [--env LifelongEdit-OneStep-v0] [--sequences 4] [--edits-per-sequence 5] [--edits 20] [--baselines alphaedit ...] [--seed 0] [--out runs/demo]
edit-gym eval --agent NAME|module:Class|rledit|MODEL.zip [--checkpoint PATH] --env ID --edits N [...]
edit-gym plot RUN.json [--out DIR]
edit-gym bench [--ids ID ...] [--model tiny] [--editors RULE ...] [--cost-edits N] [--json OUT]
edit-gym train rledit --env ID [--dataset SOURCE] [--sequences N] [--edits-per-sequence T] [--layers A:B] [--seed S] --out DIR
edit-gym train hiedit --trainer ppo|sb3|maskable|straight-through --low-level DIR --env ID [--budget K] [--timesteps N] --out DIR2
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edit_gym.config import METHOD_OPTION_DEFAULTS, METHOD_OPTIONS

AGENT_CHOICES = ("all", "fixed", "random", "topk-grad")


def _cmd_envs(_args: argparse.Namespace) -> int:
    from edit_gym.registration import env_ids

    print(f"{'id':<35} {'model':<13} {'dataset':<8} {'edits':>5}  action space")
    for env_id, kw in env_ids().items():
        space = ACTION_SPACE_TEXT[kw["action_type"]]
        print(f"{env_id:<35} {kw['model']:<13} {kw['dataset']:<8} {kw['num_edits']:>5}  {space}")
    print(
        "\nobservation: Dict(request: Box(2d), layer_stats: Box(L, 8), progress: Box(4)); L = candidate "
        "matrices\n(by default every block's mlp.down_proj), d = the model's width. "
        "Any id takes\nJSON-able kwargs: gym.make(id, dataset=..., num_edits=..., editor=...); see docs/concepts.md"
    )
    return 0


def _cmd_checkpoints(_args: argparse.Namespace) -> int:
    from edit_gym import shipped

    entries = shipped.shipped_checkpoints()
    if not entries:
        print(f"no shipped checkpoints in {shipped.SHIPPED_DIR}")
        return 0
    print(f"{'name':<24} {'kind':<7} {'model':<13} {'sha256':<16}  what")
    for e in entries:
        print(f"{e.name:<24} {e.kind:<7} {e.model:<13} {e.sha256[:16]:<16}  {e.what}")
        print(f"{'':<24} made by: {e.command}")
    print(
        f"\nuse a name where a checkpoint folder goes: --checkpoint NAME, editor='rledit:NAME' ({shipped.SHIPPED_DIR})"
    )
    return 0


# the action space of each action type, with L candidates, 5 coefficient levels and a budget K
ACTION_SPACE_TEXT = {
    "dict": "Dict(mask: MultiBinary(L), coef: Box(-1, 1, (L,)))",
    "box": "Box(-1, 1, (2L,))  [mask > 0 | coef]",
    "multidiscrete": "MultiDiscrete([6] * L)  [0 = skip, 1..5 = coef]",
    "mask": "MultiBinary(L)",
    "slots": "MultiDiscrete([L + 1] * K)  [0 = none, j = candidate j-1]",
}


def _announce(env_id: str) -> None:
    print(f"loading {env_id} (a first run converts/trains and caches the model)...", file=sys.stderr)


def _recorded_before(args: argparse.Namespace, inner, extended: bool) -> tuple[dict | None, str | None]:
    """With ``--reuse-before``: the same stream's pre-edit scores from the run store, if one has them."""
    store = getattr(args, "reuse_before", None)
    if not store:
        return None, None
    from dataclasses import asdict

    from edit_gym.leaderboard import recorded_before
    from edit_gym.wild import WILD_PROTOCOL

    needs = ("efficacy_score", "neighbourhood_score") + (("perplexity",) if extended else ())
    needs += tuple(WILD_PROTOCOL) if getattr(args, "wild", False) else ()
    before, path = recorded_before(Path(store) / "runs", asdict(inner.cfg), args.seed, needs)
    print(
        f"pre-edit scores from {path}"
        if path
        else f"no recorded run in {store}/runs has this stream's pre-edit scores: computing them",
        file=sys.stderr,
    )
    return before, path


def _run(args: argparse.Namespace, env_kwargs: dict) -> int:
    import gymnasium as gym

    import edit_gym  # noqa: F401  registers the ids
    from agents.registry import check_agent_spec, resolve_agent  # agents import torch: not at CLI start-up
    from edit_gym.runner import results_table, run_episode

    check_agent_spec(args.agent)
    _announce(args.env)
    env = gym.make(args.env, final_eval=False, **env_kwargs)
    agent = resolve_agent(args.agent, env, getattr(args, "checkpoint", None))
    extended = not getattr(args, "no_extended", False)
    before, before_from = _recorded_before(args, env.unwrapped, extended)
    stream_checkpoint = getattr(args, "stream_checkpoint", None)
    result = run_episode(
        env,
        agent,
        args.seed,
        before=before,
        extended=extended,
        retention_points=getattr(args, "retention_points", 0),
        samples=getattr(args, "samples", 0),
        wild=getattr(args, "wild", False),
        per_edit=True,  # each edit's own final scores: paired comparisons (`edit-gym compare`)
        checkpoint=stream_checkpoint,
        checkpoint_every=getattr(args, "checkpoint_every", 0) if stream_checkpoint else 0,
    )
    result["agent"] = args.agent
    if before_from:
        result["before_from"] = before_from
    checkpoint = getattr(args, "checkpoint_folder", None) or getattr(args, "checkpoint", None)
    if checkpoint and Path(checkpoint).exists():  # the weights behind the row (results never pool two)
        from edit_gym.cache import file_sha256, folder_sha256

        path = Path(checkpoint)
        digest = folder_sha256(path) if path.is_dir() else file_sha256(path)
        result["checkpoint_sha256"] = {"rule" if args.agent == "rledit" else "agent": digest[:16]}
    inner = env.unwrapped
    print()
    print(
        f"{args.env}: {result['edits']} sequential edits, agent={args.agent}, editor={inner.cfg.editor}, "
        f"dataset={inner.cfg.dataset}, seed={args.seed}"
    )
    print("teacher-forced token top-1; specificity = agreement with the pre-edit model")
    print(results_table(result))
    if args.json:
        from edit_gym.result_file import save_result

        save_result(result, args.json)  # atomic, with format, version and checksum
        print(f"wrote {args.json}")
    if getattr(args, "record", None):
        from edit_gym import leaderboard

        path = leaderboard.record_run(result, Path(args.record) / "runs")
        print(f"recorded {path}; `edit-gym leaderboard` rebuilds docs/results.md")
    if getattr(args, "plots", None):
        from edit_gym.plots import save_plots

        for path in save_plots(result, args.plots).values():
            print(f"wrote {path}")
    if getattr(args, "tensorboard", None):
        from torch.utils.tensorboard import SummaryWriter

        from edit_gym.tensorboard_layout import log_run

        with SummaryWriter(args.tensorboard) as writer:
            log_run(writer, result)
        print(f"wrote TensorBoard run {args.tensorboard} (tensorboard --logdir {args.tensorboard})")
    if stream_checkpoint and (args.json or getattr(args, "record", None)):
        import shutil

        shutil.rmtree(stream_checkpoint, ignore_errors=True)  # the result is written: nothing to resume
        print(f"removed the stream checkpoint {stream_checkpoint}")
    env.close()
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import multiprocessing
    import os
    import platform

    import torch

    import edit_gym
    from edit_gym import bench

    unknown = [i for i in args.ids if i not in edit_gym.env_ids()]
    if unknown:
        raise ValueError(f"unknown env id(s) {unknown} (see `edit-gym envs`)")
    if args.steps < 1 or args.cost_edits < 0 or args.cost_window < 1:
        raise ValueError("--steps and --cost-window must be >= 1 and --cost-edits >= 0")
    report: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
        },
        "steps": args.steps,
        "seed": args.seed,
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians over {args.steps} steps")
    print(
        f"\n{'env id':<28} {'L':>3} {'step s':>8} {'steps/s':>8} {'passes s':>9} {'overhead':>9} {'peak MiB':>9}"
    )
    ctx = multiprocessing.get_context("spawn")  # a fresh process per id: its own peak memory
    report["step_overhead"] = []
    for env_id in args.ids:
        with ctx.Pool(1) as pool:
            r = pool.apply(bench.step_overhead, (env_id, args.steps, args.seed))
        report["step_overhead"].append(r)
        print(
            f"{r['id']:<28} {r['candidates']:>3} {r['step_s']:>8.4f} {r['steps_per_s']:>8.2f} "
            f"{r['passes_s']:>9.4f} {r['overhead_ratio']:>9.2f} {r['peak_rss_mib']:>9.0f}",
            flush=True,
        )
    print(
        f"\nmodel {args.model}: {'editor':<24} {'fwd+bwd s':>9} {'update s':>9} {'edit/fb':>8} {'step/fb':>8}"
    )
    report["edit_latency"] = []
    for editor in args.editors:
        r = bench.edit_latency(args.model, args.dataset, editor, args.steps, args.seed)
        report["edit_latency"].append({"model": args.model, **r})
        print(
            f"{'':<{len(args.model) + 8}}{editor:<24} {r['fwd_bwd_s']:>9.4f} {r['update_s']:>9.4f} "
            f"{r['edit_over_fwd_bwd']:>8.2f} {r['step_over_fwd_bwd']:>8.2f}",
            flush=True,
        )
    report["vector_memory"] = []
    if args.vector:
        print(f"\n{'vector env':<28} {'envs':>4} {'peak MiB':>9} {'vs first':>9}")
        for env_id in args.ids:
            first = None  # the first size's peak: the others are reported as a ratio to it
            for count in args.vector:
                with ctx.Pool(1) as pool:
                    r = pool.apply(bench.vector_memory, (env_id, count, 3, args.seed))
                first = first or r["peak_rss_mib"]
                r["ratio_to_first"] = r["peak_rss_mib"] / first
                report["vector_memory"].append(r)
                print(
                    f"{env_id:<28} {count:>4} {r['peak_rss_mib']:>9.0f} {r['ratio_to_first']:>9.2f}",
                    flush=True,
                )
    report["cost_growth"] = []
    if args.cost_edits:
        print(
            f"\ncost growth, model {args.model}: {'editor':<20} {'s @10':>8} {f's @{args.cost_edits}':>9} {'ratio':>6}"
        )
        for editor in args.editors:
            r = bench.cost_growth(
                args.model, args.dataset, editor, args.cost_edits, args.cost_window, args.seed
            )
            report["cost_growth"].append({"model": args.model, **r})
            print(
                f"{'':<{len(args.model) + 20}}{editor:<20} {r['early_s']:>8.4f} {r['late_s']:>9.4f} {r['ratio']:>6.2f}",
                flush=True,
            )
    if args.json:
        from edit_gym.cache import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:

    from edit_gym.plots import load_result, save_plots

    result = load_result(args.run)
    out = args.out or str(Path(args.run).with_suffix("")) + "_plots"
    for path in save_plots(result, out).values():
        print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from agents.demo import run_demo
    from agents.registry import check_agent_spec
    from edit_gym.runner import comparison_table
    from edit_gym.stats import paired_effect, paired_line

    check_agent_spec(args.agent)
    _announce(args.env)
    run = run_demo(
        args.env,
        agent=args.agent,
        sequences=args.sequences,
        edits_per_sequence=args.edits_per_sequence,
        edits=args.edits,
        seed=args.seed,
        out=args.out,
        train_dataset=args.train_dataset,
        baselines=args.baselines,
        train_overrides={
            k: v
            for k, v in (("learning_rate", args.lr), ("scalar_learning_rate", args.scalar_lr))
            if v is not None
        },
    )
    first = next(iter(run.rows.values()))
    print()
    trained = (
        f"RLEdit trained on {run.sequences} sequences x {args.edits_per_sequence} edits of "
        f"{run.train_dataset} ({run.train_seconds:.0f} s); "
        if run.sequences
        else ""
    )
    print(
        f"{args.env}: {trained}{first['edits']} held-out sequential edits of {run.eval_dataset}, "
        f"seed {args.seed}, {len(first['candidate_names'])} candidates"
    )
    print(
        "teacher-forced token top-1; specificity = agreement with the pre-edit model; scores after the stream"
    )
    print(comparison_table(run.rows))
    if run.trained:
        effect = paired_effect(run.rows[run.untrained], run.rows[run.trained])
        print(
            f"training effect ({run.trained} - {run.untrained}), paired edit by edit: {paired_line(effect)}"
        )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from edit_gym.result_file import load_result
    from edit_gym.runner import comparison_table
    from edit_gym.stats import paired_effect, paired_line, same_stream

    base, other = load_result(args.base), load_result(args.other)
    same_stream(base, other)
    names = [args.names[0], args.names[1]] if args.names else [Path(args.base).stem, Path(args.other).stem]
    if names[0] == names[1]:
        names = [f"{names[0]} (base)", f"{names[1]} (other)"]
    print(
        f"one stream: seed {base.get('seed')}, {base.get('edits')} edits of "
        f"{Path(str(base['config'].get('dataset'))).name}; teacher-forced scores after the stream"
    )
    print(comparison_table({names[0]: base, names[1]: other}))
    effect = paired_effect(base, other)
    print(
        f"{names[1]} - {names[0]}, paired edit by edit (each edit's own final score): {paired_line(effect)}"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from agents.registry import require_checkpoint  # agents import torch: not at CLI start-up
    from edit_gym.shipped import resolve_checkpoint

    # a shipped checkpoint's short name stays the name in the editor spec and the record; its
    # folder (`edit-gym checkpoints`) gives the digest
    args.checkpoint_folder = resolve_checkpoint(args.checkpoint) if args.checkpoint else None
    kwargs = {"num_edits": args.edits, "edits_per_step": args.edits_per_step}
    if args.dataset:
        kwargs["dataset"] = args.dataset
    if args.agent == "hiedit":
        from agents.hiedit import HiEditAgent

        meta = HiEditAgent.read_meta(require_checkpoint(args.agent, args.checkpoint))
        kwargs.update(editor=meta["editor"], action_type=meta["action_type"])
        if meta.get("env_budget") is not None:
            kwargs["budget"] = meta["env_budget"]
        kwargs.update(_hiedit_env_options(meta))
        if args.editor:
            raise ValueError("--agent hiedit uses the low-level editor it was trained with; drop --editor")
    elif args.agent == "rledit":
        # the learned rule is the editor; --editor may add wrappers, e.g. --editor nullspace
        require_checkpoint(args.agent, args.checkpoint)
        kwargs["editor"] = f"rledit:{args.checkpoint}" + (f"+{args.editor}" if args.editor else "")
    elif args.editor:
        kwargs["editor"] = args.editor
    return _run(args, kwargs)


def _hiedit_env_options(meta: dict) -> dict:
    """The env options a HiEdit selector was trained under that change how a named method writes
    (``target_block``) or is rewarded (``reference``), where not the defaults; absent from older
    checkpoints (the defaults)."""
    return {
        key: meta[key] for key, default in METHOD_OPTION_DEFAULTS.items() if meta.get(key, default) != default
    }


def _flag(option: str) -> str:
    """The command-line flag of an env option: ``target_block`` -> ``--target-block``."""
    return "--" + option.replace("_", "-")


def _method_option_flags(args: argparse.Namespace) -> dict:
    """The named-method env options given on the command line (``--reference``, ``--target-block``)."""
    return {key: getattr(args, key) for key in METHOD_OPTIONS if getattr(args, key)}


def _train_hiedit(args: argparse.Namespace) -> int:
    import edit_gym  # noqa: F401  registers the ids
    from agents.hiedit import HiEditAgent, make_training_env

    if args.timesteps < 1:
        raise ValueError("--timesteps must be a positive integer")
    kwargs = {"num_edits": args.edits_per_sequence}
    if args.dataset:
        kwargs["dataset"] = args.dataset
    if args.resume:
        return _resume_hiedit(args, kwargs)
    if not args.low_level:
        raise ValueError(
            "train hiedit needs --low-level (an RLEdit checkpoint folder, or a rule such as ridge)"
        )
    trainer = args.trainer or "ppo"
    if args.budget is not None and trainer in ("ppo", "sb3"):
        raise ValueError(f"--budget applies to the maskable and straight-through trainers, not {trainer}")
    _announce(args.env)
    env_budget = args.budget if trainer == "maskable" else None
    kwargs.update(_method_option_flags(args))
    env = make_training_env(args.env, args.low_level, trainer, budget=env_budget, **kwargs)
    extra = {"seed": args.seed} if trainer != "ppo" else {"seed": args.seed, "learning_rate": 3e-3}
    if trainer == "straight-through" and args.budget is not None:
        extra["budget"] = args.budget
    agent = HiEditAgent(env, trainer, **extra)
    agent.learn(
        args.timesteps,
        tb_log_dir=args.tensorboard,
        progress_bar=True,
        checkpoint_dir=args.out,
        checkpoint_every=args.checkpoint_every,
    )
    agent.save(args.out)
    print(f"wrote {args.out}; evaluate it with")
    print(f"  edit-gym eval --agent hiedit --checkpoint {args.out} --env {args.env} --edits N")
    env.close()
    return 0


def _resume_hiedit(args: argparse.Namespace, env_kwargs: dict) -> int:
    """``train hiedit --resume``: load the selector in ``--out`` with its trainer, low level and
    budget (flags that name others are refused) and train it until ``--timesteps`` env steps in total."""
    from agents.hiedit import HiEditAgent, editor_spec, make_training_env

    meta = HiEditAgent.read_meta(args.out)
    if meta.get("steps_trained") is None:
        raise ValueError(
            f"--resume: {args.out!r} was saved without its training progress (an older edit-gym); "
            "train a new selector into another --out"
        )
    trainer = meta["trainer"]
    budget = meta.get("budget") if trainer == "straight-through" else meta.get("env_budget")
    options = _hiedit_env_options(meta)
    saved = {"--trainer": (args.trainer, trainer), "--budget": (args.budget, budget)}
    saved["--low-level"] = (args.low_level and editor_spec(args.low_level), meta["editor"])
    for key, default in METHOD_OPTION_DEFAULTS.items():
        saved[_flag(key)] = (getattr(args, key), options.get(key, default))
    clash = [
        f"{flag} {given} (it has {held})"
        for flag, (given, held) in saved.items()
        if given not in (None, held)
    ]
    if clash:
        raise ValueError(f"--resume continues {args.out!r} with its own settings; drop {', '.join(clash)}")
    _announce(args.env)
    env_budget = budget if trainer == "maskable" else None
    env = make_training_env(args.env, meta["editor"], trainer, budget=env_budget, **env_kwargs, **options)
    _train_on(
        args,
        env,
        HiEditAgent,
        lambda agent: agent.steps_trained,
        args.timesteps,
        "env steps",
        progress_bar=True,
    )
    return 0


def _train_on(
    args: argparse.Namespace,
    env: Any,
    agent_class: Any,
    count: Callable[[Any], int],
    total: int,
    unit: str,
    **learn: Any,
) -> bool:
    """Load the checkpoint in ``--out`` on ``env`` and train it until ``count(agent)`` reaches
    ``total`` ``unit``, saving as an uninterrupted run would; False when it is there already."""
    try:
        agent = agent_class.load(args.out, env)
        more = total - count(agent)
        if more <= 0:
            print(f"{args.out} has trained {count(agent)} {unit} of the {total} asked for: nothing to do")
            return False
        print(f"resuming {args.out} at {count(agent)} {unit}, {more} more")
        agent.learn(
            more,
            tb_log_dir=args.tensorboard,
            checkpoint_dir=args.out,
            checkpoint_every=args.checkpoint_every,
            **learn,
        )
        agent.save(args.out)
        print(f"wrote {args.out} ({count(agent)} {unit})")
    finally:
        env.close()
    return True


# `train rledit` flags (argparse dest) -> the RLEditConfig field each sets; unset flags stay None.
_RLEDIT_FLAGS = {
    "window": "window",
    "c_loc": "c_loc",
    "locality_reference": "locality_reference",
    "lr": "learning_rate",
    "scalar_lr": "scalar_learning_rate",
    "rank": "rank",
    "discount": "discount",
}
_SWEPT = "; a model with swept defaults, e.g. smollm2-135m, uses those: agents/rledit.py MODEL_DEFAULTS)"


def _explicit_rledit_flags(args: argparse.Namespace) -> list[str]:
    """The RLEdit training flags given on the command line (a run that continues a checkpoint
    trains with the checkpoint's own settings and refuses these)."""
    return [
        f"--{name.replace('_', '-')}"
        for name in (*_RLEDIT_FLAGS, "layers")
        if getattr(args, name) is not None
    ]


def _check_out_folder(args: argparse.Namespace) -> None:
    """A trained checkpoint in ``--out`` is never replaced by a run that starts over: refused (nothing
    written) unless ``--resume`` continues it; ``--resume`` needs a checkpoint of the agent trained."""
    from agents.hiedit import META_FILE
    from agents.rledit import AGENT_FILE

    out = Path(args.out)
    held = [name for name in (AGENT_FILE, META_FILE) if (out / name).is_file()]
    own = AGENT_FILE if args.agent == "rledit" else META_FILE
    name = {AGENT_FILE: "RLEdit", META_FILE: "HiEdit"}
    article = {AGENT_FILE: "an", META_FILE: "a"}
    if args.resume:
        if args.masks_from:
            raise ValueError(
                "--resume continues a training run; --masks-from starts a new one from a HiEdit selector"
            )
        if own not in held:
            raise ValueError(f"--resume: {args.out!r} holds no {name[own]} checkpoint ({own}) to continue")
        given = _explicit_rledit_flags(args)
        if given:
            raise ValueError(
                f"--resume continues the checkpoint with its own settings; drop {', '.join(given)}"
            )
    elif held:
        hint = "--resume continues it, or pass" if own in held else "pass"
        raise ValueError(
            f"{args.out!r} holds {article[held[0]]} {name[held[0]]} checkpoint already; {hint} another "
            "--out (nothing was written)"
        )


def _resume_rledit(args: argparse.Namespace, env_kwargs: dict) -> int:
    """``train rledit --resume``: load the checkpoint in ``--out`` on its own candidates and train it
    until ``--sequences`` in total, saving as an uninterrupted run would."""
    import gymnasium as gym

    from agents.rledit import RLEditAgent
    from edit_gym.editing.hypernet import trained_candidates

    env = gym.make(args.env, candidates=trained_candidates(args.out), **env_kwargs)
    trained = _train_on(
        args, env, RLEditAgent, lambda agent: agent.sequences_trained, args.sequences, "sequences"
    )
    return _evaluate_trained(args) if trained else 0


def _finetune_low_level(args: argparse.Namespace, env_kwargs: dict) -> int:
    """``train rledit --masks-from HIEDIT_DIR``: one round of HiEdit's alternating fine-tuning."""
    from agents.alternating import finetune_low_level

    given = _explicit_rledit_flags(args)
    if given:
        raise ValueError(
            f"--masks-from continues the HiEdit checkpoint's low level with its own settings and "
            f"matrices; drop {', '.join(given)}"
        )
    out = finetune_low_level(
        args.masks_from,
        args.env,
        args.sequences,
        args.out,
        tb_log_dir=args.tensorboard,
        checkpoint_every=args.checkpoint_every,
        **env_kwargs,
    )
    print(f"wrote {out}; retrain the selector over it with")
    print(f"  edit-gym train hiedit --low-level {out} --env {args.env} ... --out DIR")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import edit_gym  # noqa: F401  registers the ids
    from agents.rledit import MODEL_DEFAULTS, RLEditAgent, default_config, training_band

    _check_out_folder(args)
    if args.agent == "hiedit":
        if args.masks_from:
            raise ValueError(
                "--masks-from goes with `train rledit` (it fine-tunes a HiEdit checkpoint's low level)"
            )
        code = _train_hiedit(args)
        return code or _evaluate_trained(args)
    given = _method_option_flags(args)
    if given:
        flags = ", ".join(map(_flag, given))
        raise ValueError(f"{flags}: options of `train hiedit` over a named method, not of `train rledit`")

    if args.sequences < 0 or args.edits_per_sequence < 1:
        raise ValueError("--sequences must be >= 0 (0: the untrained net) and --edits-per-sequence positive")
    if args.sequences == 0 and (args.masks_from or args.resume):
        raise ValueError(
            "--sequences 0 writes an untrained checkpoint; it does not go with --masks-from or --resume"
        )
    kwargs = {"num_edits": args.edits_per_sequence, "final_eval": False}
    if args.dataset:
        kwargs["dataset"] = args.dataset
    _announce(args.env)
    if args.masks_from:
        return _finetune_low_level(args, kwargs)
    if args.resume:
        return _resume_rledit(args, kwargs)
    env = gym.make(args.env, **kwargs)
    model = env.unwrapped.cfg.model
    names = env.unwrapped.candidate_names
    band = training_band(names, model, args.layers)
    if band is not None:
        env.close()
        env = gym.make(args.env, candidates=band, **kwargs)
        swept_band = "" if args.layers else f" (the swept band of {model}; --layers all for every one)"
        print(f"editing {len(band)} of {len(names)} candidates: {band[0]} .. {band[-1]}{swept_band}")
    flags = {field: getattr(args, dest) for dest, field in _RLEDIT_FLAGS.items()}
    swept = {k: v for k, v in MODEL_DEFAULTS.get(model, {}).items() if flags.get(k) is None}
    if swept:
        print(f"{model}: swept defaults (results/rledit/rledit_sweep_smollm2.md) for {swept}")
    explicit = {k: v for k, v in flags.items() if v is not None}
    config = default_config(model, seed=args.seed, **explicit)
    agent = RLEditAgent(env, config)
    if args.sequences:
        agent.learn(
            args.sequences,
            tb_log_dir=args.tensorboard,
            checkpoint_dir=args.out,
            checkpoint_every=args.checkpoint_every,
        )
    agent.save(args.out)
    untrained = ": the untrained identity net, the start that training is measured against"
    print(
        f"wrote {args.out} ({agent.sequences_trained} sequences{untrained if not args.sequences else ''}); use it with"
    )
    print(f"  edit-gym eval --agent rledit --checkpoint {args.out} --env {args.env} --edits N")
    print(f"  gym.make({args.env!r}, editor={agent.editor_spec(args.out)!r})")
    env.close()
    return _evaluate_trained(args)


EVAL_SEED = 10_000  # held-out stream seed for the evaluation that follows training


def _evaluate_trained(args: argparse.Namespace) -> int:
    """With --tensorboard: evaluate the new checkpoint on a held-out stream into TENSORBOARD/eval.

    The training run's TensorBoard folder then holds the whole layout: the training scalars and,
    from this evaluation, final metrics, histograms, the figures, sample edits and HParams.
    """
    if not args.tensorboard or args.eval_edits == 0:
        return 0

    from edit_gym.data.builtin import HELD_OUT_SPLIT

    dataset = args.eval_dataset or HELD_OUT_SPLIT.get(args.dataset, args.dataset)
    argv = ["eval", "--agent", args.agent, "--checkpoint", args.out, "--env", args.env]
    argv += ["--edits", str(args.eval_edits), "--seed", str(EVAL_SEED), "--no-extended"]
    argv += [
        "--retention-points",
        "5",
        "--samples",
        "3",
        "--tensorboard",
        str(Path(args.tensorboard) / "eval"),
    ]
    if dataset:
        argv += ["--dataset", dataset]
    evaluation = build_parser().parse_args(argv)  # the eval command's own defaults for the rest
    print(f"evaluating on {evaluation.edits} held-out edits (seed {EVAL_SEED}) into {evaluation.tensorboard}")
    return _cmd_eval(evaluation)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edit-gym", description="Lifelong model editing as RL environments."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    envs = sub.add_parser("envs", help="list the registered environment ids")
    envs.set_defaults(func=_cmd_envs)
    ckpts = sub.add_parser(
        "checkpoints", help="list the shipped checkpoints (name, what, digest, the command that made it)"
    )
    ckpts.set_defaults(func=_cmd_checkpoints)
    demo = sub.add_parser(
        "demo",
        help="the main job: train RLEdit briefly, then compare it with the rule it learns from on a "
        "held-out stream",
    )
    demo.add_argument(
        "--env",
        default="LifelongEdit-OneStep-v0",
        help="environment id (default: %(default)s, RLEdit's one-step world)",
    )
    demo.add_argument(
        "--agent",
        default="all",
        help=f"policy of the untrained-rule row: {', '.join(AGENT_CHOICES)} or module:Class "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--sequences",
        type=int,
        default=4,
        help="RLEdit training sequences (default: %(default)s; 0: no training, the untrained rule's "
        "and the baselines' rows only)",
    )
    demo.add_argument(
        "--edits-per-sequence", type=int, default=5, help="edits per training sequence (default: %(default)s)"
    )
    demo.add_argument(
        "--edits", type=int, default=20, help="held-out sequential edits (default: %(default)s)"
    )
    demo.add_argument("--seed", type=int, default=0, help="training and stream seed (default: %(default)s)")
    demo.add_argument(
        "--lr", type=float, help="RLEdit block learning rate (default: agents.demo.SHORT_RUN_RATES, 3e-3)"
    )
    demo.add_argument(
        "--scalar-lr",
        type=float,
        help="RLEdit per-matrix scalar learning rate (default: agents.demo.SHORT_RUN_RATES, 1e-2)",
    )
    demo.add_argument(
        "--baselines",
        nargs="*",
        default=["alphaedit"],
        help="faithful editors run under the band agent on the same stream (default: %(default)s; "
        "none: --baselines with no name)",
    )
    demo.add_argument(
        "--train-dataset",
        help="training requests (default: facts-train for the built-in facts, evaluated on facts-test)",
    )
    demo.add_argument(
        "--out",
        default="runs/demo",
        help="folder for the checkpoint (OUT/rledit) and each row's result file (default: %(default)s)",
    )
    demo.set_defaults(func=_cmd_demo)
    ev = sub.add_parser("eval", help="evaluate an agent over a seeded edit stream; print a table, write JSON")
    ev.add_argument(
        "--agent",
        required=True,
        help="baseline name, rledit (with --checkpoint), module:Class, or an SB3 .zip",
    )
    ev.add_argument("--checkpoint", help="checkpoint for the agent (passed to its load())")
    ev.add_argument("--env", default="LifelongEdit-v0", help="environment id (default: %(default)s)")
    ev.add_argument("--edits", type=int, required=True, help="sequential edits in the stream")
    ev.add_argument("--edits-per-step", type=int, default=1, help="requests per step (default: %(default)s)")
    ev.add_argument("--dataset", help="built-in name, local JSON file, or datasets source id[:split]")
    ev.add_argument(
        "--editor",
        help="update rule, a method (alphaedit, memit, rome, ...) or a one-step rule (ridge, covariance+nullspace)",
    )
    ev.add_argument("--seed", type=int, default=0, help="stream seed (default: %(default)s)")
    ev.add_argument("--no-extended", action="store_true", help="skip fluency and perplexity (faster)")
    ev.add_argument("--json", help="write the full result (config, protocol, curve) to this file")
    ev.add_argument(
        "--retention-points",
        type=int,
        default=10,
        help="measure every earlier edit at K evenly spaced steps, for the retention matrix (default: %(default)s; 0: off)",
    )
    ev.add_argument(
        "--samples",
        type=int,
        default=5,
        help="greedy outputs before/after on the first N prompts (default: %(default)s)",
    )
    ev.add_argument(
        "--wild", action="store_true", help="also score by generation (in the wild; edit_gym/wild.py, slower)"
    )
    ev.add_argument(
        "--reuse-before",
        nargs="?",
        const="results",
        metavar="RESULTS",
        help="take the pre-edit scores of the same stream (seed, data, length, model) from a run "
        "recorded in RESULTS/runs/ instead of computing them (default: %(const)s; on 839 edits they "
        "cost as much as the final evaluation)",
    )
    ev.add_argument(
        "--stream-checkpoint",
        metavar="DIR",
        help="save the stream in progress to DIR and, if DIR holds one of this run, continue it "
        "(removed once --json / --record is written)",
    )
    ev.add_argument(
        "--checkpoint-every",
        type=int,
        default=10,
        help="with --stream-checkpoint: steps between saves (default: %(default)s; also saved after the last edit)",
    )
    ev.add_argument(
        "--record",
        nargs="?",
        const="results",
        help="add the run to the leaderboard's store, RESULTS/runs/ (default: %(const)s)",
    )
    ev.add_argument("--plots", help="write the run's PNG figures to this folder")
    ev.add_argument("--tensorboard", help="write the run to this TensorBoard folder")
    ev.set_defaults(func=_cmd_eval)
    be = sub.add_parser(
        "bench",
        help="time env steps vs model passes, edits per editor, cost growth; print a table, write JSON",
    )
    be.add_argument(
        "--ids",
        nargs="+",
        default=["LifelongEdit-Tiny-v0", "LifelongEdit-v0"],
        help="env ids for the step-overhead table (default: %(default)s)",
    )
    be.add_argument("--model", default="tiny", help="model for the per-editor tables (default: %(default)s)")
    be.add_argument(
        "--dataset", default="facts", help="requests for the per-editor tables (default: %(default)s)"
    )
    be.add_argument(
        "--editors",
        nargs="+",
        default=["gradient", "ridge", "covariance", "covariance+nullspace"],
        help="editors to time",
    )
    be.add_argument(
        "--steps", type=int, default=10, help="timed steps per measurement (default: %(default)s)"
    )
    be.add_argument(
        "--cost-edits",
        type=int,
        default=0,
        help="also time steps at edit ~10 vs edit N=COST_EDITS per editor (e.g. 1000; default: off)",
    )
    be.add_argument(
        "--cost-window",
        type=int,
        default=50,
        help="steps timed at each end for --cost-edits (default: %(default)s)",
    )
    be.add_argument(
        "--vector",
        type=int,
        nargs="*",
        default=[1, 2, 4],
        help="peak memory of SyncVectorEnvs of these sizes per id, each in a fresh process "
        "(default: %(default)s; none to skip)",
    )
    be.add_argument("--seed", type=int, default=0)
    be.add_argument("--json", help="write every figure and the machine to this file")
    be.set_defaults(func=_cmd_bench)
    lb = sub.add_parser(
        "leaderboard",
        help="rebuild docs/results.md (and the README headline) from the recorded runs; add runs",
        description="With no arguments: rewrite the leaderboard page from the run records under "
        "results/runs/, byte for byte. `add FILE ...`: check result files (from eval --json) and "
        "record them first. `retag EDITOR TAG --where JSON`: file the runs of EDITOR whose recorded "
        "hyper-parameters match JSON under 'EDITOR (TAG)' (when an editor's defaults change).",
    )
    lb.add_argument("action", nargs="?", choices=["build", "add", "retag"], default="build")
    lb.add_argument("files", nargs="*", help="result files for `add`; EDITOR TAG for `retag`")
    lb.add_argument("--where", help="retag: the hyper-parameters of the runs to retag, e.g. '{\"L2\": 3.0}'")
    lb.add_argument("--results", default="results", help="results folder (default: %(default)s)")
    lb.add_argument("--page", default="docs/results.md", help="the page to write (default: %(default)s)")
    lb.add_argument("--readme", default="README.md", help="README whose headline block is updated")
    lb.add_argument("--check", action="store_true", help="write nothing; exit 1 if the page is out of date")
    lb.set_defaults(func=_cmd_leaderboard)
    cp = sub.add_parser(
        "compare",
        help="two runs of one stream side by side, and their paired edit-by-edit differences",
        description="Reads two result files of `edit-gym eval --json` on the same stream (same seed, "
        "data and length: checked) and prints their final scores and OTHER - BASE per score, the mean "
        "over edits of each edit's own final efficacy / specificity difference with its 95%% interval.",
    )
    cp.add_argument("base", help="result JSON of the reference run (e.g. an untrained agent)")
    cp.add_argument("other", help="result JSON of the run compared with it")
    cp.add_argument("--names", nargs=2, metavar=("BASE", "OTHER"), help="row names (default: file names)")
    cp.set_defaults(func=_cmd_compare)
    pl = sub.add_parser("plot", help="draw the PNG figures of an evaluation JSON (from eval --json)")
    pl.add_argument("run", help="evaluation JSON written by `edit-gym eval --json`")
    pl.add_argument("--out", help="folder for the PNGs (default: next to RUN, RUN_plots/)")
    pl.set_defaults(func=_cmd_plot)
    tr = sub.add_parser("train", help="train a learned editor (rledit) and write a checkpoint folder")
    tr.add_argument("agent", choices=("rledit", "hiedit"), help="what to train")
    tr.add_argument(
        "--trainer",
        choices=("ppo", "sb3", "maskable", "straight-through"),
        help="hiedit: trainer (default: ppo; with --resume, the checkpoint's)",
    )
    tr.add_argument(
        "--budget",
        type=int,
        help="hiedit: layer budget K, candidates per edit (maskable: the env's budget, default half; "
        "straight-through: top-K, default half)",
    )
    tr.add_argument(
        "--low-level", help="hiedit: the low-level rule, an RLEdit checkpoint folder or a rule name"
    )
    tr.add_argument(
        "--reference",
        choices=METHOD_OPTIONS["reference"],
        help="hiedit over a named method: the advantage reward's reference selection (default: all)",
    )
    tr.add_argument(
        "--target-block",
        choices=METHOD_OPTIONS["target_block"],
        help="hiedit over a named method: optimize the target at the selection's top block (default) "
        "or at the band's top, so a partial selection is compared with the whole band (docs/hiedit.md)",
    )
    tr.add_argument(
        "--timesteps",
        type=int,
        default=1024,
        help="hiedit: env steps to train (with --resume: in total; default: %(default)s)",
    )
    tr.add_argument(
        "--env",
        default="LifelongEdit-OneStep-v0",
        help="environment id (default: %(default)s, the one-step rule)",
    )
    tr.add_argument("--dataset", help="training data: built-in name, local JSON file, or datasets source")
    tr.add_argument(
        "--sequences",
        type=int,
        default=50,
        help="rledit: training sequences (0: write the untrained net, the ablation's start; default: %(default)s)",
    )
    tr.add_argument(
        "--edits-per-sequence",
        type=int,
        default=10,
        help="sequential edits per sequence (default: %(default)s)",
    )
    tr.add_argument("--window", type=int, help="backtracking window k (default: 10" + _SWEPT)
    tr.add_argument("--c-loc", type=float, help="locality KL weight (default: 0.6" + _SWEPT)
    tr.add_argument(
        "--locality-reference",
        choices=("previous", "pristine"),
        help="KL to the model before each edit (paper) or before the sequence (default: previous" + _SWEPT,
    )
    tr.add_argument("--discount", type=float, help="rledit: discount over the sequence (default: 1.0)")
    tr.add_argument("--lr", type=float, help="rledit: Adam learning rate (default: 1e-4" + _SWEPT)
    tr.add_argument(
        "--scalar-lr",
        type=float,
        help="rledit: learning rate of the per-matrix log step and log ridge strength (default: 1e-2"
        + _SWEPT,
    )
    tr.add_argument(
        "--layers",
        help="rledit: train on a band of the default candidates, START:STOP (e.g. 8:16), or all; "
        "the checkpoint then edits that band (default: all candidates; a model with a swept band, "
        "e.g. smollm2-135m, uses it: agents/rledit.py MODEL_BANDS)",
    )
    tr.add_argument("--rank", type=int, help="hypernet block rank (default: 32" + _SWEPT)
    tr.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    tr.add_argument(
        "--tensorboard",
        help="write TensorBoard logs to this folder (training, then a held-out evaluation under eval/)",
    )
    tr.add_argument(
        "--eval-edits",
        type=int,
        default=20,
        help="with --tensorboard: edits of the held-out evaluation after training (default: %(default)s; 0: none)",
    )
    tr.add_argument(
        "--eval-dataset",
        help="data of that evaluation (default: facts-test after facts-train, else the training data)",
    )
    tr.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="also save to --out every N sequences (rledit) or env steps (hiedit); an interrupted "
        "run keeps its last whole checkpoint (default: only at the end)",
    )
    tr.add_argument(
        "--masks-from",
        metavar="HIEDIT_DIR",
        help="rledit: fine-tune a HiEdit checkpoint's RLEdit low level on the masks its selector "
        "picks (HiEdit's alternating fine-tuning; then retrain the selector with --low-level OUT)",
    )
    tr.add_argument(
        "--resume",
        action="store_true",
        help="continue the checkpoint in --out with its own settings and optimizer: rledit until it "
        "has trained --sequences in total (its sequence draw too: as if never stopped), hiedit until "
        "--timesteps env steps (on fresh episodes)",
    )
    tr.add_argument(
        "--out",
        required=True,
        help="checkpoint folder to write (refused if it holds a checkpoint already, unless --resume)",
    )
    tr.set_defaults(func=_cmd_train)
    return parser


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from edit_gym import leaderboard

    runs = Path(args.results) / "runs"
    if args.action in ("add", "retag") and args.check:
        raise ValueError(f"--check only reads the page; it does not go with `leaderboard {args.action}`")
    if args.action == "add":
        if not args.files:
            raise ValueError("leaderboard add needs the result files to add (from edit-gym eval --json)")
        for path in leaderboard.add(args.files, runs):
            print(f"recorded {path}")
    elif args.action == "retag":
        if len(args.files) != 2 or not args.where:
            raise ValueError("usage: edit-gym leaderboard retag EDITOR TAG --where JSON")
        try:
            where = json.loads(args.where)
        except json.JSONDecodeError as err:
            raise ValueError(f"--where is not JSON: {err}") from None
        if not isinstance(where, dict):
            raise ValueError("--where must be a JSON object of hyper-parameters")
        moved = leaderboard.retag(runs, args.files[0], args.files[1], where)
        for old, new in moved:
            print(f"{old} -> {new}")
        print(f"retagged {len(moved)} run(s)")
    elif args.files:
        raise ValueError(f"unexpected files {args.files}: did you mean `edit-gym leaderboard add FILE ...`?")
    changed = leaderboard.build(
        runs, args.page, readme=args.readme, figures=Path(args.results) / "leaderboard", check=args.check
    )
    if args.check:
        if changed:
            print(f"out of date: {', '.join(changed)} (run `edit-gym leaderboard`)")
            return 1
        print(f"{args.page} is what the records under {runs} give")
        return 0
    print(f"wrote {', '.join(changed)}" if changed else f"{args.page} was up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "edits", 1) < 1:
        parser.error("--edits must be a positive integer")
    if getattr(args, "eval_edits", 0) < 0:
        parser.error("--eval-edits must be >= 0")
    if getattr(args, "retention_points", 0) < 0 or getattr(args, "samples", 0) < 0:
        parser.error("--retention-points and --samples must be >= 0")
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        print(f"edit-gym: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
