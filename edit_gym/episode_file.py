"""Stream checkpoints: an episode in progress written to a folder and read back, without pickle.

A lifelong stream of hundreds of edits on a CPU takes hours; :meth:`LifelongEditEnv.save_episode`
writes where it stands (the edited weights, the method's memory of earlier edits, the observation
statistics, the RNG) so that :meth:`LifelongEditEnv.load_episode` in a fresh process continues it
exactly, and :func:`edit_gym.runner.run_episode` uses the pair to resume an evaluation.

The folder holds two files: ``episode.json`` (the state's structure, numbers and strings, with a
format, a version and a SHA-256 of its own content and of the tensor file) and
``episode.safetensors`` (every tensor and array). A state is a tree of dicts, lists, tuples,
numbers, strings, tensors, numpy arrays and the few data classes named in :data:`DATACLASSES`;
anything else is refused when it is written. Reading constructs only those types: no file load
runs code. A damaged, truncated or hand-edited folder is refused naming the file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from edit_gym.result_file import json_digest

EPISODE_FORMAT = "edit-gym-episode"
EPISODE_VERSION = 1
META_FILE = "episode.json"
TENSOR_FILE = "episode.safetensors"


class EpisodeFileError(ValueError):
    """A stream checkpoint that cannot be read (missing, damaged, or of another env)."""


def _dataclasses() -> dict[str, type]:
    from edit_gym.editing.ultraedit import RunningStats

    return {"ultraedit.RunningStats": RunningStats}


DATACLASSES = ("ultraedit.RunningStats",)  # the only classes a checkpoint may construct


def encode(value: Any, tensors: dict, where: str = "state") -> Any:
    """``value`` as JSON, with each tensor / array moved into ``tensors`` under a fresh name."""
    import numpy as np
    import torch

    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = value.detach().cpu().contiguous()
        return {"$tensor": name}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"{where}: an object array cannot be written to a stream checkpoint")
        name = str(len(tensors))
        tensors[name] = torch.from_numpy(np.ascontiguousarray(value).copy())
        return {"$ndarray": name}
    if isinstance(value, list):
        return [encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode(v, tensors, f"{where}.{k}") for k, v in value.items()}
        return {
            "$items": [
                [encode(k, tensors, f"{where} key"), encode(v, tensors, f"{where}[{k!r}]")]
                for k, v in value.items()
            ]
        }
    for name, cls in _dataclasses().items():
        if type(value) is cls:
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return {"$dataclass": name, "fields": encode(fields, tensors, where)}
    raise TypeError(f"{where}: a {type(value).__name__} cannot be written to a stream checkpoint")


def decode(value: Any, tensors: dict, device: Any = None) -> Any:
    """The inverse of :func:`encode` (tensors moved to ``device`` when given)."""
    if isinstance(value, list):
        return [decode(v, tensors, device) for v in value]
    if not isinstance(value, dict):
        return value
    if "$tensor" in value:
        t = tensors[value["$tensor"]]
        return t.to(device) if device is not None else t
    if "$ndarray" in value:
        return tensors[value["$ndarray"]].numpy()
    if "$tuple" in value:
        return tuple(decode(v, tensors, device) for v in value["$tuple"])
    if "$items" in value:
        return {_hashable(decode(k, tensors, device)): decode(v, tensors, device) for k, v in value["$items"]}
    if "$dataclass" in value:
        cls = _dataclasses().get(value["$dataclass"])
        if cls is None:
            raise EpisodeFileError(f"unknown class {value['$dataclass']!r} (known: {', '.join(DATACLASSES)})")
        return cls(**decode(value["fields"], tensors, device))
    return {k: decode(v, tensors, device) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list | tuple) else key


def _tensor_refs(value: Any) -> set[str]:
    if isinstance(value, list):
        return set().union(*(_tensor_refs(v) for v in value)) if value else set()
    if isinstance(value, dict):
        own = {value[k] for k in ("$tensor", "$ndarray") if k in value}
        return own.union(*(_tensor_refs(v) for v in value.values())) if value else own
    return set()


def write_episode(path: str | Path, state: dict, info: dict) -> Path:
    """Write ``state`` (see the module doc) and the plain-JSON ``info`` to the folder ``path``,
    atomically: an interruption leaves the previous checkpoint whole."""
    from safetensors.torch import save_file

    from edit_gym.cache import atomic_write_folder, atomic_write_text, file_sha256

    tensors: dict = {}
    body = encode(state, tensors)

    def build(tmp: Path) -> None:
        save_file(tensors, str(tmp / TENSOR_FILE))
        meta = {
            "format": EPISODE_FORMAT,
            "version": EPISODE_VERSION,
            "info": info,
            "state": body,
            "tensors_sha256": file_sha256(tmp / TENSOR_FILE),
        }
        meta["sha256"] = json_digest(meta)
        atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=1))

    atomic_write_folder(Path(path), build)
    return Path(path)


def read_info(path: str | Path) -> dict:
    """A checkpoint's ``info`` (its JSON checked, the tensors not read)."""
    return _read_meta(Path(path))["info"]


def _read_meta(folder: Path) -> dict:
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise EpisodeFileError(f"{str(folder)!r} is not a stream checkpoint ({META_FILE} is missing)")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as err:
        raise EpisodeFileError(f"{meta_path} is not valid JSON (truncated or damaged?): {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != EPISODE_FORMAT:
        raise EpisodeFileError(f"{meta_path} is not an edit-gym stream checkpoint")
    if meta.get("version") != EPISODE_VERSION:
        raise EpisodeFileError(
            f"{meta_path}: checkpoint version {meta.get('version')!r}, this edit-gym reads {EPISODE_VERSION}"
        )
    if meta.get("sha256") != json_digest(meta):
        raise EpisodeFileError(
            f"{meta_path} does not match its checksum (edited or damaged after it was written)"
        )
    return meta


def read_episode(path: str | Path, device: Any = None) -> tuple[dict, dict]:
    """``(state, info)`` of a checkpoint folder, every file checked first (EpisodeFileError if not)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from edit_gym.cache import file_sha256

    folder = Path(path)
    meta = _read_meta(folder)
    tensor_path = folder / TENSOR_FILE
    if not tensor_path.is_file():
        raise EpisodeFileError(f"{tensor_path} is missing")
    if file_sha256(tensor_path) != meta.get("tensors_sha256"):
        raise EpisodeFileError(
            f"{tensor_path} does not match the checksum in {META_FILE} (damaged or partial)"
        )
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise EpisodeFileError(f"{tensor_path} is not a readable safetensors file ({err})") from None
    missing = _tensor_refs(meta["state"]) - set(tensors)
    if missing:
        raise EpisodeFileError(
            f"{tensor_path} lacks tensor(s) {', '.join(sorted(missing)[:5])} named in {META_FILE}"
        )
    return decode(meta["state"], tensors, device), meta["info"]
