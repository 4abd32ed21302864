"""HiEdit's alternating fine-tuning: the low-level hypernet trained further on the selector's masks.

HiEdit trains its high-level selector over a fixed low level, then may fine-tune the low level on
the candidate sets the selector chooses (so the hypernet learns the update sizes that suit a
partial selection: with spreading, each chosen matrix takes a larger share of the step). One round:

1. the trained selector plays each training sequence (seeded, the same stream the RLEdit trainer
   draws) through an env over the low level it was trained with (the checkpoint's, frozen for the
   round), and its mask at every step is recorded;
2. the RLEdit trainer edits that sequence with only those candidates and takes its optimizer steps
   (the other matrices' weights are not edited; Adam's momentum may still move their per-matrix
   step size and ridge strength a little).

The next round retrains the selector over the new low level
(``edit-gym train hiedit --low-level NEW_DIR``); ``edit-gym train rledit --masks-from HIEDIT_DIR``
runs step 1-2 from the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edit_gym.actions import decode_action


class SelectorMasks:
    """``mask_fn`` for ``RLEditAgent.learn``: the masks a trained selector picks on a seed's stream.

    ``env`` is the selector's own env (its low level, action type and budget); it must draw the same
    stream as the trainer's env for the same seed (same data and episode length), which is checked.
    """

    def __init__(self, selector: Any, env: Any) -> None:
        self.selector = selector
        self.env = env

    def __call__(self, seed: int, stream: list) -> np.ndarray:
        inner = self.env.unwrapped
        obs, _ = self.env.reset(seed=seed)
        played = [r.prompt for r in inner.stream]
        if played != [r.prompt for r in stream]:
            raise ValueError(
                "the selector's env draws a different stream for this seed than the trainer's env "
                f"(first prompts {played[:2]} vs {[r.prompt for r in stream][:2]}): build both with "
                "the same dataset and number of edits"
            )
        n, cfg = inner.num_candidates, inner.cfg
        masks = np.zeros((len(stream), n), dtype=bool)
        for t in range(len(stream)):
            action, _ = self.selector.predict(obs, deterministic=True)
            masks[t], _ = decode_action(action, cfg.action_type, n, cfg.coef_levels, cfg.budget)
            obs, _, terminated, truncated, _ = self.env.step(action)
            if (terminated or truncated) and t < len(stream) - 1:
                masks[t + 1 :] = masks[t]  # an env guard ended the episode early: keep the last choice
                break
        return masks


def finetune_low_level(
    hiedit_dir: str | Path,
    env_id: str,
    sequences: int,
    out: str | Path,
    *,
    tb_log_dir: str | Path | None = None,
    progress_bar: bool = True,
    checkpoint_every: int = 0,
    **env_kwargs: Any,
) -> Path:
    """One round: fine-tune the HiEdit checkpoint's RLEdit low level on its selector's masks.

    ``env_kwargs`` (``dataset``, ``num_edits``, ...) build both envs, so their streams agree. Writes an
    RLEdit checkpoint folder to ``out`` (the optimizer state and sequence counter continue from the
    low level's checkpoint) and returns it.
    """
    import gymnasium as gym

    from agents.hiedit import HiEditAgent
    from agents.rledit import RLEditAgent
    from edit_gym.editing.rules import learned_checkpoint

    meta = HiEditAgent.read_meta(hiedit_dir)
    low_level = learned_checkpoint(meta["editor"])
    if low_level is None:
        raise ValueError(
            f"{hiedit_dir}: its low level is the fixed rule {meta['editor']!r}; only an RLEdit "
            "low level (rledit:DIR) can be fine-tuned"
        )
    if Path(out).resolve() == Path(low_level).resolve():
        raise ValueError(f"--out {out} is the low level the selector was trained over; write elsewhere")
    common = {"final_eval": False, **env_kwargs}
    selector_env = gym.make(
        env_id,
        editor=meta["editor"],
        action_type=meta["action_type"],
        budget=meta.get("env_budget"),
        **common,
    )
    train_env = None
    try:
        selector = HiEditAgent.load(hiedit_dir, selector_env)
        train_env = gym.make(env_id, candidates=selector_env.unwrapped.candidate_names, **common)
        agent = RLEditAgent.load(low_level, train_env)
        agent.learn(
            sequences,
            tb_log_dir=tb_log_dir,
            progress_bar=progress_bar,
            checkpoint_dir=out if checkpoint_every else None,
            checkpoint_every=checkpoint_every,
            mask_fn=SelectorMasks(selector, selector_env),
        )
        agent.save(out)
    finally:
        selector_env.close()
        if train_env is not None:
            train_env.close()
    return Path(out)
