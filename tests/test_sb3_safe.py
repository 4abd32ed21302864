"""SB3 zips load without unpickling anything from them (agents.sb3_safe)."""

from __future__ import annotations

import base64
import contextlib
import json
import pickle
import zipfile

import gymnasium as gym
import numpy as np
import pytest

from agents.sb3_safe import load_sb3
from edit_gym.editing.hypernet import CheckpointError


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _env():
    return gym.make("LifelongEdit-Tiny-v0", action_type="mask", num_edits=3)


def _save(tmp_path, algo_name: str = "PPO"):
    import stable_baselines3 as sb3

    from agents.features import LayerStatsExtractor

    env = _env()
    algo = getattr(sb3, algo_name)
    model = algo(
        "MultiInputPolicy",
        env,
        n_steps=8,
        seed=0,
        policy_kwargs={"features_extractor_class": LayerStatsExtractor},
    )
    path = tmp_path / f"{algo_name}.zip"
    model.save(path)
    return env, model, path


def _rewrite(path, key: str, value) -> None:
    """Replace one field of the zip's JSON ``data`` (what an attacker editing the file would do)."""
    with zipfile.ZipFile(path) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    data = json.loads(files["data"])
    data[key] = value
    files["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)


@pytest.mark.parametrize("algo_name", ["PPO", "A2C"])
def test_safe_load_predicts_like_the_model(tmp_path, algo_name):
    env, model, path = _save(tmp_path, algo_name)
    loaded = load_sb3(path, env)
    assert type(loaded).__name__ == algo_name
    obs, _ = env.reset(seed=1)
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )


def test_planted_pickle_in_a_space_never_runs(tmp_path):
    import stable_baselines3 as sb3

    env, _, path = _save(tmp_path)
    marker = tmp_path / "pwned"
    payload = base64.b64encode(pickle.dumps(_Payload(str(marker)))).decode()
    _rewrite(
        path, "observation_space", {":type:": "<class 'gymnasium.spaces.dict.Dict'>", ":serialized:": payload}
    )
    with contextlib.suppress(Exception):  # the payload is live: SB3's own loader runs it
        sb3.PPO.load(path, device="cpu")
    assert marker.exists()
    marker.unlink()
    load_sb3(path, env)  # the field is replaced by the env's space, never deserialized
    assert not marker.exists()


def test_planted_pickle_in_an_unknown_field_is_refused(tmp_path):
    env, _, path = _save(tmp_path)
    marker = tmp_path / "pwned"
    payload = base64.b64encode(pickle.dumps(_Payload(str(marker)))).decode()
    _rewrite(path, "evil", {":type:": "<class 'object'>", ":serialized:": payload})
    with pytest.raises(CheckpointError, match="field 'evil' is stored as a pickle"):
        load_sb3(path, env)
    _rewrite(path, "evil", None)
    _rewrite(
        path,
        "policy_kwargs",
        {":type:": "<class 'dict'>", ":serialized:": payload, "net_arch": "<object at 0x1>"},
    )
    with pytest.raises(CheckpointError, match=r"policy_kwargs\['net_arch'\]"):
        load_sb3(path, env)
    assert not marker.exists()


def test_not_a_zip_is_refused(tmp_path):
    bad = tmp_path / "model.zip"
    bad.write_bytes(pickle.dumps(_Payload(str(tmp_path / "pwned"))))
    with pytest.raises(CheckpointError, match="not an SB3 model zip"):
        load_sb3(bad, _env())
    with pytest.raises(CheckpointError, match="not found"):
        load_sb3(tmp_path / "missing.zip", _env())
    assert not (tmp_path / "pwned").exists()


def test_model_of_another_candidate_count_is_refused_naming_the_file(tmp_path):
    env, _model, path = _save(tmp_path)
    names = env.unwrapped.candidate_names[:3]
    other = gym.make("LifelongEdit-Tiny-v0", action_type="mask", num_edits=3, candidates=names)
    with pytest.raises(CheckpointError, match="does not fit this environment") as err:
        load_sb3(path, other)
    assert str(path) in str(err.value)
