import subprocess
import sys

import gymnasium as gym

import edit_gym


def test_import_is_light():
    code = (
        "import edit_gym, sys; bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ids_registered_and_idempotent():
    ids = edit_gym.env_ids()
    assert "LifelongEdit-v0" in ids and "LifelongEdit-Tiny-v0" in ids
    assert {kw["action_type"] for kw in ids.values()} == {"dict", "box", "multidiscrete", "mask"}
    edit_gym.register_envs()  # second registration must not raise or duplicate
    for env_id, kwargs in ids.items():
        assert gym.spec(env_id).kwargs == kwargs


def test_default_config_and_unknown_option():
    import pytest

    from edit_gym.config import make_config

    cfg = edit_gym.default_config()
    assert cfg["model"] == "smollm2-135m" and cfg["action_type"] == "dict"
    with pytest.raises(TypeError, match="num_edit"):
        make_config(num_edit=3)
    with pytest.raises(ValueError, match="larger than the stream"):
        make_config(num_edits=5, edits_per_step=6)
    assert make_config(num_edits=5, edits_per_step=2).edits_per_step == 2  # the last step takes 1
    with pytest.raises(ValueError, match="unknown reward mode"):
        make_config(reward="nope")


def _imports(path) -> set[str]:
    """Every module a source file imports (top level and inside functions)."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_imports_go_one_way():
    """The command line sits on top: no module of either package imports it; resolving an agent by
    name lives in the agents (agents.registry); the safe SB3 loader and HiEdit share the extractor
    from agents.features instead of importing each other."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in [*(root / "agents").glob("*.py"), *(root / "edit_gym").rglob("*.py")]:
        if path.name != "cli.py":
            assert "edit_gym.cli" not in _imports(path), f"{path.relative_to(root)} imports the CLI"
    assert "agents.hiedit" not in _imports(root / "agents" / "sb3_safe.py")
    assert "agents.sb3_safe" in _imports(root / "agents" / "hiedit.py")
    edit_gym_modules = [p for p in (root / "edit_gym").rglob("*.py") if p.name != "cli.py"]
    for path in edit_gym_modules:  # the environment suite never needs the agents
        assert not any(m == "agents" or m.startswith("agents.") for m in _imports(path)), path.name
