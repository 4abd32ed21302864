"""The README's main job: a short train-and-evaluate on one env, printed as one results table.

``edit-gym demo`` runs two editors on one held-out stream (same requests, same order, same
starting weights):

1. the untrained rule the net learns from (the env's ``editor``, ridge by default) under a
   baseline policy (``all`` candidates by default), on the same candidates as the net;
2. the RLEdit hypernetwork after a few training sequences on the env's training requests
   (``editor="rledit:OUT/rledit"``), acting with every candidate.

Both are scored before the stream and after it, and each row's full result is saved as a result
file (``edit-gym plot OUT/rledit.json``). Nothing here is tuned for the demo: the net trains with
the model's swept defaults (``agents.rledit.MODEL_DEFAULTS`` / ``MODEL_BANDS``), and whichever row is
better is what the table shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edit_gym.data.builtin import HELD_OUT_SPLIT

# evaluation data -> training data with no request in common; all built-in facts -> their held-out part
TRAINING_SPLIT = {held_out: train for train, held_out in HELD_OUT_SPLIT.items()}
EVAL_SPLIT = {"facts": HELD_OUT_SPLIT["facts-train"]}


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
    progress_bar: bool = True,
    **env_kwargs: Any,
) -> DemoRun:
    """Train RLEdit briefly (``sequences=0``: skip it), evaluate it and the baseline; see the module doc."""
    import time

    import gymnasium as gym

    import edit_gym  # noqa: F401  registers the ids
    from agents.registry import check_agent_spec, resolve_agent
    from agents.rledit import RLEditAgent, default_config, training_band
    from edit_gym.result_file import save_result
    from edit_gym.runner import run_episode

    check_agent_spec(agent)
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
        try:
            result = run_episode(env, resolve_agent(policy, env), seed, before=before, progress=progress_bar)
        finally:
            env.close()
        result["agent"] = name
        run.rows[name] = result
        print(f"wrote {save_result(result, run.out / file)}")
        return result

    # the training env first and the rule's row next: bad data or a too-long stream fails before training
    train_env = make(edits_per_sequence, run.train_dataset) if sequences else None
    baseline = evaluate(f"{rule}, {agent} (untrained)", agent, "baseline.json", None)
    if train_env is None:
        return run
    checkpoint = run.out / "rledit"
    if run.candidates is not None:
        print(f"training on {len(run.candidates)} of {len(names)} candidates (the swept band of {model})")
    started = time.perf_counter()
    trained = RLEditAgent(train_env, default_config(model, seed=seed))
    trained.learn(sequences, progress_bar=progress_bar)
    run.train_seconds = time.perf_counter() - started
    run.sequences = trained.sequences_trained
    trained.save(checkpoint)
    train_env.close()
    print(
        f"wrote {checkpoint} ({sequences} sequences of {edits_per_sequence} edits, {run.train_seconds:.0f} s)"
    )
    # the same stream and starting weights: the pre-edit scores carry over
    evaluate(
        f"rledit, all ({run.sequences} seq)",
        "all",
        "rledit.json",
        baseline["before"],
        editor=f"rledit:{checkpoint}",
    )
    return run
