"""Environment ids, registered when ``edit_gym`` is imported (string entry points: no torch here).

| id                                            | model        | editor          | action_type |
|-----------------------------------------------|--------------|-----------------|-------------|
| LifelongEdit-v0                               | smollm2-135m | DEFAULT_EDITOR (a named method: target, then write) | dict |
| LifelongEdit-{Box,MultiDiscrete,Mask}-v0      | smollm2-135m | DEFAULT_EDITOR  | box / multidiscrete / mask |
| LifelongEdit-OneStep-v0 (+ the same variants) | smollm2-135m | ridge (one-step: fast RL loops, RLEdit's world) | dict, ... |
| LifelongEdit-Tiny-v0 (+ the same variants)    | tiny         | ridge (the test and teaching workhorse) | dict, ... |
"""

from __future__ import annotations

ENTRY_POINT = "edit_gym.env:LifelongEditEnv"
ACTION_VARIANTS = {"": "dict", "-Box": "box", "-MultiDiscrete": "multidiscrete", "-Mask": "mask"}
DEFAULT_EDITOR = "alphaedit"  # the best named method measured on SmolLM2 (results/editors/editors.md)
ONE_STEP_EDITOR = "ridge"
# id part -> (model, editor)
MODELS = {
    "": ("smollm2-135m", DEFAULT_EDITOR),
    "-OneStep": ("smollm2-135m", ONE_STEP_EDITOR),
    "-Tiny": ("tiny", ONE_STEP_EDITOR),
}


def env_ids() -> dict[str, dict]:
    """Every id this package registers, with its kwargs."""
    ids = {}
    for model_suffix, (model, editor) in MODELS.items():
        for action_suffix, action_type in ACTION_VARIANTS.items():
            ids[f"LifelongEdit{model_suffix}{action_suffix}-v0"] = {
                "model": model,
                "editor": editor,
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
