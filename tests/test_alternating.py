"""HiEdit's alternating fine-tuning: the low level trained on the masks the selector picks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.alternating import SelectorMasks
from agents.rledit import RLEditAgent, RLEditConfig, RLEditTrainer
from edit_gym.editing.hypernet import load_hypernet
from tests.test_rledit import _env, _perturb


def test_a_masked_sequence_edits_only_the_chosen_candidates():
    """With a mask, unselected matrices keep their weights through the whole sequence; selected ones
    move, and the objective still reaches the net."""
    env = _env()
    agent = RLEditAgent(env, RLEditConfig(rank=4))
    _perturb(agent.net)
    inner = env.unwrapped
    inner.reset(seed=3)
    before = [c.weight().clone() for c in inner.candidates]
    n = inner.num_candidates
    chosen = [1, n - 1]

    def only_two(seed, stream):
        masks = np.zeros((len(stream), n), dtype=bool)
        masks[:, chosen] = True
        return masks

    trainer = RLEditTrainer(env, agent.net, agent.config)
    objective, log = trainer.run_sequence(seed=3, mask_fn=only_two)
    after = [c.weight() for c in inner.candidates]
    moved = [j for j in range(n) if not torch.equal(before[j], after[j])]
    assert moved == chosen
    assert torch.isfinite(objective) and len(log.loss) == 4
    objective.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.net.parameters())

    with pytest.raises(ValueError, match="bool array of shape"):
        trainer.run_sequence(seed=3, mask_fn=lambda seed, stream: np.ones((2, n), dtype=bool))


def test_cli_fine_tunes_the_low_level_on_the_selectors_masks(tmp_path, monkeypatch, capsys):
    """train rledit --masks-from HIEDIT: a new RLEdit checkpoint, continued from the low level (its
    sequence count goes on), trained on the masks the selector picked (recorded here: at most the
    budget per step); the next selector round trains over it; settings the round cannot change are
    refused."""
    from agents import alternating
    from edit_gym.cli import main

    low = RLEditAgent(_env(), RLEditConfig(rank=4)).learn(1, progress_bar=False).save(tmp_path / "low")
    recorded = []
    play = alternating.SelectorMasks.__call__

    def recording(self, seed, stream):
        masks = play(self, seed, stream)
        recorded.append(masks)
        return masks

    monkeypatch.setattr(alternating.SelectorMasks, "__call__", recording)
    hi = tmp_path / "hi"
    common = ["--env", "LifelongEdit-Tiny-v0", "--edits-per-sequence", "4"]
    args = ["train", "hiedit", "--trainer", "maskable", "--budget", "2", "--low-level", str(low)]
    assert main([*args, *common, "--timesteps", "8", "--out", str(hi)]) == 0
    ft = tmp_path / "ft"
    args = ["train", "rledit", "--masks-from", str(hi), "--sequences", "2", *common, "--out", str(ft)]
    assert main(args) == 0
    meta = json.loads((ft / "agent.json").read_text())
    assert meta["sequences_trained"] == 3  # 1 before, 2 in the round
    assert len(recorded) == 2 and all(m.shape[0] == 4 and (m.sum(1) <= 2).all() for m in recorded)
    assert all((m.sum(1) < m.shape[1]).all() for m in recorded)  # a real partial selection
    refusals = [(["--lr", "0.1"], "drop --lr"), (["--discount", "0"], "drop --discount")]
    for bad, message in [*refusals, (["--out", str(low)], "holds an RLEdit checkpoint already")]:
        out = [] if bad[0] == "--out" else ["--out", str(tmp_path / "x")]
        assert main([*args[:-2], *bad, *out]) == 2
        assert message in capsys.readouterr().err
    assert (
        not (tmp_path / "x").exists()
        and json.loads((low / "agent.json").read_text())["sequences_trained"] == 1
    )
    original, tuned = load_hypernet(low), load_hypernet(ft)
    changed = [k for k, v in original.state_dict().items() if not torch.equal(v, tuned.state_dict()[k])]
    assert changed, "fine-tuning changed no parameter of the hypernet"
    again = tmp_path / "hi2"
    args = ["train", "hiedit", "--trainer", "maskable", "--budget", "2", "--low-level", str(ft)]
    assert main([*args, *common, "--timesteps", "8", "--out", str(again)]) == 0
    assert json.loads((again / "hiedit.json").read_text())["editor"] == f"rledit:{ft}"


def test_selector_masks_refuse_a_different_stream_and_a_fixed_rule(tmp_path):
    from agents.alternating import finetune_low_level
    from agents.baselines import FixedBlockAgent
    from edit_gym.cli import main

    selector_env = _env(num_edits=5)
    masks = SelectorMasks(FixedBlockAgent(selector_env, size=2), selector_env)
    trainer_env = _env()
    trainer_env.unwrapped.reset(seed=0)
    with pytest.raises(ValueError, match="different stream"):
        masks(0, trainer_env.unwrapped.stream)
    same = _env()
    same_masks = SelectorMasks(FixedBlockAgent(same, size=2), same)(0, trainer_env.unwrapped.stream)
    assert same_masks.shape == (4, same.unwrapped.num_candidates) and (same_masks.sum(1) == 2).all()

    hi = tmp_path / "hi"
    args = ["train", "hiedit", "--trainer", "maskable", "--budget", "2", "--low-level", "ridge"]
    assert main([*args, "--env", "LifelongEdit-Tiny-v0", "--timesteps", "4", "--out", str(hi)]) == 0
    with pytest.raises(ValueError, match="fixed rule 'ridge'"):
        finetune_low_level(hi, "LifelongEdit-Tiny-v0", 1, tmp_path / "ft", num_edits=4)
    assert not (tmp_path / "ft").exists()
