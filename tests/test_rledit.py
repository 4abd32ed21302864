"""RLEdit: the hypernet rule, its decoupled training gradient, training, checkpoints, the CLI."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.rledit import RLEditAgent, RLEditConfig, RLEditTrainer
from edit_gym.editing.capture import capture
from edit_gym.editing.hypernet import CheckpointError, HyperNet, HyperNetConfig, load_hypernet
from edit_gym.editing.rules import RidgeRule
from tests.conftest import all_candidates_action, tensorboard_tags, weights_hash


def _env(**kwargs):
    return gym.make("LifelongEdit-Tiny-v0", final_eval=False, **{"num_edits": 4, **kwargs})


def _first_capture(env, seed=0):
    inner = env.unwrapped
    inner.reset(seed=seed)
    req = inner.stream[0]
    return capture(inner.model, inner.candidates, inner.encoder.encode([(req.prompt, req.target_new)]))


def _perturb(net: HyperNet, seed: int = 0) -> None:
    """Move every parameter off its identity start, so every path of the net carries gradient."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


def test_untrained_hypernet_is_the_ridge_rule():
    env = _env()
    inner = env.unwrapped
    cap = _first_capture(env)
    cands = inner.candidates
    net = HyperNet(HyperNetConfig([c.name for c in cands], [c.shape for c in cands]))
    for j in range(3):  # whitening statistics gathered: the net is still the identity
        net.observe(j, cap.keys[j], cap.grads[j])
    ridge = RidgeRule(log_lambda=0.0)
    for j in range(3):
        left, right = net.factors(j, cap.keys[j], cap.grads[j])
        expected = ridge.update(j, cap.keys[j], cap.grads[j], cands[j].weight()).matrix()
        torch.testing.assert_close(left @ right, expected, rtol=1e-4, atol=1e-6)


def test_decoupled_gradient_equals_direct_autograd():
    """The net's gradient from <dW, dL/dW> equals backprop through W0 + s dW(net) on one step."""
    env = _env(num_edits=1)
    inner = env.unwrapped
    cfg = RLEditConfig(eta=1e-2)
    cands = inner.candidates
    net = HyperNet(HyperNetConfig([c.name for c in cands], [c.shape for c in cands], rank=4))
    net.train()
    cap = _first_capture(env, seed=3)
    for j in range(len(cands)):
        net.observe(j, cap.keys[j], cap.grads[j])
    net.freeze_statistics()
    _perturb(net)
    trainer = RLEditTrainer(env, net, cfg)

    objective, _ = trainer.run_sequence(seed=3)
    objective.backward()
    decoupled = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()

    # direct: the LM's weights become W0 + s * left @ right with the net's graph inside
    inner.reset(seed=3)
    stream = inner.stream
    scale = inner.update_scales(np.ones(len(cands), bool), np.zeros(len(cands)))
    prev = trainer.locality_reference(stream, 0)
    cap = _first_capture(env, seed=3)
    originals, l2 = [], torch.zeros(())
    for j, c in enumerate(cands):
        left, right = net.factors(j, cap.keys[j], cap.grads[j])
        delta = float(scale[j]) * (left @ right)
        l2 = l2 + (delta**2).sum()
        originals.append(c.module.weight)
        del c.module.weight
        c.module.weight = originals[-1].detach() + (delta.t() if c.transposed else delta)
    try:
        loss, *_ = trainer.step_loss(stream, 0, prev)
        (loss + cfg.eta * l2).backward()
    finally:
        for c, w in zip(cands, originals, strict=True):
            del c.module.weight
            c.module.weight = w
    direct = [p.grad.clone() for p in net.parameters()]
    assert sum(float(g.abs().sum()) for g in direct) > 0
    for (name, _), a, b in zip(net.named_parameters(), decoupled, direct, strict=True):
        rel = float((a - b).norm() / b.norm().clamp_min(1e-12))
        assert rel < 1e-4, f"{name}: relative error {rel:.2e}"


def test_short_training_lowers_the_sequence_loss():
    env = _env(num_edits=6)
    agent = RLEditAgent(env, RLEditConfig(learning_rate=3e-3, seed=0, rank=8))
    trainer = RLEditTrainer(env, agent.net, agent.config)
    seeds = [11, 12]

    def held_loss() -> float:
        agent.net.eval()
        with torch.no_grad():
            return float(np.mean([np.sum(trainer.run_sequence(s)[1].loss) for s in seeds]))

    before = held_loss()
    for _ in range(8):
        trainer.train_step(seeds)
    after = held_loss()
    assert np.isfinite(after) and after < 0.9 * before, (before, after)


def test_save_load_round_trip_gives_identical_edits(tmp_path):
    env = _env()
    agent = RLEditAgent(env, RLEditConfig(seed=1, rank=8))
    agent.learn(2, progress_bar=False)
    _perturb(agent.net, seed=2)  # make sure the round trip carries non-trivial values
    path = agent.save(tmp_path / "ck")
    loaded = RLEditAgent.load(path, env)
    cap = _first_capture(env)
    for j in range(len(agent.net.config.candidates)):
        a = agent.net.factors(j, cap.keys[j], cap.grads[j])
        b = loaded.net.factors(j, cap.keys[j], cap.grads[j])
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

    def edited_hash(net_path) -> str:
        e = _env(editor=f"rledit:{net_path}")
        e.reset(seed=5)
        for _ in range(3):
            e.step(all_candidates_action(e))
        return weights_hash(e)

    first = edited_hash(path)
    loaded.save(tmp_path / "ck2")
    assert edited_hash(tmp_path / "ck2") == first
    assert loaded.sequences_trained == 2


def test_statistics_are_frozen_at_evaluation(tmp_path):
    env = _env()
    agent = RLEditAgent(env, RLEditConfig(seed=0, rank=4))
    agent.learn(1, progress_bar=False)
    path = agent.save(tmp_path / "ck")
    e = _env(editor=f"rledit:{path}")
    stats_before = {k: v.clone() for k, v in e.unwrapped._rule.rule.net.state_dict().items()}
    e.reset(seed=0)
    e.step(all_candidates_action(e))
    after = e.unwrapped._rule.rule.net.state_dict()
    assert all(torch.equal(stats_before[k], after[k]) for k in stats_before)
    assert float(next(iter(e.unwrapped._rule.rule.net.stats.values())).count.sum()) > 0


def test_bad_checkpoints_are_refused(tmp_path):
    env = _env()
    agent = RLEditAgent(env, RLEditConfig(rank=4))
    path = agent.save(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="not an RLEdit checkpoint"):
        load_hypernet(tmp_path / "missing")
    weights = path / "hypernet.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        gym.make("LifelongEdit-Tiny-v0", editor=f"rledit:{path}")
    with pytest.raises(ValueError, match="needs its checkpoint"):
        gym.make("LifelongEdit-Tiny-v0", editor="rledit")
    # a net trained for other candidates does not load into an env given its own candidates
    other = RLEditAgent(_env(candidates=["model.layers.0.mlp.down_proj"]), RLEditConfig(rank=4))
    other_path = other.save(tmp_path / "other")
    with pytest.raises(CheckpointError, match="other candidate matrices"):
        gym.make(
            "LifelongEdit-Tiny-v0", editor=f"rledit:{other_path}", candidates=env.unwrapped.candidate_names
        )


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    env = _env()
    agent = RLEditAgent(env, RLEditConfig(rank=4))
    path = agent.save(tmp_path / "ck")
    meta = json.loads((path / "hypernet.json").read_text())

    def boom(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr("agents.rledit.write_hypernet", boom)
    with pytest.raises(KeyboardInterrupt):
        agent.save(path)
    assert json.loads((path / "hypernet.json").read_text()) == meta
    load_hypernet(path)


def test_cli_train_then_eval(tmp_path, capsys):
    from edit_gym.cli import main

    out = tmp_path / "rledit"
    tb = tmp_path / "tb"
    args = ["train", "rledit", "--env", "LifelongEdit-Tiny-v0", "--sequences", "2"]
    args += ["--edits-per-sequence", "3", "--rank", "4", "--out", str(out), "--tensorboard", str(tb)]
    assert main(args) == 0
    assert (out / "hypernet.safetensors").is_file() and any(tb.iterdir())
    config = json.loads((out / "agent.json").read_text())["config"]
    assert config["rank"] == 4 and config["c_loc"] == RLEditConfig().c_loc  # the tiny model: paper defaults
    tags = tensorboard_tags(tb)
    assert {"losses/sequence_loss", "edit/immediate_efficacy", "hparam/sequence_loss"} <= tags["scalars"]
    assert "_hparams_/experiment" in tags["hparams"]
    # the held-out evaluation after training completes the layout in TB/eval
    assert {"plots/mask_heatmap", "plots/retention_matrix", "plots/efficacy_vs_edits"} <= tags["images"]
    assert {"edit/final_efficacy", "reward/total"} <= tags["scalars"]
    assert "samples/edits/text_summary" in tags["tensors"]
    result = tmp_path / "r.json"
    args = ["eval", "--agent", "rledit", "--checkpoint", str(out), "--env", "LifelongEdit-Tiny-v0"]
    assert main([*args, "--edits", "3", "--no-extended", "--json", str(result)]) == 0
    data = json.loads(result.read_text())
    assert data["config"]["editor"] == f"rledit:{out}" and data["edits"] == 3
    assert main(["eval", "--agent", "rledit", "--env", "LifelongEdit-Tiny-v0", "--edits", "3"]) == 2
    assert "needs --checkpoint" in capsys.readouterr().err


def test_cli_never_trains_over_a_checkpoint_and_resumes_one_exactly(tmp_path, capsys):
    """`train rledit --out DIR` on a trained DIR is refused (files untouched); --resume continues it
    to --sequences in total, equal to an uninterrupted run."""
    from edit_gym.cache import folder_sha256
    from edit_gym.cli import main

    args = ["train", "rledit", "--env", "LifelongEdit-Tiny-v0", "--edits-per-sequence", "2", "--rank", "4"]
    half, straight = tmp_path / "half", tmp_path / "straight"
    assert main([*args, "--sequences", "1", "--out", str(half)]) == 0
    assert main([*args, "--sequences", "2", "--out", str(straight)]) == 0
    digest = folder_sha256(half)
    capsys.readouterr()
    assert main([*args, "--sequences", "2", "--out", str(half)]) == 2
    err = capsys.readouterr().err
    assert str(half) in err and "--resume continues it" in err and "nothing was written" in err
    assert folder_sha256(half) == digest
    assert main([*args, "--sequences", "2", "--resume", "--out", str(half)]) == 2  # its settings only
    assert "drop --rank" in capsys.readouterr().err and folder_sha256(half) == digest
    resume = ["train", "rledit", "--env", "LifelongEdit-Tiny-v0", "--edits-per-sequence", "2", "--resume"]
    assert main([*resume, "--sequences", "2", "--out", str(half)]) == 0
    assert "resuming" in capsys.readouterr().out
    assert json.loads((half / "agent.json").read_text())["sequences_trained"] == 2
    env = _env()
    a, b = RLEditAgent.load(half, env), RLEditAgent.load(straight, env)
    for (name, x), (_, y) in zip(a.net.state_dict().items(), b.net.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert main([*resume, "--sequences", "2", "--out", str(half)]) == 0  # already there: nothing to do
    assert "nothing to do" in capsys.readouterr().out
    assert main([*resume, "--sequences", "2", "--out", str(tmp_path / "none")]) == 2
    assert "holds no RLEdit checkpoint" in capsys.readouterr().err


def test_band_checkpoint_edits_its_own_band(tmp_path, capsys):
    """`--layers` trains on a slice of the default candidates; the checkpoint brings that slice along."""
    from edit_gym.cli import main

    out = tmp_path / "band"
    args = ["train", "rledit", "--env", "LifelongEdit-Tiny-v0", "--sequences", "1", "--layers", "1:3"]
    assert main([*args, "--edits-per-sequence", "2", "--rank", "4", "--out", str(out)]) == 0
    every = _env().unwrapped.candidate_names
    env = _env(editor=f"rledit:{out}")
    assert env.unwrapped.candidate_names == every[1:3]
    env.reset(seed=0)
    before = weights_hash(env)
    env.step(all_candidates_action(env))
    assert weights_hash(env) != before
    untouched = [c for c in _env().unwrapped.candidates if c.name not in every[1:3]]
    edited = dict(env.unwrapped.model.named_parameters())
    assert all(torch.equal(edited[c.name + ".weight"], c.param) for c in untouched)
    with pytest.raises(CheckpointError, match="trained for other candidate"):
        _env(editor=f"rledit:{out}", candidates=every)  # explicit candidates must match the net
    assert (
        main([*args[:-2], "--layers", "3:1", "--edits-per-sequence", "2", "--out", str(tmp_path / "b")]) == 2
    )
    assert "--layers '3:1'" in capsys.readouterr().err


def test_a_model_with_a_swept_band_trains_on_it_unless_told_otherwise(tmp_path, monkeypatch, capsys):
    """MODEL_BANDS gives `train rledit` its default band; --layers all (or a band) overrides it."""
    from agents import rledit
    from edit_gym.cli import main

    monkeypatch.setitem(rledit.MODEL_BANDS, "tiny", "2:4")
    every = _env().unwrapped.candidate_names
    args = ["train", "rledit", "--env", "LifelongEdit-Tiny-v0", "--sequences", "1"]
    args += ["--edits-per-sequence", "2", "--rank", "4"]
    assert main([*args, "--out", str(tmp_path / "swept")]) == 0
    assert "the swept band of tiny" in capsys.readouterr().out
    assert _env(editor=f"rledit:{tmp_path / 'swept'}").unwrapped.candidate_names == every[2:4]
    assert main([*args, "--layers", "all", "--out", str(tmp_path / "all")]) == 0
    assert _env(editor=f"rledit:{tmp_path / 'all'}").unwrapped.candidate_names == every
    assert main([*args, "--layers", "0:1", "--out", str(tmp_path / "own")]) == 0
    assert _env(editor=f"rledit:{tmp_path / 'own'}").unwrapped.candidate_names == every[:1]


class _Payload:
    """Unpickling this would create a file: proof that code from the checkpoint ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickle_is_refused_without_running(tmp_path):
    import hashlib
    import pickle

    env = _env()
    path = RLEditAgent(env, RLEditConfig(rank=4)).save(tmp_path / "ck")
    marker = tmp_path / "pwned"
    weights = path / "hypernet.safetensors"
    weights.write_bytes(pickle.dumps(_Payload(str(marker))))
    meta = json.loads((path / "hypernet.json").read_text())
    meta["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()  # a careful attacker fixes it
    (path / "hypernet.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_hypernet(path)
    with pytest.raises(CheckpointError):
        RLEditAgent.load(path, env)
    assert not marker.exists()


def test_pristine_locality_reference_agrees_with_previous_on_the_first_step():
    env = _env(num_edits=3)
    logs = {}
    for mode in ("previous", "pristine"):
        cfg = RLEditConfig(rank=4, locality_reference=mode)
        torch.manual_seed(0)
        net = RLEditAgent(env, cfg).net
        _perturb(net)
        with torch.no_grad():
            logs[mode] = RLEditTrainer(env, net, cfg).run_sequence(seed=4)[1]
    # at t = 0 the model before the edit is the pristine one; later the references differ
    assert logs["previous"].kl[0] == pytest.approx(logs["pristine"].kl[0], rel=1e-5)
    assert logs["pristine"].kl[2] != pytest.approx(logs["previous"].kl[2], rel=1e-3)
    with pytest.raises(ValueError, match="locality_reference"):
        RLEditConfig(locality_reference="start")


def test_resumed_training_matches_an_uninterrupted_run(tmp_path):
    straight = RLEditAgent(_env(), RLEditConfig(seed=3, rank=4, learning_rate=3e-3))
    straight.learn(4, progress_bar=False)

    first = RLEditAgent(_env(), RLEditConfig(seed=3, rank=4, learning_rate=3e-3))
    first.learn(2, progress_bar=False)
    path = first.save(tmp_path / "half")
    assert (path / "optimizer.safetensors").is_file()
    resumed = RLEditAgent.load(path, _env())
    resumed.learn(2, progress_bar=False)
    assert resumed.sequences_trained == straight.sequences_trained == 4
    for (name, a), (_, b) in zip(
        straight.net.state_dict().items(), resumed.net.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name

    (path / "optimizer.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="checksum"):
        RLEditAgent.load(path, _env())


def test_swept_model_defaults_sit_between_the_paper_and_explicit_settings():
    """A model with swept defaults gets them; an explicit setting wins; other models keep the paper's."""
    from agents.rledit import MODEL_DEFAULTS, default_config

    swept = MODEL_DEFAULTS["smollm2-135m"]
    config = default_config("smollm2-135m")
    assert all(getattr(config, k) == v for k, v in swept.items())
    assert default_config("smollm2-135m", c_loc=1.5).c_loc == 1.5
    assert default_config("smollm2-135m", c_loc=1.5).window == swept["window"]
    assert default_config("tiny") == RLEditConfig() == default_config(None)


def test_optimized_edit_reference_optimizes_and_restores_the_weights():
    """The FT-L reference of the latency benchmark really fine-tunes (its answer loss falls), costs
    more than one forward+backward per Adam step, and leaves the model's weights as it found them."""
    import torch

    from edit_gym.bench import optimized_edit_latency
    from edit_gym.env import LifelongEditEnv

    env = LifelongEditEnv(model="tiny", dataset="facts", known_only=False, num_edits=2)
    env.reset(seed=0)
    loaded = [c.param.detach().clone() for c in env.candidates]
    r = optimized_edit_latency("tiny", "facts", iterations=4, lr=1e-2, steps=2)
    assert r["loss_after"] < r["loss_before"]
    assert r["edit_over_fwd_bwd"] == pytest.approx(r["update_s"] / r["fwd_bwd_s"])
    assert r["edit_over_fwd_bwd"] > 1.0  # four fwd+bwd with parameter gradients and Adam
    env.reset(seed=0)  # from the pristine weights the envs of this process share
    for c, w in zip(env.candidates, loaded, strict=True):
        assert not c.param.requires_grad and c.param.grad is None
        assert torch.equal(c.param, w)
    with pytest.raises(ValueError, match="iterations >= 1"):
        optimized_edit_latency("tiny", "facts", iterations=0)


def test_edit_latency_script_writes_its_table(tmp_path):
    """`benchmarks/edit_latency.py --markdown` writes every measured row, the FT-L reference
    included, with the command that produced it; a negative iteration count is refused."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "edit_latency.py"
    page = tmp_path / "latency.md"
    args = [sys.executable, str(script), "--model", "tiny", "--editors", "ridge", "--steps", "2"]
    run = subprocess.run(
        [*args, "--optimized-iterations", "3", "--markdown", str(page)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line for line in page.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| editor",
        "| ridge",
        "| ft-l (3 Adam steps, lr 0.0005)",
    ]
    assert "--optimized-iterations 3" in page.read_text()
    refused = subprocess.run([*args, "--optimized-iterations", "-1"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--optimized-iterations >= 0" in refused.stderr


def test_cli_sequences_0_writes_the_untrained_net_of_the_same_settings(tmp_path, capsys):
    """`train rledit --sequences 0`: the identity start of a training run (its settings, band and
    seed), the "does training matter" reference; a run of N sequences starts from these weights."""
    from edit_gym.cli import main

    args = ["train", "rledit", "--env", "LifelongEdit-Tiny-v0", "--edits-per-sequence", "2", "--rank", "4"]
    assert main([*args, "--sequences", "0", "--out", str(tmp_path / "zero")]) == 0
    assert "untrained" in capsys.readouterr().out
    zero = RLEditAgent.load(tmp_path / "zero", _env())
    fresh = RLEditAgent(
        _env(), RLEditConfig(**json.loads((tmp_path / "zero" / "agent.json").read_text())["config"])
    )
    assert zero.sequences_trained == 0 and zero.config.rank == 4
    for (name, x), (_, y) in zip(zero.net.state_dict().items(), fresh.net.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert main([*args, "--sequences", "-1", "--out", str(tmp_path / "neg")]) == 2
    assert ">= 0" in capsys.readouterr().err and not (tmp_path / "neg").exists()
