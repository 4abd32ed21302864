"""HiEdit: the high-level selector trained with the custom PPO and with SB3, saved, evaluated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.hiedit import HiEditAgent, LayerStatsExtractor, make_training_env
from agents.rledit import RLEditAgent, RLEditConfig


@pytest.mark.parametrize("trainer", ["ppo", "sb3", "maskable", "straight-through"])
def test_train_save_load_predict(trainer, tmp_path):
    env = make_training_env("LifelongEdit-Tiny-v0", "ridge", trainer, num_edits=4)
    small = (
        {"n_steps": 16, "batch_size": 16}
        if trainer in ("sb3", "maskable")
        else {"num_steps": 8}
        if trainer == "ppo"
        else {}
    )
    agent = HiEditAgent(env, trainer, seed=0, **small)
    agent.learn(16)
    path = agent.save(tmp_path / trainer)
    loaded = HiEditAgent.load(path, env)
    obs, _ = env.reset(seed=3)
    a, _ = agent.predict(obs)
    b, _ = loaded.predict(obs)
    if trainer not in ("sb3", "maskable"):
        assert np.array_equal(a["mask"], b["mask"]) and np.array_equal(a["coef"], b["coef"])
    else:
        assert np.array_equal(a, b)
    _, reward, _, _, info = env.step(a)
    assert np.isfinite(reward) and "reward_advantage" in info


def test_extractor_shares_weights_across_layers():
    env = make_training_env("LifelongEdit-Tiny-v0", "ridge", "sb3", num_edits=2)
    ext = LayerStatsExtractor(env.observation_space, hidden=8)
    obs, _ = env.reset(seed=0)
    import torch

    batch = {k: torch.as_tensor(v)[None] for k, v in obs.items()}
    out = ext(batch)
    assert out.shape == (1, env.unwrapped.num_candidates * 8) and torch.isfinite(out).all()


def test_cli_train_hiedit_on_an_rledit_low_level_then_eval(tmp_path):
    from edit_gym.cli import main
    from tests.test_rledit import _env

    low = RLEditAgent(_env(), RLEditConfig(rank=4)).save(tmp_path / "low")
    out = tmp_path / "hi"
    args = ["train", "hiedit", "--trainer", "ppo", "--low-level", str(low), "--env", "LifelongEdit-Tiny-v0"]
    assert main([*args, "--timesteps", "32", "--edits-per-sequence", "4", "--out", str(out)]) == 0
    meta = json.loads((out / "hiedit.json").read_text())
    assert meta["editor"] == f"rledit:{low}" and meta["trainer"] == "ppo"
    result = tmp_path / "r.json"
    args = ["eval", "--agent", "hiedit", "--checkpoint", str(out), "--env", "LifelongEdit-Tiny-v0"]
    assert main([*args, "--edits", "3", "--no-extended", "--json", str(result)]) == 0
    data = json.loads(result.read_text())
    assert data["config"]["editor"] == f"rledit:{low}" and data["edits"] == 3


def test_straight_through_gradient_reaches_the_selector():
    from agents.hiedit import StraightThroughSelector

    env = make_training_env("LifelongEdit-Tiny-v0", "ridge", "straight-through", num_edits=3)
    selector = StraightThroughSelector(env, budget=2, seed=0)
    obs, _ = env.reset(seed=0)
    surrogate, info = selector.mask_gradient(obs)
    surrogate.backward()
    grads = [p.grad for p in selector.policy.parameters() if p.grad is not None]
    head = selector.policy.mask_head.weight.grad
    assert head is not None and torch.isfinite(head).all() and float(head.abs().sum()) > 0
    assert all(torch.isfinite(g).all() for g in grads)
    assert int(info["layers_touched"]) == 2  # the hard top-K mask is what the env applied


def test_maskable_selector_stays_within_its_budget(tmp_path):
    """MaskablePPO on the `slots` action: every edit, in training and evaluation, touches 1..K."""
    from edit_gym.cli import main

    out = tmp_path / "maskable"
    args = ["train", "hiedit", "--trainer", "maskable", "--low-level", "ridge", "--budget", "2"]
    args += ["--env", "LifelongEdit-Tiny-v0", "--timesteps", "16", "--edits-per-sequence", "4"]
    assert main([*args, "--out", str(out)]) == 0
    meta = json.loads((out / "hiedit.json").read_text())
    assert meta["trainer"] == "maskable" and meta["env_budget"] == 2 and meta["action_type"] == "slots"
    result = tmp_path / "r.json"
    ev = ["eval", "--agent", "hiedit", "--checkpoint", str(out), "--env", "LifelongEdit-Tiny-v0"]
    assert main([*ev, "--edits", "6", "--no-extended", "--json", str(result)]) == 0
    data = json.loads(result.read_text())
    assert data["config"]["budget"] == 2
    touched = [step["layers_touched"] for step in data["curve"]]
    assert len(touched) == 6 and all(1 <= t <= 2 for t in touched), touched


def test_learn_callback_sees_every_update():
    env = make_training_env("LifelongEdit-Tiny-v0", "ridge", "ppo", num_edits=4)
    agent = HiEditAgent(env, "ppo", seed=0, num_steps=4, num_envs=2)
    seen = []
    agent.learn(24, callback=lambda step, policy, writer: seen.append((step, policy is agent.model.policy)))
    assert seen == [(8, True), (16, True), (24, True)]
    sb3 = HiEditAgent(
        make_training_env("LifelongEdit-Tiny-v0", "ridge", "sb3", num_edits=4), "sb3", n_steps=8, batch_size=8
    )
    rollouts = []
    sb3.learn(16, callback=lambda step, policy, writer: rollouts.append((step, policy is sb3.model.policy)))
    assert rollouts == [(8, True), (16, True)]
    st = HiEditAgent(
        make_training_env("LifelongEdit-Tiny-v0", "ridge", "straight-through", num_edits=4),
        "straight-through",
    )
    steps = []
    st.learn(3, callback=lambda step, policy, writer: steps.append((step, policy is st.model.policy)))
    assert steps == [(1, True), (2, True), (3, True)]  # one optimizer step per env step


def _policy_state(agent: HiEditAgent) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in agent.model.policy.state_dict().items()}


@pytest.mark.parametrize("trainer", ["ppo", "sb3", "maskable", "straight-through"])
def test_interrupted_training_keeps_the_last_periodic_checkpoint(trainer, tmp_path, monkeypatch):
    from edit_gym.env import LifelongEditEnv

    env = make_training_env("LifelongEdit-Tiny-v0", "ridge", trainer, num_edits=4)
    small = {"sb3": {"n_steps": 8, "batch_size": 8}, "maskable": {"n_steps": 8, "batch_size": 8}}
    small["ppo"] = {"num_steps": 4, "num_envs": 2}
    agent = HiEditAgent(env, trainer, seed=0, **small.get(trainer, {}))
    saved: list[dict[str, torch.Tensor]] = []
    original_save = HiEditAgent.save

    def recording_save(self, path):
        out = original_save(self, path)
        saved.append(_policy_state(self))
        return out

    monkeypatch.setattr(HiEditAgent, "save", recording_save)
    calls = {"n": 0}
    original_step = LifelongEditEnv.step

    def step_then_ctrl_c(self, action):
        calls["n"] += 1
        if calls["n"] == 27:  # mid-rollout, after at least two checkpoints
            raise KeyboardInterrupt
        return original_step(self, action)

    monkeypatch.setattr(LifelongEditEnv, "step", step_then_ctrl_c)
    folder = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        agent.learn(64, checkpoint_dir=folder, checkpoint_every=8)
    monkeypatch.undo()
    assert len(saved) >= 2, "two or more checkpoints were due before the interruption"
    loaded = HiEditAgent.load(folder, env)
    for name, value in _policy_state(loaded).items():
        assert torch.equal(value, saved[-1][name]), f"{name} differs from the last checkpoint"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "no partial folder left"


def test_checkpoint_every_needs_a_folder():
    env = make_training_env("LifelongEdit-Tiny-v0", "ridge", "straight-through", num_edits=4)
    agent = HiEditAgent(env, "straight-through")
    with pytest.raises(ValueError, match="needs a checkpoint_dir"):
        agent.learn(4, checkpoint_every=2)
    with pytest.raises(ValueError, match=">= 0"):
        agent.learn(4, checkpoint_dir="unused", checkpoint_every=-1)


def test_results_table_runs_a_hiedit_selector_beside_sized_baselines(tmp_path):
    """`results_table.py --agents hiedit:DIR random:K fixed:K`: the selector's env gets its budget,
    the baselines touch exactly K candidates, and a spec that does not fit is refused by name."""
    import subprocess
    import sys
    from pathlib import Path

    from edit_gym.cache import folder_sha256
    from edit_gym.cli import main
    from edit_gym.result_file import load_result

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "maskable"
    args = ["train", "hiedit", "--trainer", "maskable", "--low-level", "ridge", "--budget", "2"]
    args += ["--env", "LifelongEdit-Tiny-v0", "--timesteps", "8", "--edits-per-sequence", "4"]
    assert main([*args, "--out", str(out)]) == 0
    table = [sys.executable, str(root / "benchmarks" / "results_table.py"), "--model", "tiny"]
    table += ["--datasets", "facts-test", "--lengths", "5", "--rules", "ridge"]
    files = ["--runs", str(tmp_path / "runs"), "--page", str(tmp_path / "r.md")]
    run = subprocess.run(
        [*table, "--agents", f"hiedit:{out}", "random:3", "fixed:3", "fixed:2@4", *files],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    runs = {r["agent"]: r for r in map(load_result, sorted((tmp_path / "runs").rglob("*.json")))}
    assert "random:3" in (tmp_path / "r.md").read_text()  # the leaderboard was rebuilt
    assert set(runs) == {f"hiedit:{out}", "random:3", "fixed:3", "fixed:2@4"}
    hiedit = runs[f"hiedit:{out}"]
    assert hiedit["config"]["budget"] == 2 and hiedit["config"]["action_type"] == "slots"
    assert all(1 <= step["layers_touched"] <= 2 for step in hiedit["curve"])
    for name in ("random:3", "fixed:3"):
        assert runs[name]["config"]["budget"] is None
        assert [step["layers_touched"] for step in runs[name]["curve"]] == [3] * 5
    assert [step["layers_touched"] for step in runs["fixed:2@4"]["curve"]] == [2] * 5
    assert hiedit["checkpoint_sha256"] == {"agent": folder_sha256(out)[:16]}  # the weights it read
    assert runs["random:3"]["checkpoint_sha256"] == {}
    for bad, message in [
        (["--agents", "random:x"], "random:K, fixed:K and fixed:K@START"),
        (["--agents", "random:3@1"], "random:K, fixed:K and fixed:K@START"),
        (["--agents", "fixed:3@x"], "random:K, fixed:K and fixed:K@START"),
        (["--agents", "fixed:3@5"], "does not fit"),
        (["--agents", "hiedit:" + str(tmp_path)], "not a HiEdit checkpoint"),
        (["--rules", "covariance", "--agents", f"hiedit:{out}"], "trained over the rule 'ridge'"),
    ]:
        refused = subprocess.run([*table, *bad, *files], capture_output=True, text=True)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr[-500:]


def _summary_run(seed: int, touched: float, efficacy: float, digests: dict | None = None, agent="random:2"):
    from edit_gym.leaderboard import Run

    final = {"efficacy": efficacy, "generalization": efficacy, "specificity": 0.5, "perplexity": 10.0}
    return Run(
        path=f"{agent}-{seed}.json",
        model="tiny",
        data="facts-test",
        length=5,
        editor="rledit:runs/x",
        agent=agent,
        seed=seed,
        fault="",
        final=final,
        touched=touched,
        seconds_per_edit=1.0,
        digests=digests or {},
    )


def test_leaderboard_reports_the_fraction_touched_over_seeds():
    """A row carries the mean fraction of candidates touched, with its interval, so a selector's
    sparsity is read beside its scores."""
    from edit_gym.leaderboard import tables

    (row,) = tables([_summary_run(0, 0.4, 0.5), _summary_run(1, 0.6, 0.7)])[0].rows
    assert row.touched == pytest.approx((0.5, 12.706 * 0.1))  # 40 and 60: sem 10, t(1 dof) 12.706
    assert row.cells["efficacy"] == pytest.approx((0.6, 12.706 * 0.1))
    assert row.seeds == [0, 1]


def test_leaderboard_never_pools_seeds_over_different_weights_under_one_name():
    """Two trainings saved to the same folder name are different settings: seeds pool only when the
    recorded checkpoint digests agree, and the digest is shown after the name."""
    from edit_gym.leaderboard import tables

    a, b = {"rule": "aaaaaaaa11111111"}, {"rule": "bbbbbbbb22222222"}
    runs = [_summary_run(0, 0.5, 0.5, a), _summary_run(1, 0.5, 0.6, b), _summary_run(2, 0.5, 0.7, a)]
    rows = {r.label: r for r in tables(runs)[0].rows}
    assert rows["rledit:runs/x @aaaaaaaa / random:2"].seeds == [0, 2]
    assert rows["rledit:runs/x @bbbbbbbb / random:2"].seeds == [1]


def test_leaderboard_pairs_each_agent_with_all_candidates_on_the_same_seed():
    """The paired rows are per-seed differences from the `all` run of the same rule (HiEdit's claim
    is relative to RLEdit = all candidates): a hand computation on two seeds; a seed without its
    `all` run is left out of the pairing."""
    from edit_gym.leaderboard import paired

    def run(agent: str, seed: int, efficacy: float, touched: float = 1.0):
        return _summary_run(seed, touched, efficacy, agent=agent)

    runs = [run("all", 0, 0.2), run("all", 1, 0.4), run("fixed:2", 0, 0.3, 0.5), run("fixed:2", 1, 0.6, 0.5)]
    runs.append(run("fixed:2", 2, 0.9, 0.5))  # no `all` on seed 2: not paired
    ((key, (row,)),) = paired(runs).items()
    assert key == ("tiny", "facts-test", 5) and row.reference == "all" and row.seeds == [0, 1]
    assert row.diffs["efficacy"] == pytest.approx((0.15, 12.706 * 0.05))  # differences 10 and 20
    assert row.diffs["specificity"] == pytest.approx((0.0, 0.0))
    assert row.touched == pytest.approx((0.5, 0.0))
    # mean of (eff, gen, spec): agent (0.3+0.3+0.5)/3, (0.6+0.6+0.5)/3 -> 0.4667; all -> 0.3667
    assert row.relative == pytest.approx(0.4667 / 0.3667 - 1, abs=1e-3)
    assert paired(runs[:3]) == {}  # one paired seed: no row


def test_hiedit_selects_the_layers_of_a_faithful_editor(tmp_path):
    """HiEdit over MEMIT (issue 21): the maskable selector trains on the advantage reward, saves,
    loads and edits with 1..K candidates a step; the straight-through trainer, whose gradient needs a
    one-step rule's per-candidate update, is refused naming the other trainers."""
    env = make_training_env("LifelongEdit-Tiny-v0", "memit", "maskable", budget=2, num_edits=3)
    agent = HiEditAgent(env, "maskable", seed=0)
    agent.learn(6)
    agent.save(tmp_path / "sel")
    loaded = HiEditAgent.load(tmp_path / "sel", env=env)
    obs, _ = env.reset(seed=1)
    done = False
    while not done:
        action, _ = loaded.predict(obs, deterministic=True)
        obs, _, done, _, info = env.step(action)
        assert 1 <= info["layers_touched"] <= 2 and not info["fault"]
    assert "reward_reference" in info
    with pytest.raises(ValueError, match="maskable, sb3 or ppo"):
        HiEditAgent(
            make_training_env("LifelongEdit-Tiny-v0", "memit", "straight-through", num_edits=2),
            "straight-through",
        )
    env.close()


def _selector_state(agent: HiEditAgent) -> dict[str, torch.Tensor]:
    """Policy weights and optimizer moments of a selector, by name."""
    if agent.trainer in ("sb3", "maskable"):
        policy, optimizer = agent.model.policy, agent.model.policy.optimizer
    else:
        policy, optimizer = agent.model.policy, agent.model.optimizer
    state = {f"policy.{k}": v.clone() for k, v in policy.state_dict().items()}
    for index, slots in optimizer.state_dict()["state"].items():
        state.update({f"adam.{index}.{k}": torch.as_tensor(v).clone() for k, v in slots.items()})
    return state


@pytest.mark.parametrize("trainer", ["ppo", "sb3", "maskable", "straight-through"])
def test_a_loaded_selector_continues_its_steps_and_optimizer(trainer, tmp_path):
    """A saved selector keeps its env steps and Adam's moments; learn on the loaded one trains on
    from there (the step count goes on, the moments are the saved ones when training resumes)."""
    env = make_training_env("LifelongEdit-Tiny-v0", "ridge", trainer, num_edits=4)
    small = {"sb3": {"n_steps": 8, "batch_size": 8}, "ppo": {"num_steps": 4}}
    small["maskable"] = small["sb3"]
    agent = HiEditAgent(env, trainer, seed=0, **small.get(trainer, {}))
    agent.learn(8)
    assert agent.steps_trained == 8
    before = _selector_state(agent)
    loaded = HiEditAgent.load(agent.save(tmp_path / trainer), env)
    assert loaded.steps_trained == 8
    after = _selector_state(loaded)
    assert before.keys() == after.keys() and any(k.startswith("adam.") for k in after)
    for name, value in before.items():
        assert torch.equal(value, after[name]), name
    steps = []
    loaded.learn(8, callback=lambda step, policy, writer: steps.append(step))
    assert loaded.steps_trained == 16 and steps and steps[-1] == 16 and min(steps) > 8
    moved = _selector_state(loaded)
    assert any(not torch.equal(moved[k], after[k]) for k in after if k.startswith("policy."))


def test_straight_through_resumed_at_an_episode_end_equals_an_uninterrupted_run(tmp_path):
    """The published trainer is deterministic: 2 episodes, saved, then 2 more equal 4 in one go."""
    env = make_training_env("LifelongEdit-Tiny-v0", "ridge", "straight-through", num_edits=3)
    straight = HiEditAgent(env, "straight-through", seed=1, budget=2)
    straight.learn(12)
    half = HiEditAgent(env, "straight-through", seed=1, budget=2)
    half.learn(6)
    resumed = HiEditAgent.load(half.save(tmp_path / "half"), env)
    assert resumed.model.episodes == 2
    resumed.learn(6)
    assert resumed.model.episodes == straight.model.episodes == 4
    a, b = _selector_state(straight), _selector_state(resumed)
    for name, value in a.items():
        assert torch.equal(value, b[name]), name


def test_custom_ppo_resumes_its_learning_rate_schedule(tmp_path):
    """The custom PPO anneals over the total it is asked to reach: 16 + 16 steps end where 32 do."""
    env = make_training_env("LifelongEdit-Tiny-v0", "ridge", "ppo", num_edits=4)
    straight = HiEditAgent(env, "ppo", seed=0, num_steps=4).learn(32)
    half = HiEditAgent(env, "ppo", seed=0, num_steps=4).learn(16)
    resumed = HiEditAgent.load(half.save(tmp_path / "half"), env).learn(16)
    lr = [a.model.optimizer.param_groups[0]["lr"] for a in (straight, resumed)]
    assert lr[0] == pytest.approx(lr[1]) and lr[0] < 3e-3 / 2, lr


def test_cli_resumes_a_selector_and_refuses_other_settings(tmp_path, capsys):
    """`train hiedit --resume` goes on to --timesteps in total with the checkpoint's trainer, low
    level and budget: the same command plus --resume works, a flag naming another is refused
    (nothing written), and a selector already there has nothing to do. (SB3 trains whole rollouts
    of 64 steps, so the counts here are multiples of 64.)"""
    from edit_gym.cache import folder_sha256
    from edit_gym.cli import main

    out = tmp_path / "sel"
    args = ["train", "hiedit", "--trainer", "maskable", "--low-level", "ridge", "--budget", "2"]
    args += ["--env", "LifelongEdit-Tiny-v0", "--edits-per-sequence", "4", "--out", str(out)]
    assert main([*args, "--timesteps", "64"]) == 0
    digest = folder_sha256(out)
    capsys.readouterr()
    assert main([*args, "--timesteps", "128"]) == 2
    err = capsys.readouterr().err
    assert "holds a HiEdit checkpoint already" in err and "--resume continues it" in err
    clash = [*args[:3], "sb3", *args[4:5], "rledit-smollm2", *args[6:]]
    assert main([*clash, "--timesteps", "128", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--trainer sb3 (it has maskable)" in err and "--low-level" in err
    assert folder_sha256(out) == digest
    assert main([*args, "--timesteps", "128", "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    meta = json.loads((out / "hiedit.json").read_text())
    assert meta["steps_trained"] == 128 and meta["env_budget"] == 2
    short = ["train", "hiedit", "--env", "LifelongEdit-Tiny-v0", "--edits-per-sequence", "4", "--resume"]
    assert main([*short, "--timesteps", "128", "--out", str(out)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main([*short, "--timesteps", "128", "--out", str(tmp_path / "none")]) == 2
    assert "holds no HiEdit checkpoint" in capsys.readouterr().err


def test_cli_keeps_the_target_block_and_reference_of_a_selector_over_a_named_method(tmp_path, capsys):
    """`train hiedit --reference band --target-block band` over MEMIT: the checkpoint records both,
    `eval` and `--resume` rebuild the env with them (a flag naming another is refused, nothing
    written), and `train rledit` refuses them."""
    from edit_gym.cache import folder_sha256
    from edit_gym.cli import _hiedit_env_options, main

    out = tmp_path / "sel"
    args = ["train", "hiedit", "--trainer", "maskable", "--low-level", "memit", "--budget", "2"]
    args += ["--env", "LifelongEdit-Tiny-v0", "--edits-per-sequence", "2", "--out", str(out)]
    args += ["--reference", "band", "--target-block", "band"]
    assert main([*args, "--timesteps", "64"]) == 0
    meta = json.loads((out / "hiedit.json").read_text())
    assert _hiedit_env_options(meta) == {"target_block": "band", "reference": "band"}
    assert _hiedit_env_options({"env_budget": 2}) == {}  # an older checkpoint: the defaults
    digest = folder_sha256(out)
    capsys.readouterr()
    other = [*args[:-1], "selection", "--timesteps", "128", "--resume"]
    assert main(other) == 2
    assert "--target-block selection (it has band)" in capsys.readouterr().err
    assert folder_sha256(out) == digest
    result = tmp_path / "eval.json"
    evaluate = ["eval", "--agent", "hiedit", "--checkpoint", str(out), "--env", "LifelongEdit-Tiny-v0"]
    assert main([*evaluate, "--edits", "2", "--json", str(result)]) == 0
    assert json.loads(result.read_text())["config"]["target_block"] == "band"
    rledit = [
        "train",
        "rledit",
        "--env",
        "LifelongEdit-Tiny-v0",
        "--sequences",
        "1",
        "--target-block",
        "band",
    ]
    assert main([*rledit, "--out", str(tmp_path / "r")]) == 2
    assert "--target-block: options of `train hiedit`" in capsys.readouterr().err
