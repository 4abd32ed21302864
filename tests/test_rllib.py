"""Ray RLlib: the env adapter, the agent adapter, and PPO training with 2 env runner processes.

The tests that import Ray skip without the rllib extra; `bash setup.sh --rllib` makes .venv-rllib,
where `.ci/run` runs this file (RLlib pins its own gymnasium, so it gets its own environment).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import edit_gym  # noqa: F401  registers the ids
from agents.rllib import make_env
from edit_gym.env import LAYER_STATS

ROOT = Path(__file__).resolve().parents[1]


def test_make_env_flattens_and_refuses_what_rllib_cannot_sample():
    env = make_env({"env_id": "LifelongEdit-Tiny-MultiDiscrete-v0", "num_edits": 2})
    assert isinstance(env.observation_space, gym.spaces.Box) and env.observation_space.shape == (
        256 + 6 * len(LAYER_STATS) + 4,  # request, 6 candidates' statistics, progress
    )
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape and np.isfinite(obs).all()
    with pytest.raises(ValueError, match="RLlib's default PPO models cannot sample"):
        make_env({"env_id": "LifelongEdit-Tiny-v0"})  # Dict action with a MultiBinary mask


def test_rllib_agent_acts_in_the_env():
    pytest.importorskip("ray.rllib")
    from agents.rllib import RLlibAgent, ppo_config
    from edit_gym.testing import check_agent

    for env_id in ("LifelongEdit-Tiny-MultiDiscrete-v0", "LifelongEdit-Tiny-Box-v0"):
        env = gym.make(env_id, num_edits=3, final_eval=False)
        flat = make_env({"env_id": env_id, "num_edits": 3})
        module = ppo_config(env_id, {"num_edits": 3}).get_rl_module_spec(env=flat).build()
        agent = RLlibAgent(module, env.observation_space, env.action_space)
        summary = check_agent(agent, env)
        assert summary["edits"] == 3 and np.isfinite(summary["return"])
        obs, _ = env.reset(seed=1)
        for _ in range(20):  # sampled (not greedy) actions too stay inside the space
            assert env.action_space.contains(agent.predict(obs, deterministic=False)[0])


@pytest.mark.rllib
@pytest.mark.slow
def test_ppo_trains_with_two_env_runner_processes():
    """examples/09 on a local Ray: 2 runner processes, batches of 2 x 32 steps, a held-out comparison."""
    pytest.importorskip("ray.rllib")
    # Ray starts its workers at niceness 15; on a busy 2-core machine they would then starve
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_worker_niceness": "0"}
    argv = [sys.executable, str(ROOT / "examples" / "09_rllib_ppo.py"), "--iterations", "2"]
    run = subprocess.run([*argv, "--eval-streams", "1"], capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    pids = re.search(r"driver pid (\d+), env runner pids \[(\d+), (\d+)\]", out)
    assert pids, out
    driver, *runners = (int(p) for p in pids.groups())
    assert len({driver, *runners}) == 3, "each env runner is its own process"
    steps = [int(m) for m in re.findall(r"^\s+\d+\s+(\d+)\s+\d+\s+-?[\d.]+", out, re.M)]
    assert steps == [64, 128], out
    for name in ("RLlib PPO", "uniform random", "random-K"):
        assert re.search(rf"{name} on 1 held-out streams: return [+-]?[\d.]+, final efficacy [\d.]+%", out), (
            out
        )
