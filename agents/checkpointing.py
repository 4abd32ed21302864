"""Periodic checkpoints while training: one counter shared by the RLEdit and HiEdit trainers.

The agents' own ``save`` writes atomically, so a run interrupted between two saves (Ctrl-C) keeps
its last whole checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


class PeriodicSave:
    """Calls ``save(checkpoint_dir)`` each time the count passes another multiple of ``every``.

    ``every`` = 0 never saves. ``start`` is the count training resumes from (a loaded agent's
    sequences so far), so a resumed run saves at the same multiples as an uninterrupted one.
    """

    def __init__(
        self,
        save: Callable[[Path], Any],
        checkpoint_dir: str | Path | None,
        every: int,
        start: int = 0,
    ) -> None:
        if every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {every}")
        if every and checkpoint_dir is None:
            raise ValueError("checkpoint_every needs a checkpoint_dir")
        self.save, self.checkpoint_dir, self.every, self.saved_at = save, checkpoint_dir, every, start

    def __call__(self, count: int) -> None:
        if self.every and count // self.every > self.saved_at // self.every:
            self.save(self.checkpoint_dir)
            self.saved_at = count


def layout_mismatch(path: str | Path, space: Any, err: Exception) -> Exception:
    """The error for a saved policy whose tensor shapes do not fit this environment's spaces
    (trained for another candidate count, or on an older observation layout)."""
    from edit_gym.editing.hypernet import CheckpointError

    return CheckpointError(
        f"{str(path)!r} does not fit this environment's observation {space} (saved for another "
        f"candidate count or an older observation layout): {err}"
    )
