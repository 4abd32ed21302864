"""Throw every kind of bad input at edit-gym and record what it says and what it changed.

For each case: the input, the exception and its message, and whether the weights hash, the
episode's step and its random generator are exactly as before. Writes ``results/bad_inputs.md``.

    python benchmarks/bad_inputs.py                 # tiny env; rewrites results/bad_inputs.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

import edit_gym  # noqa: F401  registers the ids
from edit_gym.cache import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
N = 6  # candidates of the tiny env


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def weights_hash(env) -> str:
    h = hashlib.sha256()
    for cand in env.unwrapped.candidates:
        h.update(cand.param.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def action_cases() -> list[tuple[str, str, object, dict]]:
    """(description, env id, action, extra env kwargs)."""
    ok = np.ones(N, np.int8)
    return [
        ("mask of the wrong shape", "LifelongEdit-Tiny-v0", {"mask": np.ones(3), "coef": np.zeros(N)}, {}),
        ("NaN coefficient", "LifelongEdit-Tiny-v0", {"mask": ok, "coef": np.full(N, np.nan)}, {}),
        ("infinite coefficient", "LifelongEdit-Tiny-v0", {"mask": ok, "coef": np.full(N, np.inf)}, {}),
        ("coefficient out of [-1, 1]", "LifelongEdit-Tiny-v0", {"mask": ok, "coef": np.full(N, 3.0)}, {}),
        ("mask value 2", "LifelongEdit-Tiny-v0", {"mask": np.full(N, 2), "coef": np.zeros(N)}, {}),
        ("missing 'coef' key", "LifelongEdit-Tiny-v0", {"mask": ok}, {}),
        ("None as the action", "LifelongEdit-Tiny-v0", None, {}),
        ("strings as a Box action", "LifelongEdit-Tiny-Box-v0", np.array(["a"] * 2 * N), {}),
        (
            "Box action of the wrong dtype (object)",
            "LifelongEdit-Tiny-Box-v0",
            np.array([object()] * 2 * N),
            {},
        ),
        ("MultiDiscrete bin 9 of 0..5", "LifelongEdit-Tiny-MultiDiscrete-v0", np.full(N, 9), {}),
        (
            "all-zero mask under a budget of 2",
            "LifelongEdit-Tiny-Mask-v0",
            np.zeros(N, np.int8),
            {"budget": 2},
        ),
        ("6 candidates under a budget of 2", "LifelongEdit-Tiny-Mask-v0", np.ones(N, np.int8), {"budget": 2}),
    ]


def step_rows() -> list[dict]:
    rows = []
    for what, env_id, action, extra in action_cases():
        env = gym.make(env_id, num_edits=3, **extra).unwrapped
        env.reset(seed=0)
        before, rng, t = weights_hash(env), env.np_random.bit_generator.state, env._t
        try:
            env.step(action)
            error = "(accepted)"
        except Exception as err:  # noqa: BLE001 - the point is to record whatever comes out
            error = f"{type(err).__name__}: {err}"
        unchanged = weights_hash(env) == before and env.np_random.bit_generator.state == rng and env._t == t
        rows.append(
            {"where": "env.step", "input": what, "error": error, "unchanged": unchanged, "hash": before[:12]}
        )
        env.close()
    return rows


def _raises(fn: Callable[[], object]) -> str:
    try:
        fn()
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {err}"
    return "(accepted)"


def construction_rows(tmp: Path) -> list[dict]:
    """Bad datasets, names and files: refused before anything is built."""

    def data(records) -> str:
        path = tmp / f"records-{len(list(tmp.iterdir()))}.json"
        path.write_text(json.dumps(records))
        return str(path)

    record = {"prompt": "Mount Fuji is in", "subject": "Mount Fuji", "target_new": "Chile"}
    cases = [
        (
            "record missing 'target_new'",
            lambda: gym.make("LifelongEdit-Tiny-v0", dataset=data([{"prompt": "A is", "subject": "A"}])),
        ),
        (
            "empty 'target_new'",
            lambda: gym.make("LifelongEdit-Tiny-v0", dataset=data([{**record, "target_new": " "}])),
        ),
        (
            "subject not in its prompt",
            lambda: gym.make("LifelongEdit-Tiny-v0", dataset=data([{**record, "subject": "Fuji-san"}])),
        ),
        (
            "'locality' not an object",
            lambda: gym.make("LifelongEdit-Tiny-v0", dataset=data([{**record, "locality": [1]}])),
        ),
        ("empty dataset file", lambda: gym.make("LifelongEdit-Tiny-v0", dataset=data([]))),
        ("unknown env id", lambda: gym.make("LifelongEdit-Nope-v0")),
        ("unknown model", lambda: gym.make("LifelongEdit-Tiny-v0", model="no-such-model-xyz")),
        (
            "unknown module name",
            lambda: gym.make("LifelongEdit-Tiny-v0", candidates=["model.layers.0.mlp.nope"]),
        ),
        ("unknown editor", lambda: gym.make("LifelongEdit-Tiny-v0", editor="romeo")),
        ("unknown editor wrapper", lambda: gym.make("LifelongEdit-Tiny-v0", editor="ridge+nope")),
    ]
    rows = [
        {"where": "gym.make", "input": what, "error": _raises(fn), "unchanged": None, "hash": ""}
        for what, fn in cases
    ]

    from agents.registry import check_agent_spec

    rows.append(
        {
            "where": "edit-gym eval",
            "input": "unknown agent 'oracle'",
            "error": _raises(lambda: check_agent_spec("oracle")),
            "unchanged": None,
            "hash": "",
        }
    )
    return rows


def checkpoint_rows(tmp: Path) -> list[dict]:
    """Corrupted, partial and planted checkpoints: refused, and no code from them runs."""
    from agents.rledit import RLEditAgent, RLEditConfig
    from agents.sb3_safe import load_sb3

    env = gym.make("LifelongEdit-Tiny-v0", num_edits=3)
    ck = RLEditAgent(env, RLEditConfig(rank=4)).save(tmp / "ck")
    marker = tmp / "pwned"
    rows = []
    weights = ck / "hypernet.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    rows.append(("RLEdit checkpoint cut in half", lambda: RLEditAgent.load(ck, env)))
    weights.write_bytes(pickle.dumps(_Payload(str(marker))))
    rows.append(("pickle planted as hypernet.safetensors", lambda: RLEditAgent.load(ck, env)))
    (tmp / "model.zip").write_bytes(pickle.dumps(_Payload(str(marker))))
    rows.append(("pickle planted as an SB3 model.zip", lambda: load_sb3(tmp / "model.zip", env)))
    from agents import AllCandidatesAgent
    from edit_gym.result_file import load_result, save_result
    from edit_gym.runner import run_episode

    text = save_result(
        run_episode(env, AllCandidatesAgent(env), 0, extended=False, progress=False), tmp / "r.json"
    )
    text = text.read_text()
    (tmp / "edited.json").write_text(text.replace('"edits": 3', '"edits": 4', 1))
    rows.append(("result file with an edited value", lambda: load_result(tmp / "edited.json")))
    # cut inside the first field (the env config), so the quoted parse error is the same every run
    # (later fields hold timings whose digit counts vary)
    (tmp / "cut.json").write_text(text[: text.index('"config"') + 40])
    rows.append(("result file cut short", lambda: load_result(tmp / "cut.json")))
    out = []
    for what, fn in rows:
        error = _raises(fn)
        out.append(
            {"where": "load", "input": what, "error": error, "unchanged": not marker.exists(), "hash": ""}
        )
    return out


def cache_rows(tmp: Path) -> list[dict]:
    """Damaged cache entries: caught by their checksums, rebuilt with a warning, never used."""
    import os
    import warnings
    from unittest import mock

    import torch

    from edit_gym import cache
    from edit_gym.architectures import default_candidates
    from edit_gym.backbones import load_backbone
    from edit_gym.candidates import resolve_candidates
    from edit_gym.editing import covariance

    backbone = load_backbone("tiny")
    candidates = resolve_candidates(backbone.model, default_candidates("llama", backbone.num_blocks))
    with mock.patch.dict(os.environ, {cache.CACHE_ENV_VAR: str(tmp / "cache")}):
        first = covariance.key_covariance(backbone, candidates)
        (entry,) = (tmp / "cache" / "covariance").glob("*.safetensors")
        data = entry.read_bytes()
        damages = [
            ("cached C0 with one flipped byte", data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:]),
            ("cached C0 cut in half", data[: len(data) // 2]),
        ]
        out = []
        for what, damaged in damages:
            entry.write_bytes(damaged)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                again = covariance.key_covariance(backbone, candidates)
            message = "; ".join(str(w.message) for w in caught) or "(accepted)"
            same = all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
            out.append({"where": "cache", "input": what, "error": message, "unchanged": same, "hash": ""})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "bad_inputs.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        rows = step_rows() + construction_rows(tmp) + checkpoint_rows(tmp) + cache_rows(tmp)
        for r in rows:  # the temporary folder's name changes from run to run
            r["error"] = r["error"].replace(str(tmp), "<tmp>")
    lines = [
        "# Bad inputs and what edit-gym says",
        "",
        "Generated by `python benchmarks/bad_inputs.py` on the tiny env. *unchanged*: for `env.step`, the",
        "weights hash (SHA-256 over every candidate matrix), the step counter and the env's random",
        "generator are exactly as before the call; for loads, no code from the file ran (a planted",
        "payload would create a marker file); for caches, the entry was rebuilt (a warning, not an",
        "error: a cache is recomputable) and the values in use equal the undamaged ones.",
        "",
        "| where | input | error | unchanged | weights hash |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        unchanged = {True: "yes", False: "**NO**", None: "-"}[r["unchanged"]]
        error = r["error"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['where']} | {r['input']} | {error} | {unchanged} | {r['hash'] or '-'} |")
    atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    print("\n".join(lines))
    bad = [r for r in rows if r["unchanged"] is False or r["error"] == "(accepted)"]
    if bad:
        raise SystemExit(
            f"{len(bad)} bad input(s) were accepted or changed something: {[r['input'] for r in bad]}"
        )


if __name__ == "__main__":
    main()
