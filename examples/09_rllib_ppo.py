"""Train Ray RLlib PPO on the tiny environment with 2 env runners in separate processes.

Each runner is a Ray actor process that builds its own env (and model); the learner updates the
policy from their batches and sends the new weights back. Training uses the `facts-train` split; the
trained policy is then compared with random ones on `facts-test` streams (subject-disjoint), on this
machine, with edit-gym's own runner.

Needs the rllib extra (`pip install -e ".[rllib]"`, or `bash setup.sh --rllib` for a separate
.venv-rllib: RLlib pins its own gymnasium). Against a running cluster: `--address auto` (see docs/rllib.md).

python examples/09_rllib_ppo.py [--env ID] [--iterations 4] [--runners 2] [--address auto]
"""

import argparse
import os
import time

import gymnasium as gym
import numpy as np
import ray

import edit_gym  # noqa: F401  registers the ids
from agents.baselines import RandomKAgent
from agents.rllib import DEFAULT_ENV_ID, RLlibAgent, ppo_config, runner_pids
from edit_gym.runner import run_episode

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--env", default=DEFAULT_ENV_ID, help="a MultiDiscrete or Box id (default: %(default)s)")
parser.add_argument("--iterations", type=int, default=4, help="PPO training iterations")
parser.add_argument("--runners", type=int, default=2, help="env runner processes")
parser.add_argument("--edits", type=int, default=8, help="edits per training episode")
parser.add_argument("--eval-streams", type=int, default=3, help="held-out streams for the comparison")
parser.add_argument("--address", help="an existing Ray cluster (e.g. auto); default: start a local one")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

if args.address:
    ray.init(address=args.address)
else:  # one CPU per runner plus the driver's learner; no dashboard on a laptop
    ray.init(num_cpus=args.runners + 1, include_dashboard=False, log_to_driver=False)

# train on the training facts; compare on the subject-disjoint test facts
env_kwargs = {"num_edits": args.edits, "final_eval": False, "dataset": "facts-train"}
config = ppo_config(args.env, env_kwargs, num_env_runners=args.runners, seed=args.seed)
start = time.time()
algo = config.build_algo()
print(f"driver pid {os.getpid()}, env runner pids {runner_pids(algo)} (built in {time.time() - start:.0f} s)")
print(f"{'iter':>4} {'env steps':>9} {'episodes':>8} {'return mean':>11} {'wall s':>7}")
for iteration in range(1, args.iterations + 1):
    result = algo.train()
    runners = result["env_runners"]
    print(
        f"{iteration:>4} {int(result['num_env_steps_sampled_lifetime']):>9} "
        f"{int(runners.get('num_episodes_lifetime', 0)):>8} "
        f"{runners.get('episode_return_mean', float('nan')):>11.3f} {time.time() - start:>7.0f}"
    )

# held-out streams: test facts (subjects never trained on), compared on this machine
env = gym.make(args.env, **{**env_kwargs, "dataset": "facts-test"})
trained = RLlibAgent.from_algorithm(algo, env)
seeds = [10_000 + i for i in range(args.eval_streams)]


class UniformRandom:
    """What PPO starts from: a uniformly random action from the env's space (seeded)."""

    def __init__(self, space: gym.Space, seed: int) -> None:
        self.space = space
        self.space.seed(seed)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.space.sample(), state


agents = {
    "RLlib PPO": trained,
    "uniform random": UniformRandom(env.action_space, args.seed),
    "random-K": RandomKAgent(env, seed=args.seed),
}
for name, agent in agents.items():
    runs = [run_episode(env, agent, seed=s, extended=False, progress=False) for s in seeds]
    ret = np.mean([sum(c["reward"] for c in r["curve"]) for r in runs])
    eff = 100 * np.mean([r["final"]["efficacy"] for r in runs])
    print(f"{name:>14} on {len(seeds)} held-out streams: return {ret:+.3f}, final efficacy {eff:.1f}%")
algo.stop()
ray.shutdown()
