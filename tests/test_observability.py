"""Plots, the shared TensorBoard layout, and the agent checks (edit_gym.plots,
edit_gym.tensorboard_layout, edit_gym.testing) on the tiny env."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from edit_gym.cli import main
from edit_gym.plots import FIGURES, load_result
from edit_gym.tensorboard_layout import HISTOGRAM_TAGS, PLOT_TAGS, SAMPLES_TAG, STEP_TAGS
from edit_gym.testing import AgentCheckError, check_agent
from tests.conftest import tensorboard_tags

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    code = main(
        [
            "eval", "--agent", "random", "--env", "LifelongEdit-Tiny-v0", "--edits", "12", "--seed", "3",
            "--no-extended", "--retention-points", "4", "--samples", "3",
            "--json", str(out / "run.json"), "--plots", str(out / "plots"), "--tensorboard", str(out / "tb"),
        ]
    )  # fmt: skip
    assert code == 0
    return out


def test_result_file_carries_format_version_and_a_checked_checksum(eval_run, tmp_path):
    text = (eval_run / "run.json").read_text()
    result = json.loads(text)
    assert result["format"] == "edit-gym-result" and result["version"] == 1 and len(result["sha256"]) == 64
    edited = tmp_path / "edited.json"
    edited.write_text(text.replace(f'"edits": {result["edits"]}', f'"edits": {result["edits"] + 1}', 1))
    with pytest.raises(ValueError, match="does not match its checksum"):
        load_result(edited)
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        load_result(cut)
    legacy = tmp_path / "legacy.json"  # written before results carried a format
    legacy.write_text(
        json.dumps({k: v for k, v in result.items() if k not in ("format", "version", "sha256")})
    )
    assert load_result(legacy)["edits"] == result["edits"]
    future = tmp_path / "future.json"
    future.write_text(json.dumps({**result, "version": 2}))
    with pytest.raises(ValueError, match="result version 2"):
        load_result(future)


def test_eval_json_holds_retention_matrix_and_samples(eval_run):
    result = load_result(eval_run / "run.json")
    ret = result["retention"]
    assert ret["after_edit"] == [3, 6, 9, 12]
    assert [len(row) for row in ret["efficacy"]] == [3, 6, 9, 12]
    # the last row is the final evaluation, edit by edit
    assert np.mean(ret["efficacy"][-1]) == pytest.approx(result["final"]["efficacy"], abs=1e-9)
    assert np.mean(ret["efficacy"][-1][:10]) == pytest.approx(result["final"]["retention_first_n"], abs=1e-9)
    assert len(result["samples"]) == 3
    assert set(result["samples"][0]) == {
        "prompt",
        "target_new",
        "target_true",
        "output_before",
        "output_after",
    }
    assert all(len(step["edited_candidates"]) == step["layers_touched"] for step in result["curve"])


def test_eval_and_plot_write_the_three_pngs(eval_run, tmp_path):
    for name in FIGURES:
        data = (eval_run / "plots" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    assert main(["plot", str(eval_run / "run.json"), "--out", str(tmp_path / "again")]) == 0
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(f"{n}.png" for n in FIGURES)


def test_plot_rejects_a_file_that_is_not_a_run(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    assert main(["plot", str(bad)]) == 2
    assert "not an evaluation result" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "missing.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_tensorboard_run_has_the_layout(eval_run):
    tags = tensorboard_tags(eval_run / "tb")
    scalars = tags["scalars"]
    assert set(STEP_TAGS) | {"reward/total", "edit/final_efficacy", "edit/final_generalization"} <= scalars
    assert set(PLOT_TAGS) <= tags["images"]
    assert set(HISTOGRAM_TAGS) <= tags["histograms"]
    assert f"{SAMPLES_TAG}/text_summary" in tags["tensors"]  # how TensorBoard stores text
    assert "_hparams_/experiment" in tags["hparams"]


def test_sb3_callback_logs_the_layout(tmp_path):
    from stable_baselines3 import PPO

    from agents.callbacks import EditMetricsCallback
    from agents.features import LayerStatsExtractor

    env = gym.make("LifelongEdit-Tiny-v0", action_type="mask", num_edits=4)
    model = PPO(
        "MultiInputPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0,
        policy_kwargs={"features_extractor_class": LayerStatsExtractor}, tensorboard_log=str(tmp_path),
    )  # fmt: skip
    model.learn(32, callback=EditMetricsCallback())
    scalars = tensorboard_tags(tmp_path)["scalars"]
    assert {"reward/total", "reward/edit", "edit/immediate_efficacy", "action/mask_density"} <= scalars
    assert "train/policy_gradient_loss" in scalars  # SB3's own tags sit beside ours


@pytest.mark.parametrize("name", ["all", "fixed", "topk-grad", "random"])
def test_check_agent_passes_every_baseline(name):
    from agents import BASELINES

    env = gym.make("LifelongEdit-Tiny-v0", num_edits=3)
    summary = check_agent(BASELINES[name](env), env, deterministic_agent=name != "random")
    assert summary["edits"] == 3 and np.isfinite(summary["return"])


class _NoPredict:
    pass


class _BareAction:
    def __init__(self, env):
        self.env = env

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.env.action_space.sample()


class _OutOfSpace(_BareAction):
    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        n = self.env.unwrapped.num_candidates
        return {"mask": np.ones(n, np.int8), "coef": np.full(n, 5.0, np.float32)}, None


class _Mutates(_BareAction):
    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        obs["layer_stats"][:] = 0.0
        n = self.env.unwrapped.num_candidates
        return {"mask": np.ones(n, np.int8), "coef": np.zeros(n, np.float32)}, None


class _Flaky(_BareAction):
    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.env.action_space.sample(), None


@pytest.mark.parametrize(
    ("agent_cls", "message"),
    [
        (_NoPredict, "has no predict"),
        (_BareAction, "must return (action, state)"),
        (_OutOfSpace, "not in the env's action space"),
        (_Mutates, "modified the observation"),
        (_Flaky, "deterministic predictions"),
    ],
)
def test_check_agent_names_the_broken_promise(agent_cls, message):
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=3)
    env.action_space.seed(0)
    agent = agent_cls() if agent_cls is _NoPredict else agent_cls(env)
    with pytest.raises(AgentCheckError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_agent(agent, env)
