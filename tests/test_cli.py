"""The command line and the examples, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edit_gym.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_envs_lists_every_id(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "LifelongEdit-v0" in out and "LifelongEdit-Tiny-MultiDiscrete-v0" in out


def test_demo_on_tiny_prints_table_and_json(tmp_path, capsys):
    out_json = tmp_path / "demo.json"
    assert (
        main(
            [
                "demo",
                "--env",
                "LifelongEdit-Tiny-v0",
                "--edits",
                "3",
                "--agent",
                "all",
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "before" in out and "after" in out and "efficacy" in out
    result = json.loads(out_json.read_text())
    assert result["before"]["specificity"] == 1.0 and 0.0 <= result["after"]["efficacy"] <= 1.0


def test_bad_arguments_exit_non_zero():
    run = subprocess.run(
        [sys.executable, "-m", "edit_gym.cli", "demo", "--agent", "oracle"], capture_output=True, text=True
    )
    assert run.returncode == 2 and "invalid choice: 'oracle'" in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "edit_gym.cli", "demo", "--env", "LifelongEdit-Tiny-v0", "--edits", "5000"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "fewer than num_edits=5000" in run.stderr


def test_examples_run():
    for script in sorted((ROOT / "examples").glob("*.py")):
        run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{script.name} failed:\n{run.stderr[-2000:]}"
        assert "final_efficacy" in run.stdout
