"""Agents for edit-gym environments (they import ``edit_gym``; ``edit_gym`` never imports them).

Every agent follows SB3's ``predict(obs, state=None, episode_start=None, deterministic=True)
-> (action, state)``, so trained SB3 models are agents too.
"""

from agents.baselines import AllCandidatesAgent, BandAgent, FixedBlockAgent, RandomKAgent, TopKGradientAgent
from agents.rledit import RLEditAgent, RLEditConfig

BASELINES = {
    "all": AllCandidatesAgent,
    "band": BandAgent,
    "fixed": FixedBlockAgent,
    "random": RandomKAgent,
    "topk-grad": TopKGradientAgent,
}

__all__ = [
    "BASELINES",
    "AllCandidatesAgent",
    "BandAgent",
    "FixedBlockAgent",
    "RandomKAgent",
    "RLEditAgent",
    "RLEditConfig",
    "TopKGradientAgent",
]
