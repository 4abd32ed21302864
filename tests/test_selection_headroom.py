"""benchmarks/selection_headroom.py: alternative selections scored from the step's one target (tiny model)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import benchmark_module, weights_hash


def _module():
    return benchmark_module("selection_headroom")


def _env():
    from edit_gym.env import LifelongEditEnv

    return LifelongEditEnv(
        model="tiny", dataset="facts", editor="memit", num_edits=4, edits_per_step=2, final_eval=False
    )


def test_every_selection_is_rolled_back_and_the_stream_goes_on_like_the_band():
    from agents.baselines import BandAgent

    headroom = _module()
    env, twin = _env(), _env()
    env.reset(seed=0)
    obs, _ = twin.reset(seed=0)
    family = headroom.selection_family(env, 2, np.random.default_rng(0))
    band = family["band"]
    # the tiny model's MEMIT band is every candidate up to its top block: "all" and "window:0" are it
    assert band == [0, 1] and set(family) == {"band", "window:1", "single:0"}
    assert len({tuple(sel) for sel in family.values()}) == len(family)  # each selection once
    outcomes, info = headroom.step_outcomes(env, family)
    _, twin_reward, _, _, twin_info = twin.step(BandAgent(twin).predict(obs)[0])
    # the band's step reused the sweep's target: the same weights as an ordinary band step
    assert weights_hash(env) == weights_hash(twin)
    assert info["edited_candidates"] == twin_info["edited_candidates"] == band
    assert outcomes["band"]["efficacy"] == pytest.approx(info["efficacy"])
    assert outcomes["band"]["edit_loss"] == pytest.approx(info["edit_loss_after"], rel=1e-5)
    assert (
        outcomes["band"]["reward"] == pytest.approx(info["reward"], rel=1e-5)
        and info["reward"] == twin_reward
    )
    assert len({round(o["edit_loss"], 6) for o in outcomes.values()}) > 1  # the selections differ
    rows = headroom.summarize([outcomes])
    assert rows["band"]["reward"] == [0.0]
    assert rows["oracle"]["reward"][0] == max(r["reward"][0] for n, r in rows.items() if n != "oracle") >= 0
    assert rows["oracle"]["choice"][0] in family


def test_an_editor_without_a_target_is_refused():
    from edit_gym.env import LifelongEditEnv

    headroom = _module()
    env = LifelongEditEnv(model="tiny", dataset="facts", editor="ultraedit", num_edits=2, final_eval=False)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="no target"):
        headroom.step_outcomes(env, headroom.selection_family(env, 1, np.random.default_rng(0)))
