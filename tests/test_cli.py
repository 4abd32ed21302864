"""The command line and the examples, run as a user would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edit_gym.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_envs_lists_every_id(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "LifelongEdit-v0" in out and "LifelongEdit-Tiny-MultiDiscrete-v0" in out
    assert "MultiBinary(L)" in out and "observation: Dict(request" in out


def test_envs_describes_every_action_type():
    from edit_gym.actions import ACTION_TYPES
    from edit_gym.cli import ACTION_SPACE_TEXT

    assert sorted(ACTION_SPACE_TEXT) == sorted(ACTION_TYPES)


def test_demo_trains_rledit_and_compares_it_with_its_rule(tmp_path, capsys):
    """The README's main job on the tiny env: train, evaluate both rows on one held-out stream."""
    from edit_gym.result_file import load_result

    argv = ["demo", "--env", "LifelongEdit-Tiny-v0", "--sequences", "2", "--edits-per-sequence", "3"]
    assert main([*argv, "--edits", "4", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "before the stream" in out and "efficacy" in out
    assert "ridge, all (untrained)" in out and "rledit, all (2 seq)" in out
    assert (
        "2 sequences x 3 edits of facts-train" in out and "4 held-out sequential edits of facts-test" in out
    )
    baseline = load_result(tmp_path / "demo" / "baseline.json")
    trained = load_result(tmp_path / "demo" / "rledit.json")
    assert baseline["before"] == trained["before"]  # one stream, one starting model
    assert baseline["config"]["editor"] == "ridge" and trained["config"]["editor"].startswith("rledit:")
    assert baseline["config"]["dataset"] == trained["config"]["dataset"] == "facts-test"
    assert baseline["before"]["specificity"] == 1.0 and 0.0 <= trained["final"]["efficacy"] <= 1.0
    assert {"fluency", "perplexity", "new_vs_true", "retention_first_n"} <= set(trained["final"])
    from agents.rledit import AGENT_FILE

    assert json.loads((tmp_path / "demo" / "rledit" / AGENT_FILE).read_text())["sequences_trained"] == 2


def test_demo_without_training_runs_the_baseline_row_only(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--env",
                "LifelongEdit-Tiny-v0",
                "--sequences",
                "0",
                "--edits",
                "3",
                "--agent",
                "fixed",
                "--baselines",
                "--out",
                str(out_dir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ridge, fixed (untrained)" in out and "rledit" not in out and "training effect" not in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["baseline.json"]


def test_demo_refuses_training_on_its_evaluation_data(tmp_path):
    from agents.demo import split_datasets

    assert split_datasets("facts", None) == ("facts-train", "facts-test")
    with pytest.raises(ValueError, match="is the evaluation data"):
        split_datasets("facts", "facts-test")
    with pytest.raises(ValueError, match="no built-in training split; give --train-dataset"):
        split_datasets("data/my_edits.json", None)


def test_eval_writes_config_protocol_and_curve(tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    argv = [
        "eval",
        "--agent",
        "agents.baselines:RandomKAgent",
        "--env",
        "LifelongEdit-Tiny-v0",
        "--edits",
        "4",
    ]
    argv += [
        "--edits-per-step",
        "2",
        "--editor",
        "covariance+nullspace",
        "--seed",
        "3",
        "--no-extended",
        "--json",
        str(out_json),
    ]
    assert main(argv) == 0
    result = json.loads(out_json.read_text())
    assert result["config"]["editor"] == "covariance+nullspace" and result["config"]["edits_per_step"] == 2
    assert result["seed"] == 3 and "timings" in result["protocol"] and len(result["curve"]) == 2
    assert result["curve"][-1]["edit_index"] == 4 and result["layers_touched_per_edit"] == pytest.approx(1.5)
    assert "fluency" not in result["final"] and result["seconds_per_edit"] > 0
    assert 0 < result["cpu_seconds_per_edit"] <= 2 * result["seconds_per_edit"] * (os.cpu_count() or 1)


def test_eval_loads_a_saved_sb3_model(tmp_path):
    import gymnasium as gym
    from stable_baselines3 import PPO

    env = gym.make("LifelongEdit-Tiny-Box-v0", num_edits=2)
    PPO("MultiInputPolicy", env, n_steps=4, batch_size=4, seed=0, device="cpu").save(tmp_path / "ppo")
    argv = [
        "eval",
        "--agent",
        "sb3",
        "--checkpoint",
        str(tmp_path / "ppo.zip"),
        "--env",
        "LifelongEdit-Tiny-Box-v0",
    ]
    assert main([*argv, "--edits", "2", "--no-extended", "--record", str(tmp_path / "results")]) == 0
    # recorded into the leaderboard's store, with the digest of the weights behind the row
    from edit_gym.cache import file_sha256
    from edit_gym.result_file import load_result

    (recorded,) = (tmp_path / "results" / "runs").rglob("*.json")
    assert load_result(recorded)["checkpoint_sha256"] == {"agent": file_sha256(tmp_path / "ppo.zip")[:16]}
    assert main(["eval", "--agent", "nowhere:Nothing", "--env", "LifelongEdit-Tiny-v0", "--edits", "2"]) == 2


def test_bad_arguments_exit_non_zero():
    run = subprocess.run(
        [sys.executable, "-m", "edit_gym.cli", "demo", "--agent", "oracle"], capture_output=True, text=True
    )
    assert run.returncode == 2 and "unknown agent 'oracle'" in run.stderr
    assert "loading" not in run.stderr  # refused before any model is loaded
    run = subprocess.run(
        [sys.executable, "-m", "edit_gym.cli", "demo", "--env", "LifelongEdit-Tiny-v0", "--edits", "5000"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "fewer than num_edits=5000" in run.stderr


# what each example must print (its last result line), so a silently empty run fails
EXAMPLE_OUTPUT = {
    "01_first_steps.py": "final_efficacy",
    "02_random_and_greedy.py": "all candidates",
    "03_sb3_ppo.py": "trained PPO on a held-out stream: final efficacy",
    "04_custom_ppo.py": "trained   held-out return",
    "05_rledit.py": "rledit  efficacy",
    "06_hiedit.py": "HiEdit (ridge low level) on a held-out stream",
    "07_your_own_agent.py": "check_agent: {'edits': 10",
    "08_results_and_plots.py": "plot efficacy_vs_edits",
}


# examples run, with more checks, by their own test file
TESTED_ELSEWHERE = {"09_rllib_ppo.py": "tests/test_rllib.py"}


def test_every_example_is_listed():
    listed = {*EXAMPLE_OUTPUT, *TESTED_ELSEWHERE}
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(listed)
    assert all((ROOT / test).is_file() for test in TESTED_ELSEWHERE.values())


@pytest.mark.parametrize("script", sorted(EXAMPLE_OUTPUT))
def test_example_runs(script):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, f"{script} failed:\n{run.stderr[-2000:]}"
    assert EXAMPLE_OUTPUT[script] in run.stdout, run.stdout[-2000:]


def test_bench_prints_and_writes_every_section(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--ids", "LifelongEdit-Tiny-v0", "--editors", "ridge", "--steps", "2"]
    assert (
        main([*argv, "--cost-edits", "8", "--cost-window", "4", "--vector", "1", "2", "--json", str(out)])
        == 0
    )
    report = json.loads(out.read_text())
    (step,) = report["step_overhead"]
    assert step["id"] == "LifelongEdit-Tiny-v0" and step["candidates"] == 6
    assert step["overhead_ratio"] == pytest.approx(step["step_s"] / step["passes_s"])
    assert step["peak_rss_mib"] > 50
    (lat,) = report["edit_latency"]
    assert lat["editor"] == "ridge" and lat["edit_over_fwd_bwd"] > 1.0  # an edit is a fwd+bwd plus the update
    (cost,) = report["cost_growth"]
    assert cost["edits"] == 8 and cost["faults"] == 0 and cost["ratio"] > 0
    one, two = report["vector_memory"]
    assert (one["num_envs"], two["num_envs"]) == (1, 2) and two["ratio_to_first"] == pytest.approx(
        two["peak_rss_mib"] / one["peak_rss_mib"]
    )
    assert "overhead" in capsys.readouterr().out
    assert main(["bench", "--ids", "NoSuch-v0"]) == 2
    assert "unknown env id" in capsys.readouterr().err


def test_demo_takes_an_agent_class(tmp_path, capsys):
    assert (
        main(
            ["demo", "--env", "LifelongEdit-Tiny-v0", "--edits", "2", "--sequences", "0"]
            + ["--agent", "agents:AllCandidatesAgent", "--out", str(tmp_path)]
        )
        == 0
    )
    assert "ridge, agents:AllCandidatesAgent (untrained)" in capsys.readouterr().out


def test_demo_trains_and_compares_on_the_models_swept_band(tmp_path, monkeypatch):
    """Both rows of the demo edit the band the net trains on (MODEL_BANDS), not every candidate."""
    from agents import rledit
    from agents.demo import run_demo

    monkeypatch.setitem(rledit.MODEL_BANDS, "tiny", "2:4")
    run = run_demo(
        "LifelongEdit-Tiny-v0",
        sequences=1,
        edits_per_sequence=2,
        edits=2,
        out=tmp_path,
        progress_bar=False,
        baselines=(),
    )
    every = [f"model.layers.{i}.mlp.down_proj" for i in range(6)]
    assert run.candidates == every[2:4]
    assert [r["candidate_names"] for r in run.rows.values()] == [every[2:4], every[2:4]]
    assert [r["touched_fraction"] for r in run.rows.values()] == [1.0, 1.0]


def test_demo_runs_a_faithful_editor_on_its_own_band_and_states_the_training_effect(tmp_path, capsys):
    """The faithful row edits the method's band among the default candidates, on the same stream
    (its pre-edit scores are the untrained row's); the effect line is the paired per-edit mean."""
    import gymnasium as gym

    from edit_gym.stats import paired_effect as training_effect

    argv = ["demo", "--env", "LifelongEdit-Tiny-v0", "--edits", "3", "--sequences", "1"]
    assert main([*argv, "--edits-per-sequence", "2", "--baselines", "memit", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "memit, band (faithful)" in out and "training effect (rledit, all (1 seq)" in out
    rows = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert set(rows) == {"baseline", "memit", "rledit"}
    faithful, untrained, trained = rows["memit"], rows["baseline"], rows["rledit"]
    probe = gym.make("LifelongEdit-Tiny-v0", editor="memit", num_edits=1)
    band = probe.unwrapped.method.band()
    probe.close()
    assert len(faithful["candidate_names"]) == 6 and faithful["touched_fraction"] == len(band) / 6
    assert faithful["before"] == untrained["before"]
    # each edit's own final efficacy is the last retention row's
    assert untrained["final_per_edit"]["efficacy"] == untrained["retention"]["efficacy"][-1]
    effect = training_effect(untrained, trained)
    for score in ("efficacy", "specificity"):
        per_edit = [r["final_per_edit"][score] for r in (untrained, trained)]
        mean, _, n = effect[score]
        assert n == 3 and mean == pytest.approx(sum(b - a for a, b in zip(*per_edit, strict=True)) / 3)
        assert f"{score} {100 * mean:+.1f} points" in out
    # the per-edit specificities average to the run's specificity (the tiny facts: 1 probe each)
    assert sum(untrained["final_per_edit"]["specificity"]) / 3 == pytest.approx(
        untrained["final"]["specificity"]
    )


def test_training_effect_is_the_paired_mean_with_its_interval():
    from edit_gym.stats import paired_effect

    nan = float("nan")

    def run(efficacy, specificity):
        return {"final_per_edit": {"efficacy": efficacy, "specificity": specificity}}

    effect = paired_effect(run([0.0, 0.5, 1.0], [1.0, nan, 0.5]), run([1.0, 0.5, 1.0], [0.5, 1.0, 0.5]))
    mean, half, n = effect["efficacy"]
    assert (n, mean) == (3, pytest.approx(1 / 3)) and half == pytest.approx(
        4.303 * (1 / 3) ** 0.5 / 3**0.5, rel=1e-3
    )
    mean, half, n = effect["specificity"]  # the edit without locality prompts is left out
    assert (n, mean) == (2, pytest.approx(-0.25)) and half == pytest.approx(12.706 * 0.25, rel=1e-3)
    with pytest.raises(ValueError, match="per-edit final efficacy"):
        paired_effect(run([0.0], [1.0]), {"final_per_edit": {}})


def test_compare_pairs_two_eval_runs_of_one_stream_and_refuses_two_streams(tmp_path, capsys):
    """`eval --json` records each edit's own final scores; `compare` prints both runs and the
    paired differences, and refuses runs of different streams, naming what differs."""
    from edit_gym.cli import main
    from edit_gym.result_file import load_result
    from edit_gym.stats import paired_effect

    common = ["eval", "--env", "LifelongEdit-Tiny-v0", "--edits", "4", "--no-extended"]
    files = {}
    for agent, seed in (("all", 0), ("fixed", 0), ("fixed", 1)):
        files[agent, seed] = tmp_path / f"{agent}{seed}.json"
        assert main([*common, "--agent", agent, "--seed", str(seed), "--json", str(files[agent, seed])]) == 0
    base, other = load_result(files["all", 0]), load_result(files["fixed", 0])
    assert len(base["final_per_edit"]["efficacy"]) == 4
    capsys.readouterr()
    assert main(["compare", str(files["all", 0]), str(files["fixed", 0]), "--names", "all", "fixed"]) == 0
    out = capsys.readouterr().out
    mean, half, n = paired_effect(base, other)["efficacy"]
    assert f"efficacy {100 * mean:+.1f} points, 95% interval +-{100 * half:.1f} ({n} edits)" in out
    rows = [
        line.split()[0]
        for line in out.splitlines()
        if re.match(r"^(before the stream|all|fixed) +[0-9.]+%", line)
    ]
    assert "fixed - all, paired edit by edit" in out and rows == ["before", "all", "fixed"], out
    assert main(["compare", str(files["all", 0]), str(files["fixed", 1])]) == 2
    assert "different streams: seed 0 vs 1" in capsys.readouterr().err


def test_eval_reuse_before_takes_the_streams_pre_edit_scores_from_the_store(tmp_path, capsys):
    from edit_gym.cli import main
    from edit_gym.result_file import load_result

    common = ["eval", "--env", "LifelongEdit-Tiny-v0", "--edits", "4", "--no-extended"]
    store = tmp_path / "results"
    assert main([*common, "--agent", "all", "--record", str(store), "--json", str(tmp_path / "a.json")]) == 0
    capsys.readouterr()
    out = tmp_path / "b.json"
    assert main([*common, "--agent", "fixed", "--reuse-before", str(store), "--json", str(out)]) == 0
    (recorded,) = (store / "runs").rglob("*.json")
    assert f"pre-edit scores from {recorded}" in capsys.readouterr().err
    reused = load_result(out)
    assert reused["before_from"] == str(recorded)
    assert reused["before"] == load_result(tmp_path / "a.json")["before"]
    # another stream (seed 1): none recorded, computed and said so
    assert main([*common, "--agent", "fixed", "--seed", "1", "--reuse-before", str(store)]) == 0
    assert "no recorded run in" in capsys.readouterr().err
