"""Load a Stable-Baselines3 ``.zip`` without unpickling anything from it.

An SB3 zip keeps its tensors in ``.pth`` files (which SB3 reads with ``weights_only=True``) and
its settings in a JSON ``data`` file, where every value JSON cannot hold (the spaces, the policy
class, ``policy_kwargs``, the schedules) is a base64 cloudpickle: loading it runs whatever code the
file's author put there. ``load_sb3`` never lets SB3 deserialize those fields. It hands SB3
replacements instead (``custom_objects``, which SB3 uses *instead of* the pickles):

* ``observation_space`` / ``action_space``: the env's own spaces;
* ``policy_class``: found by name (the readable ``__init__`` entry SB3 writes beside the pickle)
  among the policies of PPO, A2C, SAC, TD3 and sb3-contrib's MaskablePPO;
* ``policy_kwargs``: rebuilt from the readable entries: literals (numbers, lists, dicts) and an
  allow-list of classes (edit-gym's feature extractor, torch activations);
* schedules: constants (they only matter for further training); ``*_class`` fields and the
  rollout state (last observation, episode-info buffers): None (SB3 then starts them afresh).

Any other pickled field refuses the file, naming the field. Loading a file you trust and whose
settings this cannot rebuild: ``stable_baselines3.PPO.load(path)`` yourself.
"""

from __future__ import annotations

import ast
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from agents.checkpointing import layout_mismatch
from edit_gym.editing.hypernet import CheckpointError

SERIALIZED = ":serialized:"
# rollout state a model keeps between learn() calls: None makes SB3 start it afresh
TRAINING_STATE = {
    "_last_obs",
    "_last_original_obs",
    "_last_episode_starts",
    "ep_info_buffer",
    "ep_success_buffer",
}


def _safe_classes() -> dict[str, type]:
    """``str(cls)`` -> cls for the classes a ``policy_kwargs`` may name."""
    from torch import nn, optim

    from agents.features import LayerStatsExtractor

    classes = [LayerStatsExtractor, nn.ReLU, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid]
    classes += [optim.Adam, optim.AdamW, optim.RMSprop, optim.SGD]
    try:
        from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor

        classes += [CombinedExtractor, FlattenExtractor]
    except ImportError:  # pragma: no cover
        pass
    named = {str(cls): cls for cls in classes}
    named["<class 'agents.hiedit.LayerStatsExtractor'>"] = LayerStatsExtractor  # models saved before the move
    return named


def _algorithms() -> list[type]:
    import stable_baselines3 as sb3

    algos = [sb3.PPO, sb3.A2C, sb3.SAC, sb3.TD3]
    try:
        from sb3_contrib import MaskablePPO

        algos.append(MaskablePPO)
    except ImportError:  # pragma: no cover - sb3-contrib is a dependency
        pass
    return algos


def read_data(path: str | Path) -> dict:
    """The JSON ``data`` of an SB3 zip, parsed as JSON only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SB3 model file {str(path)!r} not found")
    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("data"))
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise CheckpointError(
            f"{str(path)!r} is not an SB3 model zip ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{str(path)!r}: its 'data' is not a JSON object")
    return data


def _policy_name(entry: dict) -> str | None:
    match = re.search(r"<function (\w+)\.__init__", str(entry.get("__init__", "")))
    return match.group(1) if match else None


def _pick_algorithm(data: dict, path: Path) -> tuple[type, type]:
    """(algorithm, policy class) from the policy's class name and the algorithm's own fields."""
    name = _policy_name(data.get("policy_class") or {})
    if name is None:
        raise CheckpointError(f"{str(path)!r}: cannot tell the policy class without unpickling it")
    fields = {  # a field only that algorithm stores
        "PPO": "clip_range",
        "MaskablePPO": "clip_range",
        "A2C": "n_steps",
        "SAC": "target_entropy",
        "TD3": "policy_delay",
    }
    for algo in _algorithms():
        classes = {cls.__name__: cls for cls in algo.policy_aliases.values()}
        if name in classes and fields.get(algo.__name__, "") in data:
            if algo.__name__ == "PPO" and name.startswith("Maskable"):
                continue
            return algo, classes[name]
    raise CheckpointError(
        f"{str(path)!r}: policy {name!r} is not a policy of PPO, A2C, SAC, TD3 or MaskablePPO"
    )


def _policy_kwargs(entry: Any, path: Path) -> dict:
    if not isinstance(entry, dict):
        return dict(entry or {})
    if SERIALIZED not in entry:
        return dict(entry)
    safe = _safe_classes()
    out = {}
    for key, text in entry.items():
        if key.startswith(":"):
            continue
        if not isinstance(text, str):  # SB3 keeps JSON-able values as they are
            out[key] = text
            continue
        if text in safe:
            out[key] = safe[text]
            continue
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise CheckpointError(
                f"{str(path)!r}: policy_kwargs[{key!r}] = {text} is neither a literal nor an allowed "
                "class; edit-gym does not unpickle checkpoints"
            ) from None
    return out


def _constant(entry: Any, default: float) -> float:
    match = re.search(r"val=([0-9.eE+-]+)", str(entry))
    return float(match.group(1)) if match else default


def _schedule(value: float):
    try:
        from stable_baselines3.common.utils import FloatSchedule
    except ImportError:  # SB3 < 2.6
        from stable_baselines3.common.utils import get_schedule_fn

        return get_schedule_fn(value)
    return FloatSchedule(value)


def safe_custom_objects(path: str | Path, env: Any) -> tuple[type, dict]:
    """The algorithm of an SB3 zip and a ``custom_objects`` that replaces every pickled field."""
    path = Path(path)
    data = read_data(path)
    algo, policy_class = _pick_algorithm(data, path)
    lr = data.get("learning_rate")
    objects: dict[str, Any] = {
        "observation_space": env.observation_space,
        "action_space": env.action_space,
        "policy_class": policy_class,
        "policy_kwargs": _policy_kwargs(data.get("policy_kwargs"), path),
        "lr_schedule": _schedule(float(lr) if isinstance(lr, int | float) else 3e-4),
    }
    for key, value in data.items():
        if key in objects or not (isinstance(value, dict) and SERIALIZED in value):
            continue
        if key in ("clip_range", "clip_range_vf"):
            objects[key] = _schedule(_constant(value.get("value_schedule"), 0.2))
        elif key.endswith("_class") or key in TRAINING_STATE:
            objects[key] = None
        else:
            raise CheckpointError(
                f"{str(path)!r}: field {key!r} is stored as a pickle, and edit-gym does not unpickle "
                "checkpoints (if you trust the file, load it with stable_baselines3 yourself)"
            )
    return algo, objects


def load_sb3(path: str | Path, env: Any, device: str = "cpu"):
    """An SB3 model from a zip, its pickled fields replaced (see the module docstring)."""
    algo, objects = safe_custom_objects(path, env)
    try:
        return algo.load(str(path), env=env, device=device, custom_objects=objects)
    except RuntimeError as err:  # tensor shapes of another observation layout or candidate count
        raise layout_mismatch(path, env.observation_space, err) from None
