"""Shipped checkpoints: shipping, resolving short names (CLI and editor specs), digests, the listing."""

from __future__ import annotations

import json
import time

import gymnasium as gym
import pytest

from agents.rledit import RLEditAgent, RLEditConfig
from edit_gym import shipped
from edit_gym.cache import folder_sha256
from edit_gym.cli import main
from edit_gym.shipped import Shipped, resolve_checkpoint, ship, shipped_checkpoints


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty shipped-checkpoint folder in place of the package's, and one tiny RLEdit checkpoint."""
    folder = tmp_path / "shipped"
    monkeypatch.setattr(shipped, "SHIPPED_DIR", folder)
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=2, final_eval=False)
    source = RLEditAgent(env, RLEditConfig(rank=4, seed=0)).save(tmp_path / "trained")
    env.close()
    return folder, source


def _entry(name="rledit-tiny"):
    return Shipped(name, "rledit", "tiny", "an untrained test net", "", "python -c 'pass'")


def test_a_shipped_name_resolves_to_its_verified_folder_everywhere(store, tmp_path, capsys):
    folder, source = store
    entry = ship(source, _entry())
    assert entry.sha256 == folder_sha256(source) == folder_sha256(folder / "rledit-tiny")
    assert [e.name for e in shipped_checkpoints()] == ["rledit-tiny"]
    assert resolve_checkpoint("rledit-tiny") == str(folder / "rledit-tiny")
    # the CLI's --checkpoint and the env's editor spec take the name; the record carries the digest
    out = tmp_path / "r.json"
    argv = ["eval", "--agent", "rledit", "--checkpoint", "rledit-tiny", "--env", "LifelongEdit-Tiny-v0"]
    assert main([*argv, "--edits", "2", "--no-extended", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["checkpoint_sha256"] == {"rule": entry.sha256[:16]}
    assert record["config"]["editor"] == "rledit:rledit-tiny"  # the name, not this machine's path
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=2, editor="rledit:rledit-tiny")
    assert env.unwrapped.cfg.editor == "rledit:rledit-tiny"
    env.close()
    capsys.readouterr()
    assert main(["checkpoints"]) == 0
    listing = capsys.readouterr().out
    assert "rledit-tiny" in listing and entry.sha256[:16] in listing and "python -c 'pass'" in listing


def test_a_local_folder_of_the_same_name_wins(store, tmp_path, monkeypatch):
    _, source = store
    ship(source, _entry("trained"))
    monkeypatch.chdir(tmp_path)  # ./trained is the local checkpoint
    assert resolve_checkpoint("trained") == "trained"
    assert resolve_checkpoint("no-such-name") == "no-such-name"  # the loader says it is missing


def test_a_changed_shipped_file_is_refused_naming_the_checkpoint(store):
    folder, source = store
    ship(source, _entry())
    assert resolve_checkpoint("rledit-tiny") == str(folder / "rledit-tiny")  # verified once, remembered
    time.sleep(0.05)  # past the file system's timestamp granularity: the change shows in mtime
    weights = folder / "rledit-tiny" / "hypernet.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="'rledit-tiny'.*does not match its digest"):
        resolve_checkpoint("rledit-tiny")


def test_bad_shipments_and_indexes_are_refused(store):
    folder, source = store
    (source / "extra.pkl").write_bytes(b"not allowed")
    with pytest.raises(ValueError, match="only"):
        ship(source, _entry())
    (source / "extra.pkl").unlink()
    with pytest.raises(ValueError, match="not a plain word"):
        ship(source, _entry("../escape"))
    assert not folder.exists() or not any(folder.iterdir())  # nothing was written
    ship(source, _entry())
    ship(source, _entry())  # the same name again replaces the entry
    assert [e.name for e in shipped_checkpoints()] == ["rledit-tiny"]
    (folder / "index.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="index.json is not a shipped-checkpoint index"):
        shipped_checkpoints()


@pytest.mark.parametrize("entry", shipped_checkpoints(), ids=lambda e: e.name)
def test_every_shipped_checkpoint_matches_its_digest(entry):
    assert folder_sha256(shipped.SHIPPED_DIR / entry.name) == entry.sha256


def test_the_demo_runs_every_shipped_checkpoint_of_its_model(store, tmp_path):
    from agents.demo import run_demo

    _, source = store
    ship(source, _entry())
    ship(source, Shipped("rledit-other", "rledit", "smollm2-135m", "another model's", "", "-"))
    run = run_demo(
        "LifelongEdit-Tiny-v0", sequences=0, edits=2, out=tmp_path / "demo", baselines=(), progress_bar=False
    )
    assert list(run.rows) == ["ridge, all (untrained)", "rledit-tiny, all (shipped)"]
    shipped_row = run.rows["rledit-tiny, all (shipped)"]
    assert shipped_row["config"]["editor"] == "rledit:rledit-tiny"
    assert shipped_row["before"] == run.rows["ridge, all (untrained)"]["before"]
    assert (tmp_path / "demo" / "rledit-tiny.json").is_file()


def test_a_shipped_low_level_keeps_its_name_in_the_selectors_editor_spec(store):
    from agents.hiedit import editor_spec

    _, source = store
    ship(source, _entry())
    assert editor_spec("rledit-tiny") == "rledit:rledit-tiny"
    assert editor_spec(str(source)) == f"rledit:{source}"
    assert editor_spec("ridge") == "ridge"
