"""One TensorBoard tag layout for every producer: SB3 callbacks, the custom PPO, RLEdit and HiEdit
training, and ``edit-gym eval --tensorboard``.

Runs from different trainers then line up in one TensorBoard window. The layout:

=============================  ==========================================================
``reward/<term>``              reward terms of an env step (total, edit, locality, sparsity)
``edit/immediate_<metric>``    efficacy, specificity, KL, post-edit loss right after an edit
``edit/final_<metric>``        scores after the whole stream (evaluation runs)
``action/mask_density``        fraction of candidate matrices an action edits
``action/coef_magnitude``      mean |coefficient| over the edited matrices
``layers/edited_candidate``    histogram of the candidate indices edited
``layers/edits_per_candidate`` histogram of how often each candidate was edited (per run)
``plots/<figure>``             images: mask heatmap, retention matrix, efficacy vs edits
``samples/edits``              text table: prompt, target, output before / after
HParams                        the run's env config and agent, with its final metrics
=============================  ==========================================================

Algorithm internals keep CleanRL's / SB3's own tags (``losses/*``, ``charts/*``, ``train/*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

STEP_TAGS = {
    "reward/edit": "reward_edit",
    "reward/locality": "reward_locality",
    "reward/sparsity": "reward_sparsity",
    "edit/immediate_efficacy": "efficacy",
    "edit/immediate_specificity": "specificity",
    "edit/immediate_kl": "kl",
    "edit/immediate_edit_loss": "edit_loss_after",
    "action/mask_density": "touched_fraction",
    "action/coef_magnitude": "coef_magnitude",
}
FINAL_METRICS = (
    "efficacy",
    "generalization",
    "specificity",
    "new_vs_true",
    "retention_first_n",
    "fluency",
    "perplexity",
)
PLOT_TAGS = ("plots/mask_heatmap", "plots/retention_matrix", "plots/efficacy_vs_edits")
SAMPLES_TAG = "samples/edits"
HISTOGRAM_TAGS = ("layers/edited_candidate", "layers/edits_per_candidate")


def step_scalars(info: Mapping[str, Any], reward: float | None = None) -> dict[str, float]:
    """The layout's scalars of one env step, from its ``info`` (and its reward, when given)."""
    out = {tag: float(info[key]) for tag, key in STEP_TAGS.items() if key in info}
    if reward is not None:
        out["reward/total"] = float(reward)
    return out


class StepAverager:
    """Collects :func:`step_scalars` over a rollout; ``flush`` gives the means and starts over."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, info: Mapping[str, Any], reward: float | None = None) -> None:
        for tag, value in step_scalars(info, reward).items():
            self._sums[tag] = self._sums.get(tag, 0.0) + value
            self._counts[tag] = self._counts.get(tag, 0) + 1

    def add_vector(self, infos: Mapping[str, Any], rewards: np.ndarray, active: np.ndarray) -> None:
        """Add the steps of a vector env (Gymnasium's dict-of-arrays ``infos``) whose ``active`` is true."""
        for i in np.flatnonzero(active):
            info = {
                key: infos[key][i]
                for key in STEP_TAGS.values()
                if key in infos and infos.get(f"_{key}", np.ones(len(active), bool))[i]
            }
            self.add(info, float(rewards[i]))

    def flush(self) -> dict[str, float]:
        out = {tag: self._sums[tag] / self._counts[tag] for tag in self._sums}
        self._sums, self._counts = {}, {}
        return out


def samples_markdown(rows: list[dict]) -> str:
    """The sample-edits text table (Markdown, which TensorBoard renders)."""
    if not rows:
        return "(no samples recorded)"

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["|prompt|target (new)|target (true)|output before|output after|", "|-|-|-|-|-|"]
    for r in rows:
        values = (r["prompt"], r["target_new"], r["target_true"], r["output_before"], r["output_after"])
        lines.append("|" + "|".join(cell(v) for v in values) + "|")
    return "\n".join(lines)


def _hparam_values(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """HParams accept bool, int, float and str: other values become their string form."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, bool | int | float | str):
            out[f"{prefix}{key}"] = value
        elif value is not None:
            out[f"{prefix}{key}"] = str(value)
    return out


def log_hparams(writer, params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """The run's HParams summary (in the run's own folder, so TensorBoard pairs it with its scalars)."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    writer.add_hparams(_hparam_values(params), clean or {"hparam/none": 0.0}, run_name=".")


def _hparams(result: dict) -> dict[str, Any]:
    return {
        "agent": str(result.get("agent", "?")),
        "seed": int(result.get("seed", 0)),
        **_hparam_values(result.get("config", {}), "env/"),
    }


def log_run(writer, result: dict, *, images: bool = True) -> None:
    """Write one evaluation run (a :func:`edit_gym.runner.run_episode` result) with the layout.

    ``writer`` is a ``torch.utils.tensorboard.SummaryWriter``. Per-step scalars use the edit index
    as the global step; final scores, histograms, images and the samples table sit at the last edit.
    """
    curve = result.get("curve") or []
    n = len(result.get("candidate_names") or [])
    for step in curve:
        for tag, value in step_scalars(
            {**step, "touched_fraction": step["layers_touched"] / max(n, 1)}, step["reward"]
        ).items():
            writer.add_scalar(tag, value, step["edit_index"])
    last = int(result.get("edits", 0))
    final = result.get("final") or {}
    for metric in FINAL_METRICS:
        if metric in final:
            writer.add_scalar(f"edit/final_{metric}", float(final[metric]), last)
    edited = [j for step in curve for j in step.get("edited_candidates", [])]
    if edited:
        writer.add_histogram("layers/edited_candidate", np.asarray(edited, dtype=np.float64), last)
        counts = np.bincount(np.asarray(edited), minlength=n).astype(np.float64)
        writer.add_histogram("layers/edits_per_candidate", counts, last)
    if images:
        from edit_gym.plots import FIGURES, render_rgb

        for name in FIGURES:
            writer.add_image(f"plots/{name}", render_rgb(result, name), last, dataformats="HWC")
    writer.add_text(SAMPLES_TAG, samples_markdown(result.get("samples") or []), last)
    log_hparams(
        writer, _hparams(result), {f"hparam/final_{m}": final[m] for m in FINAL_METRICS if m in final}
    )
    writer.flush()
