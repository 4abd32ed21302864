"""benchmarks/hiedit_learning_curve.py: the held-out baselines (the method's band among them) and the
curve over training seeds (``--combine``)."""

from __future__ import annotations

import json
import sys

import gymnasium as gym
import numpy as np
import pytest

from agents import RandomKAgent
from tests.conftest import benchmark_module


@pytest.fixture(scope="module")
def curve():
    return benchmark_module("hiedit_learning_curve")


def test_the_band_is_a_held_out_baseline_over_a_named_method(curve):
    env = gym.make("LifelongEdit-Tiny-v0", editor="memit", num_edits=2, reward="advantage", final_eval=False)
    band = env.unwrapped.method.band()
    learned = RandomKAgent(env, k=1, seed=5)  # any selector with predict()
    point = curve.evaluate(env, learned, [100, 101], budget=len(band))
    assert len(point["band"]["returns"]) == 2
    assert point["band"]["touched"] == pytest.approx(len(band) / env.unwrapped.num_candidates)
    assert all(np.isfinite(point["band"]["returns"]))
    # the band's episodes are played once and reused, like the other baselines
    assert 0.0 <= point["band"]["efficacy"] <= 1.0 and 0.0 <= point["band"]["specificity"] <= 1.0
    again = curve.evaluate(
        env, learned, [100, 101], budget=len(band), baselines={"band": [(1.0, 0.5, 0.25, 1.0)] * 2}
    )
    assert again["band"]["returns"] == [1.0, 1.0] and again["band"]["efficacy"] == 0.25


def test_a_one_step_rule_has_no_band_baseline(curve):
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=2, reward="advantage", final_eval=False)
    point = curve.evaluate(env, RandomKAgent(env, k=1, seed=0), [100], budget=2)
    assert point["band"]["returns"] == []
    assert len(point["random_k"]["returns"]) == 1


def _run(seed: int, learned: list[list[float]], band: list[float] | None = None) -> dict:
    args = {key: None for key in ("env", "low_level", "train_data", "test_data", "trainer", "budget")}
    args |= {"edits": 4, "timesteps": 16, "eval_every": 8, "eval_seeds": [100, 101], "learning_rate": 3e-3}
    args |= {"w_sparse": 0.1, "reference": "band", "seed": seed, "env": "LifelongEdit-Tiny-v0"}
    args |= {"low_level": "memit", "train_data": "facts-train", "test_data": "facts-test"}
    args |= {"trainer": "maskable", "budget": 2}
    points = []
    for step, returns in zip((0, 8, 16), learned, strict=True):
        points.append(
            {
                "step": step,
                "k": 2,
                "learned_masks": [[seed]],
                "distinct_masks": 1,
                "learned": {"returns": returns, "touched": 0.25 * (seed + 1), "efficacy": 0.5 * seed},
                "random_k": {"returns": [-1.0, -3.0], "touched": 0.5, "efficacy": 0.1},
                "band": {"returns": band or [-0.5, -0.7], "touched": 0.5, "efficacy": 0.9},
            }
        )
    return {"args": args, "command": "c", "machine": "m", "seconds": 10.0, "points": points}


def test_combine_averages_each_training_seed_then_takes_the_interval_over_seeds(curve, tmp_path, monkeypatch):
    paths = []
    for seed, returns in enumerate(([[0, 2], [1, 3], [2, 4]], [[2, 4], [3, 5], [4, 6]])):
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps(_run(seed, returns)))
        paths.append(path)
    monkeypatch.setattr(sys, "argv", ["x", "--combine", *map(str, paths)])
    data = curve.combine(paths)
    assert data["training_seeds"] == [0, 1]
    assert [p["learned"]["returns"] for p in data["points"]] == [[1.0, 3.0], [2.0, 4.0], [3.0, 5.0]]
    assert data["points"][0]["learned"]["touched"] == pytest.approx(0.375)
    assert data["points"][0]["band"]["returns"] == [-0.5, -0.7]  # over held-out seeds, as recorded
    assert data["points"][0]["learned_masks"] == [(0,), (1,)] and data["seconds"] == 20.0
    out = tmp_path / "combined.md"
    curve.write_markdown(data, out)
    text = out.read_text()
    assert "over 2 training seeds [0, 1]" in text and "reference `band`" in text
    assert "| 16 | 4.000 ± 12.706 |" in text  # seed means 3 and 5: t(0.975, 1) * std([3, 5]) / sqrt(2)
    for point in data["points"]:
        for name in ("learned", "random_k", "band"):
            point[name]["specificity"] = 1.0
    curve.write_markdown(data, out)
    text = out.read_text()
    assert "| learned | 38% | 25.0 | 100.0 |" in text and "| band | 50% | 90.0 | 100.0 |" in text


def test_combine_refuses_runs_of_other_settings(curve, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_run(0, [[0], [1], [2]])))
    other = _run(1, [[0], [1], [2]])
    other["args"]["reference"] = "all"
    b.write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="b.json: not the same setting .*reference differ"):
        curve.combine([a, b])
    b.write_text(json.dumps(_run(1, [[0], [1], [2]], band=[9.0, 9.0])))
    with pytest.raises(SystemExit, match="band baseline's held-out returns differ"):
        curve.combine([a, b])
    b.write_text(json.dumps(_run(0, [[0], [1], [2]])))
    with pytest.raises(SystemExit, match="training seeds repeat"):
        curve.combine([a, b])
    b.write_text("{not json")
    with pytest.raises(SystemExit, match="b.json: not a readable learning-curve JSON"):
        curve.combine([a, b])
