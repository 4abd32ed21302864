"""The on-disk store of the pristine model's answers to locality probes (edit_gym/pristine_store.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import edit_gym.env as env_module
from edit_gym.editing.scores import Reference
from edit_gym.pristine_store import PristineStore


def _ref(seed: int, rows: int = 2, k: int = 4) -> Reference:
    g = torch.Generator().manual_seed(seed)
    return Reference(torch.randint(0, 100, (rows, k), generator=g), torch.randn(rows, k, generator=g))


def _same(a: Reference, b: Reference) -> bool:
    return torch.equal(a.ids, b.ids) and torch.equal(a.logp, b.logp)


def test_references_are_computed_once_and_read_back(tmp_path):
    calls = []
    table = {("p1", "a1"): _ref(1), ("p2", "a2"): _ref(2, rows=3), ("p3", "a3"): _ref(3, rows=1)}

    def compute(pairs):
        calls.append(list(pairs))
        return [table[p] for p in pairs]

    store = PristineStore("m", "f0", folder=tmp_path)
    first = store.references([("p1", "a1"), ("p2", "a2")], compute, k=4)
    assert calls == [[("p1", "a1"), ("p2", "a2")]]
    # a new store (a new process) reads them from disk and computes only the new pair
    again = PristineStore("m", "f0", folder=tmp_path)
    out = again.references([("p3", "a3"), ("p2", "a2"), ("p1", "a1")], compute, k=4)
    assert calls[1:] == [[("p3", "a3")]]
    assert all(
        _same(o, table[p]) for o, p in zip(out, [("p3", "a3"), ("p2", "a2"), ("p1", "a1")], strict=True)
    )
    assert _same(first[1], table[("p2", "a2")])
    # everything is on disk now: a third store computes nothing
    PristineStore("m", "f0", folder=tmp_path).references(list(table), compute, k=4)
    assert len(calls) == 2


def test_other_weights_and_settings_do_not_share_items(tmp_path):
    calls = []

    def compute(items):
        calls.append(list(items))
        return [f"answer to {p}" for p in items]

    PristineStore("m", "f0", folder=tmp_path).generations(["q"], compute, max_new_tokens=16)
    PristineStore("m", "f1", folder=tmp_path).generations(["q"], compute, max_new_tokens=16)
    PristineStore("m", "f0", folder=tmp_path).generations(["q"], compute, max_new_tokens=8)
    assert calls == [["q"], ["q"], ["q"]]
    assert PristineStore("m", "f0", folder=tmp_path).generations(["q"], compute, 16) == ["answer to q"]
    assert len(calls) == 3


def test_a_damaged_store_is_rebuilt_not_trusted(tmp_path):
    calls = []

    def compute(items):
        calls.append(list(items))
        return ["right" for _ in items]

    store = PristineStore("m", "f0", folder=tmp_path)
    store.generations(["q"], compute, 16)
    path = store.path("generations-n16.json")
    path.write_text(path.read_text().replace("right", "wrong"))  # hand-edited: fails its checksum
    with pytest.warns(UserWarning, match="checksum"):
        out = PristineStore("m", "f0", folder=tmp_path).generations(["q"], compute, 16)
    assert out == ["right"] and len(calls) == 2


def test_a_compute_that_returns_too_few_values_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="1 values for 2 items"):
        PristineStore("m", "f0", folder=tmp_path).generations(["a", "b"], lambda items: ["x"], 16)
    assert [f for f in tmp_path.iterdir() if not f.name.endswith(".lock")] == []  # nothing written


def test_fingerprint_sees_every_weight_byte_and_the_tokenizer():
    from types import SimpleNamespace

    from edit_gym.backbones import weights_fingerprint

    model = torch.nn.Sequential(torch.nn.Embedding(5000, 64), torch.nn.LayerNorm(64))
    tok = SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 1}, special_tokens_map={"eos_token": "b"})
    before = weights_fingerprint(model, tok)
    assert weights_fingerprint(model, tok) == before
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # far from any strided sample: the last row, one odd bias entry
        model[0].weight[-1, -1] += 1e-3
    assert weights_fingerprint(model, tok) != before
    model.load_state_dict(saved)
    with torch.no_grad():
        model[1].bias[63] += 1e-3
    assert weights_fingerprint(model, tok) != before
    model.load_state_dict(saved)
    assert weights_fingerprint(model, tok) == before  # the same bytes again: the same key
    other = SimpleNamespace(get_vocab=lambda: {"a": 0, "c": 1}, special_tokens_map={"eos_token": "c"})
    assert weights_fingerprint(model, other) != before


def test_the_store_writes_under_its_lock(tmp_path, monkeypatch):
    """Data and manifest land while the lock is held: no other run reads or writes in between."""
    from filelock import FileLock, Timeout

    import edit_gym.pristine_store as store_module

    store = PristineStore("m", "f0", folder=tmp_path)
    path = store.path("generations-n16.json")
    seen = []
    real_write = store_module.write_cache_file

    def write(target, data):
        with pytest.raises(Timeout):
            FileLock(str(path.parent / f".{path.name}.lock"), timeout=0).acquire()
        seen.append(target)
        real_write(target, data)

    monkeypatch.setattr(store_module, "write_cache_file", write)
    store.generations(["q"], lambda items: ["a" for _ in items], 16)
    assert seen == [path]


def test_store_files_name_their_version(tmp_path):
    from edit_gym.pristine_store import STORE_VERSION

    path = PristineStore("m", "f0", folder=tmp_path).path("generations-n16.json")
    assert f"-v{STORE_VERSION}-" in path.name


def _band_action(u):
    from edit_gym.actions import encode_action

    mask = np.zeros(u.num_candidates, bool)
    mask[u.method.band()] = True
    return encode_action(mask, np.zeros(u.num_candidates), u.cfg.action_type, u.cfg.coef_levels)


def test_env_reads_its_references_and_answers_from_the_store(tmp_path, monkeypatch):
    """A second env (a new run) over the same backbone computes no pristine pass, and scores the same."""

    def run(env):
        u = env.unwrapped
        base = u._state.base
        base.pristine_store = PristineStore(base.backbone.name, base.pristine_store.fingerprint, tmp_path)
        env.reset(seed=1)
        before = u.evaluate("stream", wild=True)
        env.step(_band_action(u))
        return base.pristine_store.fingerprint, before, u.evaluate("edited", wild=True)

    first = run(gym.make("LifelongEdit-Tiny-v0", editor="rome", num_edits=3, share_model=False))

    def refuse(*args, **kwargs):
        raise AssertionError("a pristine pass ran although the store holds its results")

    monkeypatch.setattr(env_module, "compute_references", refuse)
    monkeypatch.setattr("edit_gym.wild.reference_generations", refuse)
    second = run(gym.make("LifelongEdit-Tiny-v0", editor="rome", num_edits=3, share_model=False))
    assert second == first
