"""Periodic checkpoints while training: one counter shared by the RLEdit and HiEdit trainers.

The agents' own ``save`` writes atomically, so a run interrupted between two saves (Ctrl-C) keeps
its last whole checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

OPTIMIZER_FILE = "optimizer.safetensors"  # Adam's moments: a resumed run continues where it stopped


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


def jsonable(value: Any) -> Any:
    """Tuples to lists, numpy / torch scalars to Python numbers (for JSON metadata)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        return value.item()
    return value


def optimizer_parts(state_dict: dict | None) -> tuple[list | None, dict]:
    """An optimizer ``state_dict`` as (JSON param groups, flat tensors for safetensors)."""
    import torch

    if state_dict is None:
        return None, {}
    tensors = {
        f"{index}.{name}": torch.as_tensor(value).detach().cpu().contiguous()
        for index, slots in state_dict["state"].items()
        for name, value in slots.items()
    }
    return jsonable(state_dict["param_groups"]), tensors


def write_optimizer(folder: Path, tensors: dict, meta: dict, groups: list | None) -> None:
    """Write ``tensors`` to ``folder/OPTIMIZER_FILE`` and name it (groups, checksum) in ``meta``."""
    from safetensors.torch import save_file

    from edit_gym.cache import file_sha256

    meta["optimizer_param_groups"] = groups
    if tensors:
        save_file(tensors, str(folder / OPTIMIZER_FILE))
        meta["optimizer_sha256"] = file_sha256(folder / OPTIMIZER_FILE)


def read_optimizer(folder: Path, meta: dict, meta_name: str) -> dict | None:
    """The optimizer ``state_dict`` a checkpoint's ``meta`` names (checksummed, no pickle), or None."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from edit_gym.editing.hypernet import CheckpointError, verify_sha256

    groups = meta.get("optimizer_param_groups")
    if groups is None:
        return None
    path = Path(folder) / OPTIMIZER_FILE
    state: dict[int, dict] = {}
    if meta.get("optimizer_sha256") is not None or path.exists():
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (the checkpoint names optimizer state)")
        verify_sha256(path, meta.get("optimizer_sha256"), meta_name)
        try:
            flat = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None
        for key, value in flat.items():
            index, _, name = key.partition(".")
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}
