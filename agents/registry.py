"""Agents by name: what ``edit-gym eval --agent NAME`` and the demo resolve.

A baseline name (:data:`agents.BASELINES`), ``rledit`` / ``hiedit`` with a checkpoint folder,
``module:Class`` (any importable agent class), or a saved Stable-Baselines3 ``.zip`` (loaded by
:func:`agents.sb3_safe.load_sb3`, which never unpickles). The command line sits on top of this
module; nothing here imports the command line.
"""

from __future__ import annotations


def require_checkpoint(agent: str, checkpoint: str | None) -> str:
    """``checkpoint`` (a shipped checkpoint's name resolved to its folder), or a ValueError saying how
    to make one for ``agent``."""
    from edit_gym.shipped import resolve_checkpoint

    if not checkpoint:
        raise ValueError(
            f"--agent {agent} needs --checkpoint DIR (from `edit-gym train {agent} --out DIR`) or the name "
            "of a shipped one (`edit-gym checkpoints`)"
        )
    return resolve_checkpoint(checkpoint)


def resolve_agent(spec: str, env, checkpoint: str | None = None):
    """An agent from a baseline name, ``module:Class``, or a saved SB3 model ``.zip``."""

    from agents import BASELINES

    if spec in BASELINES:
        return BASELINES[spec](env)
    if spec == "hiedit":
        from agents.hiedit import HiEditAgent

        return HiEditAgent.load(require_checkpoint(spec, checkpoint), env=env)
    if spec == "rledit":
        from agents.rledit import RLEditAgent

        return RLEditAgent.load(require_checkpoint(spec, checkpoint), env=env)
    if spec.endswith(".zip") or (checkpoint and checkpoint.endswith(".zip") and spec in ("sb3", "ppo")):
        path = checkpoint if spec in ("sb3", "ppo") else spec
        from agents.sb3_safe import load_sb3

        return load_sb3(path, env)  # replaces every pickled field: loading never runs code from the file
    if ":" in spec:
        import importlib

        module_name, _, cls_name = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), cls_name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"unknown agent {spec!r}: {err}") from None
        if checkpoint:
            return cls.load(checkpoint, env=env) if hasattr(cls, "load") else cls(env, checkpoint)
        return cls(env)
    raise ValueError(
        f"unknown agent {spec!r} (baselines: {', '.join(BASELINES)}; or module:Class, or an SB3 .zip)"
    )


def check_agent_spec(spec: str) -> None:
    """Reject an agent name that cannot resolve, before any model is loaded."""
    from agents import BASELINES

    if spec in BASELINES or spec in ("hiedit", "rledit", "sb3", "ppo") or spec.endswith(".zip"):
        return
    module_name, sep, cls_name = spec.partition(":")
    if not (sep and module_name and cls_name):
        raise ValueError(
            f"unknown agent {spec!r} (baselines: {', '.join(BASELINES)}; rledit, hiedit with --checkpoint; "
            "or module:Class, or an SB3 .zip)"
        )
