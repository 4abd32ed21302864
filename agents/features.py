"""Stable-Baselines3 feature extractors of the agents (imported by the trainers and the safe loader)."""

from __future__ import annotations

import gymnasium as gym
import torch


def _sb3_extractor_base():
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    return BaseFeaturesExtractor


class LayerStatsExtractor(_sb3_extractor_base()):
    """SB3 features extractor: :class:`agents.ppo.LayerEncoder`, one MLP shared by every candidate row.

    Output: the L per-layer feature vectors, flattened (L * hidden), so the policy's action head can
    score each layer from its own features.
    """

    def __init__(self, observation_space: gym.spaces.Dict, hidden: int = 32) -> None:
        from agents.ppo import LayerEncoder

        num_layers = observation_space["layer_stats"].shape[0]
        super().__init__(observation_space, features_dim=num_layers * hidden)
        self.layers = LayerEncoder(observation_space, hidden)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.layers.features(obs).flatten(1)
