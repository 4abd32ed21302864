"""Stream checkpoints: an episode saved mid-stream and continued elsewhere equals the uninterrupted one."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import weights_hash

from agents.baselines import RandomKAgent
from edit_gym.episode_file import META_FILE, TENSOR_FILE, EpisodeFileError
from edit_gym.runner import run_episode


def _env(editor: str, **kw):
    return gym.make("LifelongEdit-Tiny-v0", editor=editor, num_edits=8, edits_per_step=2, **kw)


def _actions(env, count: int, seed: int = 3) -> list:
    space = env.action_space
    space.seed(seed)
    return [space.sample() for _ in range(count)]


@pytest.mark.parametrize("editor", ["alphaedit", "ultraedit", "prune", "covariance+nullspace"])
def test_a_saved_episode_continues_in_a_fresh_env_as_if_never_stopped(tmp_path, editor):
    actions = _actions(_env(editor), 4)
    whole = _env(editor)
    whole.reset(seed=5)
    whole_rewards = [whole.step(a)[1] for a in actions]
    whole_obs = whole.unwrapped._observation()

    first = _env(editor)
    first.reset(seed=5)
    rewards = [first.step(a)[1] for a in actions[:2]]
    first.unwrapped.save_episode(tmp_path / "ckpt", extra={"note": "half way", "xs": np.arange(3)})

    second = _env(editor)
    second.reset(seed=11)  # another episode in progress is replaced
    obs, extra = second.unwrapped.load_episode(tmp_path / "ckpt")
    assert extra["note"] == "half way" and extra["xs"].tolist() == [0, 1, 2]
    assert second.unwrapped._t == 2
    rewards += [second.step(a)[1] for a in actions[2:]]
    assert rewards == whole_rewards
    assert weights_hash(second) == weights_hash(whole)
    for key, value in whole_obs.items():
        np.testing.assert_array_equal(second.unwrapped._observation()[key], value)


def test_bad_checkpoints_are_refused_naming_the_file_and_change_nothing(tmp_path):
    env = _env("alphaedit")
    env.reset(seed=0)
    env.step(_actions(env, 1)[0])
    env.unwrapped.save_episode(tmp_path / "good")

    other = _env("alphaedit")
    other.reset(seed=1)
    other.step(_actions(other, 1, seed=9)[0])
    before, t_before = weights_hash(other), other.unwrapped._t

    def refused(folder, match):
        with pytest.raises(EpisodeFileError, match=match):
            other.unwrapped.load_episode(folder)
        assert weights_hash(other) == before and other.unwrapped._t == t_before

    refused(tmp_path / "missing", "is not a stream checkpoint")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in (META_FILE, TENSOR_FILE):
        (damaged / name).write_bytes((tmp_path / "good" / name).read_bytes())
    data = bytearray((damaged / TENSOR_FILE).read_bytes())
    data[-1] ^= 0xFF
    (damaged / TENSOR_FILE).write_bytes(bytes(data))
    refused(damaged, "episode.safetensors does not match the checksum")
    meta = json.loads((tmp_path / "good" / META_FILE).read_text())
    meta["info"]["edits_done"] = 4
    (damaged / META_FILE).write_text(json.dumps(meta))
    refused(damaged, "episode.json does not match its checksum")

    wider = _env("alphaedit", log_lambda=1.0)
    wider.reset(seed=0)
    with pytest.raises(EpisodeFileError, match="another configuration: log_lambda"):
        wider.unwrapped.load_episode(tmp_path / "good")


class _StopAfter:
    """RandomKAgent that raises (a stopped process) when asked for its ``stop``-th action."""

    def __init__(self, env, stop: int) -> None:
        self.inner, self.stop, self.calls = RandomKAgent(env, k=2, seed=4), stop, 0

    def predict(self, obs, deterministic=True):
        self.calls += 1
        if self.calls == self.stop:
            raise KeyboardInterrupt
        return self.inner.predict(obs, deterministic=deterministic)

    def episode_state(self):
        return self.inner.episode_state()

    def load_episode_state(self, state):
        self.inner.load_episode_state(state)


def _same_run(a: dict, b: dict) -> None:
    for key in ("before", "final", "immediate", "retention", "final_per_edit", "edits", "fault"):
        assert a[key] == b[key], key
    drop = ("seconds", "target_seconds")
    assert [{k: v for k, v in c.items() if k not in drop} for c in a["curve"]] == [
        {k: v for k, v in c.items() if k not in drop} for c in b["curve"]
    ]


def test_run_episode_resumes_a_stopped_run_and_a_stopped_final_evaluation(tmp_path):
    kw = {"extended": False, "progress": False, "retention_points": 2, "per_edit": True}
    env = _env("alphaedit")
    whole = run_episode(env, RandomKAgent(env, k=2, seed=4), 7, **kw)

    ckpt = tmp_path / "stream"
    with pytest.raises(KeyboardInterrupt):  # stopped before its 4th step; saved after the 2nd
        run_episode(env, _StopAfter(env, 4), 7, checkpoint=ckpt, checkpoint_every=2, **kw)
    with pytest.raises(EpisodeFileError, match="another run: seed=7 \\(now 8\\)"):
        run_episode(env, _StopAfter(env, 0), 8, checkpoint=ckpt, **kw)
    resumed = run_episode(_env("alphaedit"), _StopAfter(env, 0), 7, checkpoint=ckpt, checkpoint_every=2, **kw)
    _same_run(resumed, whole)
    assert resumed["resumed_at"] == [4]

    # the checkpoint now holds the finished stream: a rerun only evaluates, with the same result
    again = run_episode(_env("alphaedit"), _StopAfter(env, 1), 7, checkpoint=ckpt, **kw)
    _same_run(again, whole)
    assert again["resumed_at"] == [4, 8]


def test_cli_eval_continues_a_stopped_stream_and_removes_the_checkpoint(tmp_path, monkeypatch, capsys):
    from agents.baselines import AllCandidatesAgent
    from edit_gym.cli import main
    from edit_gym.result_file import load_result

    common = ["eval", "--env", "LifelongEdit-Tiny-v0", "--agent", "all", "--edits", "4", "--no-extended"]
    assert main([*common, "--json", str(tmp_path / "whole.json")]) == 0
    ckpt, out = tmp_path / "stream", tmp_path / "resumed.json"
    real, calls = AllCandidatesAgent.predict, []

    def stop_at_third(self, obs, *a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, obs, *a, **kw)

    monkeypatch.setattr(AllCandidatesAgent, "predict", stop_at_third)
    flags = ["--stream-checkpoint", str(ckpt), "--checkpoint-every", "1", "--json", str(out)]
    with pytest.raises(KeyboardInterrupt):
        main([*common, *flags])
    assert (ckpt / META_FILE).is_file() and not out.exists()
    monkeypatch.setattr(AllCandidatesAgent, "predict", real)
    assert main([*common, *flags]) == 0
    assert "removed the stream checkpoint" in capsys.readouterr().out and not ckpt.exists()
    whole, resumed = load_result(tmp_path / "whole.json"), load_result(out)
    assert resumed["resumed_at"] == [2]
    _same_run(resumed, whole)


def test_a_checkpoint_folder_gets_the_usual_permissions(tmp_path):
    """Written through a temporary folder (0700) and safetensors (0600 files), it ends as mkdir and
    open would leave it under the umask, so another account that may read the folder can."""
    import os

    import torch

    from edit_gym.episode_file import read_episode, write_episode

    mask = os.umask(0)
    os.umask(mask)
    folder = write_episode(tmp_path / "ckpt", {"w": torch.ones(2), "t": 3}, {"edits_done": 3})
    assert folder.stat().st_mode & 0o777 == 0o777 & ~mask
    for name in (META_FILE, TENSOR_FILE):
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    state, info = read_episode(folder)
    assert state["t"] == 3 and state["w"].tolist() == [1.0, 1.0] and info == {"edits_done": 3}
