"""Stable-Baselines3 callbacks: edit-gym's shared TensorBoard layout, and a per-step hook.

Pass one to any SB3 ``learn(callback=...)``; it records the env's reward terms, immediate edit
metrics and action statistics (:mod:`edit_gym.tensorboard_layout`) as rollout means, next to SB3's
own ``train/*`` and ``rollout/*`` tags::

    model = PPO("MultiInputPolicy", gym.make("LifelongEdit-Tiny-v0", action_type="mask"),
                tensorboard_log="runs/sb3")
    model.learn(2048, callback=EditMetricsCallback())
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from edit_gym.tensorboard_layout import step_scalars


class EditMetricsCallback(BaseCallback):
    """Records :func:`edit_gym.tensorboard_layout.step_scalars` of every env step with
    ``logger.record_mean``, so each dump holds the means since the last one."""

    def _on_step(self) -> bool:
        infos = self.locals.get("infos") or []
        rewards = np.asarray(self.locals.get("rewards", np.zeros(len(infos))), dtype=np.float64)
        for info, reward in zip(infos, rewards, strict=False):
            if "efficacy" not in info:  # not an edit step (e.g. a wrapper's reset info)
                continue
            for tag, value in step_scalars(info, float(reward)).items():
                self.logger.record_mean(tag, value)
        return True


class StepCallback(BaseCallback):
    """Calls ``fn(num_timesteps)`` after every env step of ``learn`` (e.g. a periodic checkpoint),
    or with ``on="update"`` after each policy update except the last (SB3 trains on a rollout after
    its ``on_rollout_end``, so the hook is the next rollout's start; call ``fn`` once more after
    ``learn`` returns for the last update)."""

    def __init__(self, fn: Callable[[int], None], on: str = "step") -> None:
        super().__init__()
        if on not in ("step", "update"):
            raise ValueError(f"on must be 'step' or 'update', got {on!r}")
        self.fn, self.on = fn, on
        self._start = 0

    def _on_training_start(self) -> None:
        self._start = self.num_timesteps  # a continued model starts past 0

    def _on_step(self) -> bool:
        if self.on == "step":
            self.fn(self.num_timesteps)
        return True

    def _on_rollout_start(self) -> None:
        if self.on == "update" and self.num_timesteps > self._start:
            self.fn(self.num_timesteps)
