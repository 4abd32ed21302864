"""Environment ids, registered when ``edit_gym`` is imported (string entry points: no torch here).

| id                                   | model        | action_type     |
|--------------------------------------|--------------|-----------------|
| LifelongEdit-v0                      | smollm2-135m | dict            |
| LifelongEdit-{Box,MultiDiscrete,Mask}-v0 | smollm2-135m | box / multidiscrete / mask |
| LifelongEdit-Tiny-v0                 | tiny         | dict            |
| LifelongEdit-Tiny-{Box,MultiDiscrete,Mask}-v0 | tiny | box / multidiscrete / mask |
"""

from __future__ import annotations

ENTRY_POINT = "edit_gym.env:LifelongEditEnv"
ACTION_VARIANTS = {"": "dict", "-Box": "box", "-MultiDiscrete": "multidiscrete", "-Mask": "mask"}
MODELS = {"": "smollm2-135m", "-Tiny": "tiny"}


def env_ids() -> dict[str, dict]:
    """Every id this package registers, with its kwargs."""
    ids = {}
    for model_suffix, model in MODELS.items():
        for action_suffix, action_type in ACTION_VARIANTS.items():
            ids[f"LifelongEdit{model_suffix}{action_suffix}-v0"] = {
                "model": model,
                "dataset": "facts",
                "action_type": action_type,
                "num_edits": 20,
            }
    return ids


def register_envs() -> None:
    """Register every id once (importing the package twice, or reloading it, is harmless)."""
    from gymnasium.envs.registration import register, registry

    for env_id, kwargs in env_ids().items():
        if env_id not in registry:
            register(id=env_id, entry_point=ENTRY_POINT, kwargs=kwargs)
