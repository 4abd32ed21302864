"""Rendering: a text table of the last step and a candidates x steps heatmap of the masks."""

from __future__ import annotations

import numpy as np

CELL = 6  # pixels per heatmap cell


def render_ansi(names: list[str], last: dict, t: int, num_steps: int) -> str:
    """The last step as a table: one row per candidate, then the reward terms."""
    lines = [f"LifelongEdit step {t}/{num_steps}"]
    if not last:
        return "\n".join([*lines, "(no edit yet)"]) + "\n"
    width = max(len(n) for n in names)
    lines.append(f"{'candidate':<{width}}  edit   coef     scale")
    for i, name in enumerate(names):
        on = bool(last["mask"][i])
        lines.append(
            f"{name:<{width}}  {'yes' if on else ' - ':>4}  {last['coef'][i]:+.2f}  {last['scales'][i]:.3e}"
        )
    lines.append(
        f"reward {last['reward']:+.4f} = edit {last['reward_edit']:+.4f} + locality {last['reward_locality']:+.4f}"
        f" + sparsity {last['reward_sparsity']:+.4f}"
    )
    lines.append(
        f"edit loss {last['edit_loss_before']:.3f} -> {last['edit_loss_after']:.3f}; efficacy {last['efficacy']:.2f};"
        f" specificity {last['specificity']:.2f}; KL {last['kl']:.4f}"
    )
    if last.get("fault"):
        lines.append(f"FAULT: {last['fault']}")
    return "\n".join(lines) + "\n"


def render_mask_heatmap(history: np.ndarray, t: int) -> np.ndarray:
    """(H, W, 3) uint8: rows = candidates, columns = steps; blue = edited (darker = larger coef),
    white = skipped, grey = not yet played."""
    steps, n = history.shape
    img = np.full((n, steps, 3), 200, dtype=np.uint8)
    played = history[:t].T  # (n, t)
    edited = played >= 0
    shade = (255 * (1.0 - 0.8 * np.clip(played, 0, 1))).astype(np.uint8)
    block = np.where(edited[..., None], np.stack([shade, shade, np.full_like(shade, 255)], -1), 255)
    img[:, :t] = block.astype(np.uint8)
    return np.repeat(np.repeat(img, CELL, axis=0), CELL, axis=1)
