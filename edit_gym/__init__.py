"""edit-gym: lifelong model editing of language models as Gymnasium environments.

``import edit_gym`` registers the environment ids and loads neither torch nor transformers;
models load when an environment is made::

    import gymnasium as gym
    import edit_gym  # noqa: F401  (or use the id "edit_gym:LifelongEdit-v0")

    env = gym.make("LifelongEdit-Tiny-v0")
"""

from __future__ import annotations

from edit_gym.config import EnvConfig, default_config
from edit_gym.registration import env_ids, register_envs

__version__ = "0.1.0"
__all__ = ["EnvConfig", "__version__", "default_config", "env_ids", "register_envs"]

register_envs()
