"""The advantage reward (HiEdit's intrinsic reward) and the single-file PPO."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.ppo import Args, Policy, PPOAgent, train
from tests.conftest import tensorboard_tags, weights_hash


def _mask_action(env, mask, coef=0.0):
    n = env.unwrapped.num_candidates
    return {"mask": np.asarray(mask, np.int8), "coef": np.full(n, coef, np.float32)}


def test_advantage_reward_equals_hand_computation():
    kwargs = {"num_edits": 3, "final_eval": False}
    adv = gym.make("LifelongEdit-Tiny-v0", reward="advantage", **kwargs)
    plain = gym.make("LifelongEdit-Tiny-v0", **kwargs)
    n = adv.unwrapped.num_candidates
    mask = np.zeros(n, np.int8)
    mask[[1, 4]] = 1
    adv.reset(seed=7)
    _, reward, _, _, info = adv.step(_mask_action(adv, mask, 0.3))

    # by hand: the same first step with every candidate, then (from the same state) with the mask
    plain.reset(seed=7)
    _, _, _, _, all_info = plain.step(_mask_action(plain, np.ones(n), 0.3))
    r_all = -all_info["edit_loss_after"] - all_info["kl"]  # w_loc = 1
    plain.reset(seed=7)
    _, _, _, _, own = plain.step(_mask_action(plain, mask, 0.3))
    r_mask = -own["edit_loss_after"] - own["kl"]
    sparsity = -0.1 * 2 / n  # w_sparse = 0.1

    assert info["reward_all_candidates"] == pytest.approx(r_all, rel=1e-5, abs=1e-6)
    assert info["reward_advantage"] == pytest.approx(r_mask - r_all, rel=1e-5, abs=1e-6)
    assert info["reward_sparsity"] == pytest.approx(sparsity)
    assert reward == pytest.approx(r_mask - r_all + sparsity, rel=1e-5, abs=1e-6)
    # the counterfactual left no trace: the episode's weights are those of the masked edit alone
    assert weights_hash(adv) == weights_hash(plain)


def test_advantage_of_all_candidates_is_zero():
    env = gym.make("LifelongEdit-Tiny-v0", reward="advantage", num_edits=2, final_eval=False)
    n = env.unwrapped.num_candidates
    env.reset(seed=0)
    _, reward, _, _, info = env.step(_mask_action(env, np.ones(n)))
    assert info["reward_advantage"] == pytest.approx(0.0, abs=1e-6)
    assert reward == pytest.approx(-0.1)


def _episode_return(env, act, seed: int) -> float:
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, r, terminated, truncated, _ = env.step(act(obs))
        total += r
        done = terminated or truncated
    return total


def test_ppo_beats_random_and_untrained_policies_on_the_tiny_env(tmp_path):
    # a step size 10x below the calibrated one: the policy must learn to raise its coefficients
    kwargs = {"num_edits": 8, "final_eval": False, "step_size": 0.1}
    env = gym.make("LifelongEdit-Tiny-v0", **kwargs)
    seeds = range(100, 104)
    env.action_space.seed(0)
    random_return = np.mean([_episode_return(env, lambda o: env.action_space.sample(), s) for s in seeds])
    untrained = Policy(env.observation_space)
    untrained_return = np.mean([_episode_return(env, untrained.act, s) for s in seeds])
    args = Args(total_timesteps=1024, seed=0, env_kwargs=kwargs, tb_dir=str(tmp_path / "tb"))
    policy, returns = train(args)
    assert len(returns) > 20 and all(np.isfinite(returns))
    trained_return = np.mean([_episode_return(env, policy.act, s) for s in seeds])
    assert trained_return > random_return + 5 and trained_return > untrained_return + 5, (
        random_return,
        untrained_return,
        trained_return,
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"charts/episodic_return", "losses/policy_loss", "losses/value_loss", "losses/approx_kl"} <= tags
    # the shared edit-gym layout (edit_gym.tensorboard_layout), from the env's step infos
    assert {"reward/total", "reward/edit", "edit/immediate_efficacy", "action/mask_density"} <= tags
    assert "_hparams_/experiment" in tensorboard_tags(tmp_path / "tb")["hparams"]

    agent = PPOAgent(env, args, policy)
    agent.save(tmp_path / "policy")
    loaded = PPOAgent.load(tmp_path / "policy", env)
    obs, _ = env.reset(seed=1)
    a, _ = agent.predict(obs)
    b, _ = loaded.predict(obs)
    assert np.array_equal(a["mask"], b["mask"]) and np.array_equal(a["coef"], b["coef"])


def test_autoreset_steps_are_not_learned_from():
    """Under NEXT_STEP autoreset, the step after a terminal one is masked out of the batch."""
    kwargs = {"num_edits": 2, "final_eval": False}
    args = Args(total_timesteps=8, num_envs=1, num_steps=8, update_epochs=1, seed=0, env_kwargs=kwargs)
    _, returns = train(args)
    # 8 steps with 2-step episodes: episodes end at steps 2, 5, 8 (each followed by a reset step)
    assert len(returns) == 3


def test_same_seed_same_initial_policy():
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=2)
    a, b = (PPOAgent(env, Args(seed=3)) for _ in range(2))
    c = PPOAgent(env, Args(seed=4))
    pa, pb, pc = (torch.cat([p.flatten() for p in x.policy.parameters()]) for x in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_corrupted_policy_file_is_refused(tmp_path):
    from agents.ppo import load_policy

    env = gym.make("LifelongEdit-Tiny-v0", num_edits=2)
    agent = PPOAgent(env, Args(seed=0))
    path = agent.save(tmp_path / "policy")
    weights = path / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ValueError, match="does not match the checksum"):
        load_policy(path, env.observation_space)


def test_policy_of_another_observation_layout_is_refused(tmp_path):
    from agents.ppo import load_policy

    env = gym.make("LifelongEdit-Tiny-v0", num_edits=2)
    path = PPOAgent(env, Args(seed=0)).save(tmp_path / "policy")
    space = env.observation_space
    stats = space["layer_stats"]
    older = gym.spaces.Dict(  # the 7-column statistics of edit-gym before `write_effect`
        {
            **space.spaces,
            "layer_stats": gym.spaces.Box(stats.low[:, :7], stats.high[:, :7], dtype=stats.dtype),
        }
    )
    with pytest.raises(ValueError, match="does not fit this environment's observation"):
        load_policy(path, older)
