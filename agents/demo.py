"""The README's main job: a short train-and-evaluate on one env, printed as one results table.

``edit-gym demo`` runs, on one held-out stream (same requests, same order, same starting weights):

1. the untrained rule the net learns from (the env's ``editor``, ridge by default) under a
   baseline policy (``all`` candidates by default), on the same candidates as the net;
2. each faithful editor of ``baselines`` (``alphaedit``: ``LifelongEdit-v0``'s default) under the
   ``band`` agent on the env's default candidates: what a real optimizing editor does on that stream;
3. every RLEdit checkpoint shipped with the package for the env's model (``edit-gym checkpoints``),
   on the matrices it was trained on;
4. the RLEdit hypernetwork after a short training run on the env's training requests
   (``editor="rledit:OUT/rledit"``), acting with every candidate.

All are scored before the stream and after it, and each row's full result is saved as a result
file (``edit-gym plot OUT/rledit.json``). The net trains with the model's swept defaults
(``agents.rledit.MODEL_DEFAULTS`` / ``MODEL_BANDS``) except its two learning rates, which are
:data:`SHORT_RUN_RATES`: the swept ones are for runs of 40+ updates and move a 4-update net by
about 0.1%, which no score can show. :func:`edit_gym.stats.paired_effect` says what training changed, edit by
edit, with its 95% interval; whichever row is better is what the table shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edit_gym.data.builtin import HELD_OUT_SPLIT

# evaluation data -> training data with no request in common; all built-in facts -> their held-out part
TRAINING_SPLIT = {held_out: train for train, held_out in HELD_OUT_SPLIT.items()}
EVAL_SPLIT = {"facts": HELD_OUT_SPLIT["facts-train"]}

# The demo's training step sizes (blocks, per-matrix scalars): large enough that a few Adam updates
# move the net (measured in docs/rledit.md, "The demo's short run"); a full run keeps the swept ones.
SHORT_RUN_RATES = {"learning_rate": 3e-3, "scalar_learning_rate": 1e-2}


@dataclass
class DemoRun:
    """What the demo did: where it wrote, how it trained, and one full result per table row."""

    env_id: str
    seed: int
    out: Path
    train_dataset: str | None = None
    eval_dataset: str = ""
    candidates: list[str] | None = None
    sequences: int = 0
    train_seconds: float = 0.0
    rows: dict[str, dict] = field(default_factory=dict)
    untrained: str = ""  # the names of the rows training is judged by: start and end
    trained: str = ""


def split_datasets(env_dataset: str, train_dataset: str | None) -> tuple[str | None, str]:
    """(training data, evaluation data) for an env whose requests come from ``env_dataset``."""
    eval_dataset = EVAL_SPLIT.get(env_dataset, env_dataset)
    train = train_dataset or TRAINING_SPLIT.get(eval_dataset)
    if train is None:
        raise ValueError(
            f"the env's data {env_dataset!r} has no built-in training split; give --train-dataset "
            "(requests that share none with the evaluation data), or --sequences 0 for the baseline only"
        )
    if train == eval_dataset:
        raise ValueError(f"--train-dataset {train!r} is the evaluation data; training must not see it")
    return train, eval_dataset


def run_demo(
    env_id: str = "LifelongEdit-v0",
    *,
    agent: str = "all",
    sequences: int = 4,
    edits_per_sequence: int = 5,
    edits: int = 20,
    seed: int = 0,
    out: str | Path = "runs/demo",
    train_dataset: str | None = None,
    baselines: Sequence[str] = ("alphaedit",),
    include_shipped: bool = True,
    train_overrides: dict[str, Any] | None = None,
    progress_bar: bool = True,
    **env_kwargs: Any,
) -> DemoRun:
    """Train RLEdit briefly (``sequences=0``: skip it), evaluate it, the untrained rule and the faithful
    ``baselines`` (editor names; ``()``: none) and, with ``include_shipped``, every shipped RLEdit
    checkpoint of the env's model (:func:`shipped_for`); see the module doc. ``train_overrides`` replace
    :data:`SHORT_RUN_RATES` and any other :class:`~agents.rledit.RLEditConfig` field."""
    import time

    import gymnasium as gym

    import edit_gym  # noqa: F401  registers the ids
    from agents.registry import check_agent_spec, resolve_agent
    from agents.rledit import RLEditAgent, default_config, training_band
    from edit_gym.editing.methods import METHODS
    from edit_gym.result_file import save_result
    from edit_gym.runner import run_episode

    check_agent_spec(agent)
    unknown = [name for name in baselines if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown faithful editor(s) {unknown} for the demo; choose from {sorted(METHODS)}")
    if sequences < 0 or edits_per_sequence < 1 or edits < 1:
        raise ValueError(
            f"need sequences >= 0, edits_per_sequence >= 1 and edits >= 1; got {sequences}, "
            f"{edits_per_sequence}, {edits}"
        )
    probe = gym.make(env_id, num_edits=1, final_eval=False, **env_kwargs)
    inner = probe.unwrapped
    model, dataset, names, rule = inner.cfg.model, inner.cfg.dataset, inner.candidate_names, inner.cfg.editor
    probe.close()
    run = DemoRun(env_id=env_id, seed=seed, out=Path(out))
    if sequences:
        run.train_dataset, run.eval_dataset = split_datasets(dataset, train_dataset)
        run.candidates = training_band(names, model)
    else:
        run.eval_dataset = EVAL_SPLIT.get(dataset, dataset)
    common = {**env_kwargs, "final_eval": False}
    if run.candidates is not None:
        common["candidates"] = run.candidates

    def make(num_edits: int, data: str, **extra: Any):
        return gym.make(env_id, **{**common, "num_edits": num_edits, "dataset": data, **extra})

    def evaluate(name: str, policy: str, file: str, before: dict | None, **extra: Any) -> dict:
        env = make(edits, run.eval_dataset, **extra)
        try:  # per_edit: every edit's own final efficacy and specificity, for paired_effect
            result = run_episode(
                env,
                resolve_agent(policy, env),
                seed,
                before=before,
                progress=progress_bar,
                retention_points=1,
                per_edit=True,
            )
        finally:
            env.close()
        result["agent"] = name
        run.rows[name] = result
        print(f"wrote {save_result(result, run.out / file)}")
        return result

    # the training env first and the rule's row next: bad data or a too-long stream fails before training
    train_env = make(edits_per_sequence, run.train_dataset) if sequences else None
    run.untrained = f"{rule}, {agent} (untrained)"
    baseline = evaluate(run.untrained, agent, "baseline.json", None)
    for editor in baselines:  # the same stream: its pre-edit scores carry over; the method's own band
        evaluate(
            f"{editor}, band (faithful)",
            "band",
            f"{editor}.json",
            baseline["before"],
            editor=editor,
            candidates=None,
        )
    for entry in shipped_for(model) if include_shipped else []:  # on the matrices each was trained on
        evaluate(
            f"{entry.name}, all (shipped)",
            "all",
            f"{entry.name}.json",
            baseline["before"],
            editor=f"rledit:{entry.name}",
            candidates=None,
        )
    if train_env is None:
        return run
    checkpoint = run.out / "rledit"
    if run.candidates is not None:
        print(f"training on {len(run.candidates)} of {len(names)} candidates (the swept band of {model})")
    started = time.perf_counter()
    trained = RLEditAgent(
        train_env, default_config(model, seed=seed, **{**SHORT_RUN_RATES, **(train_overrides or {})})
    )
    trained.learn(sequences, progress_bar=progress_bar)
    run.train_seconds = time.perf_counter() - started
    run.sequences = trained.sequences_trained
    trained.save(checkpoint)
    train_env.close()
    print(
        f"wrote {checkpoint} ({sequences} sequences of {edits_per_sequence} edits, {run.train_seconds:.0f} s)"
    )
    # the same stream and starting weights: the pre-edit scores carry over
    run.trained = f"rledit, all ({run.sequences} seq)"
    evaluate(
        run.trained,
        "all",
        "rledit.json",
        baseline["before"],
        editor=f"rledit:{checkpoint}",
    )
    return run


def shipped_for(model: str) -> list:
    """The shipped RLEdit checkpoints trained on ``model`` (:mod:`edit_gym.shipped`), in index order."""
    from edit_gym.shipped import shipped_checkpoints

    return [e for e in shipped_checkpoints() if e.kind == "rledit" and e.model == model]
