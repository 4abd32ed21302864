"""Run one agent over one seeded edit stream and collect every number an evaluation reports.

The agent is anything with SB3's ``predict(obs, deterministic=True) -> (action, state)``. The
result is a plain JSON-able dict: configuration, seed, protocol, the pre-edit scores, the
immediate scores (mean over steps, read right after each edit), the final scores (after the
whole stream), layers touched per edit, seconds per edit, and the per-step curve.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edit_gym.evaluation import FIRST_N, PROTOCOL

CURVE_KEYS = (
    "reward",
    "reward_edit",
    "reward_locality",
    "reward_sparsity",
    "edit_loss_before",
    "edit_loss_after",
    "efficacy",
    "specificity",
    "kl",
    "layers_touched",
)


TARGET_KEYS = ("target_layer", "target_nll", "target_steps", "target_seconds")  # named methods' steps


def run_episode(
    env: Any,
    agent: Any,
    seed: int,
    *,
    extended: bool = True,
    progress: bool = True,
    before: dict | None = None,
    retention_points: int = 0,
    samples: int = 0,
    wild: bool = False,
    per_edit: bool = False,
    options: dict | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
) -> dict:
    """One episode of ``agent`` on ``env`` (a Gymnasium env of this package, wrapped or not).

    ``before`` may pass the pre-edit scores of the same stream from an earlier run (same model,
    dataset, length and seed) to skip recomputing them. ``retention_points=K`` measures every edit
    made so far at K evenly spaced steps (the last one after the stream): row r of
    ``result["retention"]["efficacy"]`` holds edit i's efficacy after edit
    ``result["retention"]["after_edit"][r]``. ``samples=S`` records the greedy outputs on the
    first S prompts before and after the stream. ``wild=True`` adds the generation-based scores
    (``wild_*``, :mod:`edit_gym.wild`) before and after. ``per_edit=True`` records each edit's own
    final efficacy and specificity (``result["final_per_edit"]``, stream order), for paired
    comparisons of two runs on the same stream. None of these changes the edits, only adds
    passes. ``options`` go to ``env.reset`` (e.g. ``{"stream": [...]}``, a fixed request order).

    ``checkpoint`` names a folder for a stream checkpoint (:meth:`LifelongEditEnv.save_episode`):
    written every ``checkpoint_every`` steps and once after the last edit (before the final
    evaluation), with everything measured so far. If the folder already holds one of this run
    (same env configuration, seed and options of this call), the episode continues from it, and
    the result equals an uninterrupted run's except for the timings (``result["resumed_at"]``
    lists the edit counts it resumed at). An agent that keeps state between steps must offer
    ``episode_state()`` / ``load_episode_state(state)`` for that to hold (the baselines do). The
    caller removes the folder once the result is safe.
    """
    if retention_points < 0 or samples < 0:
        raise ValueError(f"retention_points and samples must be >= 0, got {retention_points}, {samples}")
    if checkpoint_every < 0 or (checkpoint_every and checkpoint is None):
        raise ValueError(
            f"checkpoint_every must be >= 0 and needs a checkpoint folder, got {checkpoint_every}"
        )
    from edit_gym.wild import WILD_PROTOCOL

    inner = env.unwrapped
    obs, _ = env.reset(seed=seed, options=options)
    run = {  # what must match for a checkpoint to continue this call
        "seed": seed,
        "extended": extended,
        "wild": wild,
        "retention_points": retention_points,
        "samples": samples,
        "per_edit": per_edit,
        "options": _jsonable(options),
        "agent": type(agent).__name__,
    }
    saved = _resume(env, agent, checkpoint, run) if checkpoint is not None else None
    if saved is not None:
        obs, progress_so_far = saved
        before, outputs_before = progress_so_far["before"], progress_so_far["outputs_before"]
        eval_seconds, retention = progress_so_far["eval_seconds"], progress_so_far["retention"]
        curve = progress_so_far["curve"]
        resumed_at = [*progress_so_far["resumed_at"], curve[-1]["edit_index"] if curve else 0]
        seconds, cpu_seconds = progress_so_far["seconds"], progress_so_far["cpu_seconds"]
        info = {"fault": progress_so_far["fault"]}
        terminated = not inner._ready
    else:
        eval_seconds: dict[str, float] = {}
        if before is None:
            start = time.perf_counter()
            before = inner.evaluate("stream", extended=extended, wild=wild, progress=progress)
            eval_seconds["before"] = time.perf_counter() - start
        outputs_before = inner.sample_outputs(samples) if samples else []
        retention: dict[str, list] = {"after_edit": [], "efficacy": []}
        curve: list[dict] = []
        resumed_at: list[int] = []
        seconds = cpu_seconds = 0.0
        terminated = False
    steps, steps_at_start = inner.num_steps, len(curve)
    checkpoints = {-(-r * steps // retention_points) for r in range(1, retention_points + 1)}

    def save() -> None:
        extra = {
            "before": before,
            "outputs_before": outputs_before,
            "eval_seconds": eval_seconds,
            "retention": retention,
            "curve": curve,
            "resumed_at": resumed_at,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "fault": info.get("fault", "") if curve else "",
        }
        if hasattr(agent, "episode_state"):
            extra["agent_state"] = agent.episode_state()
        inner.save_episode(checkpoint, extra, tag=run)

    with tqdm(
        total=inner.num_steps,
        initial=len(curve),
        desc="editing",
        unit="step",
        disable=not progress,
        leave=False,
    ) as bar:
        while not terminated:
            action, _ = agent.predict(obs, deterministic=True)
            start, cpu_start = time.perf_counter(), time.process_time()
            obs, reward, terminated, _, info = env.step(action)
            step_seconds = time.perf_counter() - start
            seconds += step_seconds
            cpu_seconds += time.process_time() - cpu_start
            curve.append(
                {
                    "edit_index": info["edit_index"],
                    "seconds": step_seconds,
                    **{k: float(info[k] if k != "reward" else reward) for k in CURVE_KEYS},
                    "edited_candidates": list(info["edited_candidates"]),
                    "coef_magnitude": float(info["coef_magnitude"]),
                    **{k: float(info[k]) for k in TARGET_KEYS if k in info},
                }
            )
            if len(curve) in checkpoints or (retention_points and info.get("fault")):
                retention["after_edit"].append(info["edit_index"])
                retention["efficacy"].append(inner.edit_efficacies())
            bar.update(1)
            bar.set_postfix(eff=f"{info['efficacy']:.2f}", loss=f"{info['edit_loss_after']:.2f}")
            if info.get("fault"):
                break
            if checkpoint_every and len(curve) % checkpoint_every == 0 and not terminated:
                save()
    if checkpoint is not None and (saved is None or len(curve) > steps_at_start):
        save()  # the edits are done: a stopped final evaluation restarts from here
    start = time.perf_counter()
    final = inner.evaluate("edited", extended=extended, wild=wild, progress=progress)
    eval_seconds["final"] = time.perf_counter() - start
    edits = curve[-1]["edit_index"] if curve else 0
    final_per_edit = None
    if per_edit:  # a retention row taken after the last edit already holds the final efficacies
        after_last = retention["after_edit"] and retention["after_edit"][-1] == edits
        final_per_edit = {
            "efficacy": retention["efficacy"][-1] if after_last else inner.edit_efficacies(),
            "specificity": inner.edit_specificities(),
        }
    outputs_after = inner.sample_outputs(samples) if samples else []
    sample_rows = [
        {
            **{k: v for k, v in b.items() if k != "output"},
            "output_before": b["output"],
            "output_after": a["output"],
        }
        for b, a in zip(outputs_before, outputs_after, strict=True)
    ]
    return {
        "config": asdict(inner.cfg),
        "env_id": inner.spec.id if inner.spec else None,
        "seed": seed,
        "protocol": {
            **PROTOCOL,
            **(WILD_PROTOCOL if wild else {}),
            "retention_first_n": f"final efficacy of the first {FIRST_N} edits",
            "timings": ["immediate", "final"],
        },
        "edits": edits,
        "before": before,
        "immediate": {
            k: float(np.mean([c[k] for c in curve])) for k in ("efficacy", "specificity", "kl", "reward")
        },
        "final": final,
        "layers_touched_per_edit": float(np.mean([c["layers_touched"] for c in curve]))
        / inner.cfg.edits_per_step,
        "touched_fraction": float(np.mean([c["layers_touched"] for c in curve])) / inner.num_candidates,
        "seconds_per_edit": seconds / max(edits, 1),
        # CPU time of this process (all its threads): unlike the wall time, not inflated by other
        # jobs sharing the machine or by a paused run
        "cpu_seconds_per_edit": cpu_seconds / max(edits, 1),
        "evaluation_seconds": eval_seconds,  # wall time of the before / final evaluations
        **({"resumed_at": resumed_at} if resumed_at else {}),
        **({"final_per_edit": final_per_edit} if final_per_edit is not None else {}),
        "fault": info.get("fault", "") if curve else "",
        "candidate_names": list(inner.candidate_names),
        # a named method's resolved hyper-parameters (the leaderboard never pools two sets)
        "params": dict(inner.method.params) if inner.method is not None else {},
        "curve": curve,
        "retention": retention,
        "samples": sample_rows,
    }


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _resume(env: Any, agent: Any, checkpoint: str | Path, run: dict) -> tuple[dict, dict] | None:
    """The observation and the saved progress of ``checkpoint`` if it holds this run, else None."""
    from edit_gym.episode_file import META_FILE, EpisodeFileError, read_info

    folder = Path(checkpoint)
    if not (folder / META_FILE).exists():
        return None
    recorded = read_info(folder).get("tag")
    if recorded != run:
        theirs = recorded or {}
        diff = ", ".join(f"{k}={theirs.get(k)!r} (now {run[k]!r})" for k in run if theirs.get(k) != run[k])
        raise EpisodeFileError(f"{str(folder)!r} is a checkpoint of another run: {diff}")
    obs, extra = env.unwrapped.load_episode(folder)
    if "agent_state" in extra:
        agent.load_episode_state(extra["agent_state"])
    return obs, extra


TABLE_METRICS = ("efficacy", "generalization", "specificity", "new_vs_true", "retention_first_n")


def _score_cells(values: dict) -> str:
    cells = "".join(f"{100 * values[m]:>17.1f}%" if m in values else f"{'-':>18}" for m in TABLE_METRICS)
    return cells + "".join(
        f"{values[m]:>9.2f}" if m in values else f"{'-':>9}" for m in ("fluency", "perplexity")
    )


def _score_header(width: int) -> str:
    return f"{'':<{width}}" + "".join(f"{m:>18}" for m in TABLE_METRICS) + f"{'fluency':>9}{'ppl':>9}"


def results_table(result: dict) -> str:
    """Before / immediate / final rows of one run, as text."""
    head = _score_header(10)
    lines = [head, "-" * len(head)]
    for row in ("before", "immediate", "final"):
        lines.append(f"{row:<10}{_score_cells(result[row])}")
    lines.append(
        f"{result['edits']} edits; {result['layers_touched_per_edit']:.2f} candidates touched per edit "
        f"({100 * result['touched_fraction']:.0f}%); {result['seconds_per_edit']:.3f} s per edit"
    )
    return "\n".join(lines)


def comparison_table(results: dict[str, dict]) -> str:
    """Several runs of one stream: the pre-edit scores once, then each run's scores after the stream."""
    width = max(len("before the stream"), *(len(name) for name in results)) + 2
    head = _score_header(width) + f"{'touched':>9}{'s/edit':>8}"
    lines = [head, "-" * len(head)]
    first = next(iter(results.values()))
    lines.append(f"{'before the stream':<{width}}{_score_cells(first['before'])}")
    for name, result in results.items():
        lines.append(
            f"{name:<{width}}{_score_cells(result['final'])}"
            f"{100 * result['touched_fraction']:>8.0f}%{result['seconds_per_edit']:>8.2f}"
        )
    return "\n".join(lines)
