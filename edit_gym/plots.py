"""The three figures of an evaluation run, drawn from its JSON (``edit-gym eval --json``).

* ``mask_heatmap``: candidates x edits, which matrices each step edited (darker = larger
  coefficient magnitude): where an agent writes, and whether it spreads or concentrates.
* ``retention_matrix``: edit i's efficacy measured after edit j (rows: the measurement points of
  ``--retention-points``), the picture of forgetting in lifelong editing.
* ``efficacy_vs_edits``: immediate efficacy and specificity per step (running mean), and each
  edit's efficacy at the end of the stream, against the edit index.

Plots are what people look at first, so each is labelled with the run (env, agent, editor, seed).
matplotlib is imported only when a figure is drawn, with the non-interactive Agg backend.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

FIGURES = ("mask_heatmap", "retention_matrix", "efficacy_vs_edits")


def _title(result: dict, what: str) -> str:
    cfg = result.get("config", {})
    return (
        f"{what}\n{result.get('env_id') or cfg.get('model', '?')} | agent {result.get('agent', '?')} | "
        f"editor {cfg.get('editor', '?')} | seed {result.get('seed', '?')}"
    )


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) == 0:
        return values
    window = max(1, min(window, len(values)))
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def mask_matrix(result: dict) -> np.ndarray:
    """(candidates, steps) array: the step's coefficient magnitude + 1 where edited, 0 elsewhere."""
    names = result.get("candidate_names") or []
    curve = result.get("curve") or []
    out = np.zeros((len(names), len(curve)))
    for t, step in enumerate(curve):
        for j in step.get("edited_candidates", []):
            out[j, t] = 1.0 + step.get("coef_magnitude", 0.0)
    return out


def retention_array(result: dict) -> tuple[np.ndarray, list[int]]:
    """(points, edits) efficacy array (NaN where edit i was not made yet) and each row's edit index."""
    ret = result.get("retention") or {}
    rows, after = ret.get("efficacy") or [], ret.get("after_edit") or []
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), np.nan)
    for r, row in enumerate(rows):
        out[r, : len(row)] = row
    return out, list(after)


def draw(result: dict, name: str, ax) -> None:
    """Draw figure ``name`` of :data:`FIGURES` onto a matplotlib axes."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if name == "mask_heatmap":
        mat = mask_matrix(result)
        if mat.size == 0:
            ax.text(0.5, 0.5, "no steps recorded", ha="center", va="center")
        else:
            im = ax.imshow(
                mat,
                aspect="auto",
                cmap="Blues",
                vmin=0,
                vmax=max(2.0, float(mat.max())),
                interpolation="nearest",
                extent=(0.5, mat.shape[1] + 0.5, mat.shape[0] - 0.5, -0.5),
            )
            ax.figure.colorbar(im, ax=ax, label="1 + |coef| (0 = not edited)")
            names = result.get("candidate_names") or []
            if len(names) <= 40:
                ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_xlabel("step (from 1)")
        ax.set_ylabel("candidate matrix")
        ax.set_title(_title(result, "Mask: which matrices each edit wrote"), fontsize=9)
    elif name == "retention_matrix":
        mat, after = retention_array(result)
        if mat.size == 0:
            ax.text(
                0.5,
                0.5,
                "no retention points (run eval with --retention-points K)",
                ha="center",
                va="center",
                fontsize=8,
            )
        else:
            im = ax.imshow(
                mat,
                aspect="auto",
                cmap="viridis",
                vmin=0,
                vmax=1,
                interpolation="nearest",
                extent=(0.5, mat.shape[1] + 0.5, mat.shape[0] - 0.5, -0.5),
            )
            ax.figure.colorbar(im, ax=ax, label="efficacy of edit i")
            ax.set_yticks(range(len(after)), [str(a) for a in after], fontsize=7)
        ax.set_xlabel("edit i (stream order, from 1)")
        ax.set_ylabel("measured after edit j")
        ax.set_title(_title(result, "Retention: edit i after edit j"), fontsize=9)
    elif name == "efficacy_vs_edits":
        curve = result.get("curve") or []
        x = np.array([c["edit_index"] for c in curve])
        window = max(1, round(len(curve) / 10))
        for key, label in (("efficacy", "immediate efficacy"), ("specificity", "immediate specificity")):
            y = np.array([c[key] for c in curve], dtype=float)
            ax.plot(x, _running_mean(y, window), label=f"{label} (running mean of {window})")
        mat, _ = retention_array(result)
        if mat.size:
            final = mat[-1]
            ax.plot(
                np.arange(1, len(final) + 1),
                _running_mean(final, max(1, round(len(final) / 10))),
                label="efficacy at the end of the stream",
                linestyle="--",
            )
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("edit index")
        ax.set_ylabel("score")
        ax.legend(fontsize=7, loc="best")
        ax.set_title(_title(result, "Efficacy vs number of edits"), fontsize=9)
    else:
        raise ValueError(f"unknown figure {name!r} (known: {', '.join(FIGURES)})")


def render_png(result: dict, name: str, dpi: int = 110) -> bytes:
    """Figure ``name`` of a run as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        draw(result, name, ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def render_rgb(result: dict, name: str) -> np.ndarray:
    """Figure ``name`` as an (H, W, 3) uint8 array (for TensorBoard images)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    png = render_png(result, name)
    return (plt.imread(io.BytesIO(png), format="png")[..., :3] * 255).astype(np.uint8)


def save_plots(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write every figure of :data:`FIGURES` as ``out_dir/NAME.png`` (atomically); return the paths."""
    from edit_gym.cache import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in FIGURES:
        path = out / f"{name}.png"
        atomic_write_bytes(path, render_png(result, name))
        paths[name] = path
    return paths


def load_result(path: str | Path) -> dict:
    """An evaluation JSON, checked for the fields the plots need (clear error otherwise)."""
    from edit_gym.result_file import load_result as read_checked

    p = Path(path)
    result = read_checked(p)  # format, version and checksum
    if "curve" not in result:
        raise ValueError(f"{str(p)!r} is not an evaluation result (no 'curve'; see `edit-gym eval --json`)")
    return result
