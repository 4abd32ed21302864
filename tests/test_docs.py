"""Docs do not rot: every command in README.md and docs/*.md is checked, and the tutorial and the
extending guide run, block by block, on the tiny environment.

* ``edit-gym ...`` lines are parsed by the real argument parser (unknown flags fail);
* ``python benchmarks/X.py ...`` lines: the script exists and every flag is in its ``--help``;
* ``python examples/X.py``, ``bash setup.sh``: the file exists (the examples run in test_cli.py);
* docs/tutorial.md and docs/extending.md: every bash and python block runs, in order, in a
  temporary folder (SmolLM2 commands elsewhere are only parsed: they take an hour on a CPU).
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from edit_gym.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("tutorial.md", "extending.md")
SETUP_LINES = ("python3 -m venv .venv", ".venv/bin/python -m pip install torch")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of every fenced block of a Markdown file, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text())]


def commands(code: str) -> list[str]:
    """The shell commands of a bash block: continuations joined, comments dropped."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
        out.extend(part.strip() for part in line.split("&&") if part.strip())
    return out


ALL_COMMANDS = [
    (p.name, c) for p in DOCS for lang, code in blocks(p) if lang == "bash" for c in commands(code)
]


@functools.cache
def _help(script: Path) -> str:
    run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-1000:]
    return run.stdout


@pytest.mark.parametrize(("doc", "command"), ALL_COMMANDS, ids=[f"{d}:{c[:50]}" for d, c in ALL_COMMANDS])
def test_doc_command_is_valid(doc, command):
    argv = shlex.split(command)
    tool = re.sub(r"^\.venv[\w-]*/bin/", "", argv[0])  # .venv/bin/python, .venv-rllib/bin/python
    if command in SETUP_LINES:
        return
    if tool == "edit-gym":
        build_parser().parse_args(argv[1:])  # SystemExit on an unknown flag or subcommand
    elif tool in ("python", "python3") and argv[1] == "-m":
        assert argv[2] in ("pytest", "agents.ppo", "edit_gym.cli"), command
    elif tool in ("python", "python3"):
        script = ROOT / argv[1]
        assert script.is_file(), f"{doc}: {argv[1]} does not exist"
        if argv[1].startswith("benchmarks/"):
            flags = {a.split("=")[0] for a in argv[2:] if a.startswith("--")}
            missing = [f for f in flags if f not in _help(script)]
            assert not missing, f"{doc}: {argv[1]} has no {missing}"
    elif tool == "bash":
        assert (ROOT / argv[1]).is_file(), f"{doc}: {argv[1]} does not exist"
    else:
        pytest.fail(f"{doc}: a command this test cannot check: {command!r}")


def test_python_blocks_compile():
    for path in DOCS:
        for i, (lang, code) in enumerate(blocks(path)):
            if lang == "python":
                compile(code, f"{path.name} block {i}", "exec")


@pytest.mark.parametrize("doc", RUNNABLE)
def test_guide_runs_block_by_block(doc, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ran = 0
    for i, (lang, code) in enumerate(blocks(ROOT / "docs" / doc)):
        if lang == "python":
            exec(compile(code, f"{doc} block {i}", "exec"), {"__name__": f"docs_{i}"})
        elif lang == "bash":
            for command in commands(code):
                argv = shlex.split(command)
                assert argv[0] == "edit-gym", f"{doc}: runnable guides use edit-gym commands only: {command}"
                assert main(argv[1:]) == 0, f"{doc} block {i}: {command} failed:\n{capsys.readouterr().err}"
        else:
            continue
        ran += 1
    assert ran >= 3
    if doc == "tutorial.md":
        for figure in ("mask_heatmap", "retention_matrix", "efficacy_vs_edits"):
            assert (tmp_path / "runs" / "hiedit_plots" / f"{figure}.png").stat().st_size > 5000
        assert any((tmp_path / "runs" / "tb" / "hiedit-eval").iterdir())
