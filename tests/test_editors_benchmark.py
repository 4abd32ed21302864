"""benchmarks/editors.py: the single-edit protocol behind the editors' table (tiny model)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import benchmark_module, weights_hash


def _editors_module():
    return benchmark_module("editors")


def test_single_edits_start_from_the_pristine_model_and_batch_targets_like_one_at_a_time():
    from edit_gym.env import LifelongEditEnv

    editors = _editors_module()
    env = LifelongEditEnv(model="tiny", dataset="facts", editor="rome", num_edits=4, final_eval=False)
    env.reset(seed=0)
    pristine = weights_hash(env)
    alone = editors.single_edits(env, records=4, batch=1)
    batched = editors.single_edits(env, records=4, batch=2)
    assert weights_hash(env) == pristine  # every edit was scored alone, then undone
    assert (
        [r["uid"] for r in alone]
        == [r["uid"] for r in batched]
        == [env.requests[int(i)].uid for i in env._stream[:4]]
    )
    assert not any("fault" in r for r in alone)
    for a, b in zip(alone, batched, strict=True):
        assert b["target_nll"] == pytest.approx(a["target_nll"], abs=1e-3)
        assert b["efficacy_score"] == a["efficacy_score"]
    summary = editors.summarize(alone)
    mean, half = summary["efficacy"]
    assert mean == pytest.approx(np.mean([r["efficacy"] for r in alone])) and half >= 0
    assert set(summary) == set(editors.SINGLE_METRICS)


def test_speed_times_each_editor_in_one_run_and_states_the_ratio(tmp_path):
    import argparse
    import json

    editors = _editors_module()
    out = tmp_path / "speed.json"
    args = argparse.Namespace(
        editors=["alphaedit", "ridge"],
        model="tiny",
        data="facts",
        editor_params=None,
        batch=2,
        steps=1,
        out=str(out),
    )
    editors.speed(args)
    record = json.loads(out.read_text())
    timings = record["timings"]
    assert set(timings) == {"alphaedit", "ridge"} and set(timings["ridge"]) == {"1", "2"}
    for per_step in ("1", "2"):
        ratio = (
            timings["ridge"][per_step]["seconds_per_edit"]
            / timings["alphaedit"][per_step]["seconds_per_edit"]
        )
        line = f"ridge / alphaedit, {per_step} request(s) per step: {100 * ratio:.1f}% of the time per edit"
        assert line in record["lines"]
        assert timings["alphaedit"][per_step]["passes_per_edit"] > 0
    # an optimized target makes many batched calls per step; a one-step rule a handful
    calls = {e: timings[e]["1"]["model_calls_per_edit"] for e in ("alphaedit", "ridge")}
    assert calls["alphaedit"] > calls["ridge"] >= 1


def test_stream_records_each_edits_final_scores_and_rebuilds_the_leaderboard(tmp_path, monkeypatch):
    import argparse
    import json

    editors = _editors_module()
    monkeypatch.setattr(editors, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(editors, "ROOT", tmp_path)
    monkeypatch.setattr(editors, "STREAM_CHECKPOINTS", tmp_path / "checkpoints")
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# a readme\n")
    args = argparse.Namespace(
        editors=["rome"],
        model="tiny",
        data="facts",
        editor_params=None,
        tag="",
        edits=4,
        edits_per_step=2,
        seeds=[0],
        wild=False,
        force=False,
        reuse_before=False,
        progress=False,
        checkpoint_every=1,
    )
    editors.stream(args)
    (path,) = (tmp_path / "runs").rglob("*.json")
    # its stream checkpoint was written beside where the record goes, and removed once recorded
    assert (tmp_path / "checkpoints" / path.relative_to(tmp_path / "runs").parent).is_dir()
    assert not list((tmp_path / "checkpoints").rglob("episode.json"))
    record = json.loads(path.read_text())
    per_edit = record["final_per_edit"]
    assert len(per_edit["efficacy"]) == len(per_edit["specificity"]) == record["edits"] == 4
    # the per-edit finals are the stream's final efficacy, edit by edit
    assert np.mean(per_edit["efficacy"]) == pytest.approx(record["final"]["efficacy"], abs=1e-6)
    assert "rome" in (tmp_path / "docs" / "results.md").read_text()
