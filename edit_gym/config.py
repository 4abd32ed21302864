"""The environment's configuration: one dataclass, plain JSON-able values only.

Kwargs stay names, paths and numbers (never live objects) so ``env.spec`` round-trips through JSON,
``spec.make()`` rebuilds the env, and vector/subprocess envs can be made from the id alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

REWARD_MODES = ("edit", "advantage")


@dataclass
class EnvConfig:
    """Every constructor kwarg of :class:`~edit_gym.env.LifelongEditEnv`, with its default."""

    model: str = "smollm2-135m"
    """Backbone: a built-in name (``tiny``, ``smollm2-135m``), a Hugging Face id or a local folder."""
    dataset: str = "facts"
    """Edit data: a built-in name, a local JSON/JSONL file, or a ``datasets`` source (``id[:split]``)."""
    known_only: bool | None = None
    """Keep only requests whose true answer the model already gives (default: on for built-in data)."""
    num_edits: int = 20
    """Requests per episode (the stream length)."""
    edits_per_step: int = 1
    """Requests applied together in one step (a batch edit)."""
    candidates: list[str] | None = None
    """Full module names of the editable matrices (default: every block's MLP output projection, or,
    with ``editor="rledit:DIR"``, the matrices that checkpoint was trained on)."""
    action_type: str = "dict"
    """``dict``, ``box``, ``multidiscrete``, ``mask`` or ``slots`` (see :mod:`edit_gym.actions`)."""
    budget: int | None = None
    """Layer budget K: every edit must select between 1 and K candidates (an action outside that is
    an error). The ``slots`` action type needs it: K picks, each a candidate or none."""
    coef_range: float = 10.0
    """Coefficient -1 / 0 / +1 scales the update by 1/coef_range / 1 / coef_range."""
    coef_levels: int = 5
    """Coefficient levels of the ``multidiscrete`` action type."""
    editor: str = "alphaedit"
    """What writes the edits. A named method (``rome``, ``memit``, ``alphaedit``, ``prune``, ``rect``,
    ``ft-l``, ``ultraedit``: :mod:`edit_gym.editing.methods`), whose target is spread over the
    selected candidates; or a one-step rule (``ridge``, ``gradient``, ``covariance``, optionally
    ``+nullspace``, ``+topk``, ``+spectral``) or a trained hypernet (``rledit:DIR``), whose update
    the action gates and scales."""
    editor_params: dict | None = None
    """Overrides of a named method's hyper-parameters (e.g. ``{"band": [2, 3], "v_lr": 0.1}``)."""
    target: str | None = None
    """A named method's target stage: ``optimized`` (ROME / MEMIT's v*) or ``gradient`` (one step,
    the cheap mode); default: the method's own (its paper's)."""
    step_size: float | None = None
    """The rule's base step a (default: calibrated per backbone)."""
    log_lambda: float = 0.0
    """Ridge log-strength lam of the ``ridge`` rule."""
    cov_weight: float = 1.0
    """MEMIT's weight lam on the ordinary-text key covariance C0 (``covariance`` one-step rule)."""
    null_threshold: float = 1e-2
    """``nullspace`` one-step wrapper: C0 eigen-directions above this fraction of the largest are preserved."""
    rect_keep: float = 0.2
    """``topk`` one-step wrapper: fraction of update entries kept (largest |dW| / |W0|)."""
    spread: bool = True
    """Divide each update by the number of selected candidates (MEMIT-style spreading)."""
    reward: str = "edit"
    """Reward mode. ``edit``: r = -(edit loss after) - w_loc * KL - w_sparse * touched / L.
    ``advantage`` (HiEdit): r(mask) - r(all candidates) for the same request and update rule, minus
    w_sparse * touched / L; the all-candidates outcome is computed on the side and rolled back."""
    reference: str = "all"
    """The reference selection of ``reward="advantage"`` under a named method: ``all`` (every
    candidate at or below the target block) or ``band`` (the method's default band for the backbone,
    cut at the target block); written with the step's own target, scored and rolled back."""
    target_block: str = "selection"
    """Under a named method, where the step's target is optimized: ``selection`` (the block of the
    highest selected candidate, as MEMIT puts it at the top of its layers) or ``band`` (the top of
    the method's band; only the candidates at or below it can be selected: ``action_masks()``
    forbids the others and a selection that names them edits without them). With ``selection`` the
    selector moves the target and with it the reference, which is cut at the target block: the
    reference's lowest layer alone scores advantage 0 against itself, and a block where no write
    reaches the target makes every selection, the reference's too, fail alike (advantage about 0
    for an edit that did not happen). With ``band`` every selection is compared with the whole
    band writing the band's own target."""
    w_loc: float = 1.0
    """Weight of the KL(pre-edit || edited) locality penalty on neighbourhood prompts."""
    w_sparse: float = 0.1
    """Weight of the fraction of candidates touched."""
    success_threshold: float = 0.5
    """``info['is_success']`` at the end: final efficacy over the stream >= this."""
    final_eval: bool = True
    """Score every edit of the stream (efficacy, generalization, specificity) on the last step."""
    max_loss: float = 50.0
    """An update whose post-edit loss exceeds this (or is not finite) is rolled back and ends the episode."""
    device: str = "cpu"
    """Torch device (``cpu``, ``cuda``, ``cuda:1``, ``auto``)."""
    dtype: str = "float32"
    """Model dtype (``float32``, ``bfloat16``, ``float16``); updates are computed in float32."""
    device_map: str | dict | None = None
    """For models larger than one device: accelerate's ``device_map`` (``auto``, ``balanced``,
    ``balanced_low_0``, ``sequential``, or a ``{module name: device}`` dict), passed to
    ``from_pretrained``; ``device`` is then unused. Edits run on each candidate's own device."""
    share_model: bool = True
    """Envs of one process with the same model, device and dtype share one loaded model; each keeps
    its own candidate weights and swaps them in before it computes (a vector env of N sub-envs holds
    one model plus N copies of the candidates). Results are identical either way; ``False`` loads a
    private model (e.g. to call ``env.unwrapped.model`` while another env of the process steps)."""


REFERENCES = ("all", "band")
TARGET_BLOCKS = ("selection", "band")
# The options only a named method takes (a one-step rule has no band and no target block): their
# choices, and their defaults (EnvConfig's), which a one-step rule must keep.
METHOD_OPTIONS = {"reference": REFERENCES, "target_block": TARGET_BLOCKS}
METHOD_OPTION_DEFAULTS = {name: getattr(EnvConfig, name) for name in METHOD_OPTIONS}
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def default_config() -> dict:
    """The default configuration as a plain dict."""
    return asdict(EnvConfig())


def make_config(config: dict | None = None, **overrides) -> EnvConfig:
    """Merge a config dict and keyword overrides; unknown keys are an error that names them."""
    merged = {**(config or {}), **overrides}
    known = {f.name for f in fields(EnvConfig)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise TypeError(
            f"unknown LifelongEdit option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    cfg = EnvConfig(**merged)
    if cfg.num_edits < 1 or cfg.edits_per_step < 1:
        raise ValueError("num_edits and edits_per_step must be positive integers")
    if cfg.edits_per_step > cfg.num_edits:
        raise ValueError(
            f"edits_per_step ({cfg.edits_per_step}) is larger than the stream (num_edits {cfg.num_edits})"
        )
    for name, choices in METHOD_OPTIONS.items():
        if getattr(cfg, name) not in choices:
            raise ValueError(f"unknown {name} {getattr(cfg, name)!r} (known: {', '.join(choices)})")
    if cfg.reward not in REWARD_MODES:
        raise ValueError(f"unknown reward mode {cfg.reward!r} (known: {', '.join(REWARD_MODES)})")
    if cfg.coef_range < 1.0:
        raise ValueError(f"coef_range must be >= 1, got {cfg.coef_range}")
    if cfg.coef_levels < 1:
        raise ValueError(f"coef_levels must be >= 1, got {cfg.coef_levels}")
    if cfg.budget is not None and (
        isinstance(cfg.budget, bool) or not isinstance(cfg.budget, int) or cfg.budget < 1
    ):
        raise ValueError(f"budget must be a positive integer (a number of candidates), got {cfg.budget!r}")
    if cfg.action_type == "slots" and cfg.budget is None:
        raise ValueError("action_type='slots' needs a layer budget: pass budget=K")
    if cfg.device_map is not None and not (
        cfg.device_map in DEVICE_MAP_STRATEGIES
        or (
            isinstance(cfg.device_map, dict)
            and all(isinstance(k, str) and isinstance(v, (str, int)) for k, v in cfg.device_map.items())
        )
    ):
        raise ValueError(
            f"device_map must be one of {', '.join(DEVICE_MAP_STRATEGIES)} or a {{module name: device}} "
            f"dict, got {cfg.device_map!r}"
        )
    return cfg
