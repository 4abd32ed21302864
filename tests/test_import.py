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
    with pytest.raises(ValueError, match="multiple of edits_per_step"):
        make_config(num_edits=5, edits_per_step=2)
    with pytest.raises(ValueError, match="unknown reward mode"):
        make_config(reward="nope")
