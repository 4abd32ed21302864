"""The editors under their papers' names, and what each uses at every stage, as data.

| method      | target (targets.py) | keys (keys.py)  | write (write.py)         | restrain (restraints.py) |
|-------------|---------------------|-----------------|--------------------------|--------------------------|
| `rome`      | optimized v*        | subject, avg    | `rome`: exact, C0^-1     | -                        |
| `memit`     | optimized v*        | subject, avg    | `memit`: lam C0 + K^T K  | -                        |
| `alphaedit` | optimized v*        | subject, avg    | `alphaedit`: null space of C0, K_p penalty, L2 | -  |
| `prune`     | optimized v*        | subject, avg    | `memit`                  | PRUNE on the accumulated change |
| `rect`      | optimized v*        | subject, avg    | `memit`                  | RECT top-20% relative    |
| `ft-l`      | - (the weights are fine-tuned) | -    | Adam, L-inf ball         | -                        |
| `ultraedit` | -lr ||k_hat||^2 g_hat | answer positions | ridge, raw keys       | -                        |

The optimized target and the writes are spread over the *selected* candidates in layer order
(:mod:`edit_gym.editing.spreading`); the editor's ``band`` is its paper's recipe for which to
select (the ``band`` baseline agent), measured per backbone (``benchmarks/band_sweep.py``).
Hyper-parameters: :data:`METHODS` holds each paper's defaults; :data:`BACKBONE_PARAMS` what was
measured for a built-in backbone; an env's ``editor_params`` overrides both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from edit_gym.editing.targets import TARGET_DEFAULTS, TARGET_MODES


@dataclass(frozen=True)
class Method:
    """One named editor: its paper, its stages, and its default hyper-parameters."""

    name: str
    paper: str
    target: str  # "optimized", "gradient" or "none"
    write: str  # "rome", "memit", "alphaedit", "ft", "ultraedit"
    restraint: str | None = None  # "prune", "rect"
    params: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


def _p(**kw: Any) -> MappingProxyType:
    return MappingProxyType(kw)


_TARGET = {**TARGET_DEFAULTS, "templates": 5, "template_length": 10}

METHODS: dict[str, Method] = {
    "rome": Method(
        "rome",
        "ROME, Meng et al. 2022 (arXiv 2202.05262); hparams of its GPT-2 XL config",
        "optimized",
        "rome",
        params=_p(**{**_TARGET, "v_num_grad_steps": 20, "clamp_norm_factor": 4.0}),
    ),
    "memit": Method(
        "memit",
        "MEMIT, Meng et al. 2023 (arXiv 2210.07229); hparams of its GPT-J config",
        "optimized",
        "memit",
        params=_p(**{**_TARGET, "clamp_norm_factor": 0.75, "mom2_update_weight": 15000.0}),
    ),
    "alphaedit": Method(
        "alphaedit",
        "AlphaEdit, Fang et al. 2025 (arXiv 2410.02355); hparams of its GPT-J config",
        "optimized",
        "alphaedit",
        params=_p(
            **{**_TARGET, "clamp_norm_factor": 0.75},
            L2=10.0,
            nullspace_rule="energy",
            nullspace_value=0.02,
            kp_mode="penalty",
        ),
    ),
    "prune": Method(
        "prune",
        "PRUNE, Ma et al. 2025 (arXiv 2405.16821), over MEMIT",
        "optimized",
        "memit",
        "prune",
        params=_p(**{**_TARGET, "clamp_norm_factor": 0.75, "mom2_update_weight": 15000.0}, prune_base=math.e),
    ),
    "rect": Method(
        "rect",
        "RECT, Gu et al. 2024 (arXiv 2401.04700), over MEMIT",
        "optimized",
        "memit",
        "rect",
        params=_p(**{**_TARGET, "clamp_norm_factor": 0.75, "mom2_update_weight": 15000.0}, rect_keep=0.2),
    ),
    "ft-l": Method(
        "ft-l",
        "FT-L (ROME paper's fine-tuning baseline; EasyEdit FT hparams)",
        "none",
        "ft",
        params=_p(ft_steps=25, ft_lr=5e-4, norm_constraint=5e-4),
    ),
    "ultraedit": Method(
        "ultraedit",
        "UltraEdit, Gu et al. 2025 (arXiv 2505.14679)",
        "none",
        "ultraedit",
        params=_p(ultra_lr=1e-6, ultra_lambda=1.0),
    ),
}

# What was measured on a built-in backbone (benchmarks/band_sweep.py, results/editors/editors.md): the band
# (block indices) and the values that do not carry over from the papers' 1.5-8B models.
BACKBONE_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    # SmolLM2-135M. Band: results/editors/band_sweep_smollm2.md (MEMIT single edits, 10 train records): bands
    # ending at blocks 3 / 5 / 7 / 10 reach efficacy score 100% and token efficacy 94 / 98 / 99 / 100%,
    # relation specificity 16-19% for all; 3-7 (22 blocks above the target) as the field's lower band.
    # Target: 10 train-split requests at block 7, 25 steps (`band_sweep.py --target-grid`, docstring):
    # lr 0.5 / clamp 0.75 (MEMIT's GPT-J values) converge 30%, median NLL 0.14; lr 1.0 / clamp 4
    # 60%, all below 0.5. Five 10-token prefixes cost 20 s per edit on 2 cores, two 5-token ones 4.8 s.
    # Step budget, 20 train requests at block 7, lr 1.0 / clamp 4 (`band_sweep.py --tops 7 --records
    # 20 --target-grid 1.0:4:20 1.0:4:60 0.5:4:60 2.0:4:60`): 20 steps reach NLL < 0.05 for 70%
    # (85% < 0.5; every single edit with token efficacy < 1 in results/editors/editors.md had hit
    # the budget), 60 steps for 100% at a mean of 20.6 steps (16.6) and the same wall time (62 s vs
    # 60 s for the 20): the early stop makes the longer budget nearly free. lr 0.5: 100% at 27.9
    # steps, 78 s; lr 2.0: 100% at 17.0, 48 s.
    "smollm2-135m": {
        "*": {
            "band": [3, 4, 5, 6, 7],
            "v_lr": 1.0,
            "v_num_grad_steps": 60,
            "clamp_norm_factor": 4.0,
            "templates": 2,
            "template_length": 5,
        },
        "rome": {"band": [7]},
        # single edits, 10 train-split records, `benchmarks/editors.py single --editors ultraedit
        # --records 10 --data .../knowedit_counterfact_train.json --editor-params '{"ultra_lr": LR}'`:
        # token efficacy / specificity 25 / 100 (3e-5), 46 / 89 (1e-4), 44 / 64 (3e-4), 39 / 40
        # (1e-3), 0 / 2 (1e-2); the authors' 1e-6 (7-8B models) does not move this one
        "ultraedit": {"ultra_lr": 1e-4},
        # AlphaEdit: a 10%-energy null space at the paper's L2 = 10 (not the 2% / L2 3 used before).
        # Single edits on pristine weights, first 100 test records (`benchmarks/editors.py single
        # --editors alphaedit --records 100`; results/editors/editors.md), eff. score / token eff /
        # para. score / neigh. score / rel. spec: 99.0 / 97.1 / 78.0 / 73.5 / 29.9 (2% / L2 3:
        # 99.0 / 96.2 / 76.0 / 73.1 / 31.6). Why a wider null space: on SmolLM2 a 2%-energy one keeps
        # only 152-183 of 1,536 directions per band layer and a stream's keys crowd it (at L2 = 3 the
        # band delivers 80% of a residual at the first step, 40% at edit 839); 10% keeps 534-604 and
        # at L2 = 10 delivers 82% -> 67% with 2/3 of the ordinary-text leak
        # (`benchmarks/alphaedit_capacity.py`, results/editors/alphaedit_capacity-smollm2-135m.md).
        # The paper's L2 = 10 on a 2% space writes only about a third of a residual for one key
        # (|P k|^2 is 3-5 at blocks 3-7): single edits 90.0 / 84.9 (20 train records).
        # 839-edit stream, seed 0, 10 a step (`benchmarks/editors.py stream --editors alphaedit
        # --edits 839 --seeds 0 --wild`, docs/results.md): immediate efficacy 0.97 over edits 1-100 and
        # 0.64 over 801-839 (2% / L2 3: 0.91 -> 0.13); final eff. score 73.5 (64.6), token eff 9.5
        # (2.1), ppl 44.6 (359): better, yet the stream still loses most of its edits by the end.
        "alphaedit": {"L2": 10.0, "nullspace_value": 0.1},
    },
    # the tiny model (6 blocks, trained on the facts alone) routes a subject only through block 0:
    # an optimized delta at block 0 reaches the target for 75% of requests, at block 1 for 15%, at
    # block 2 for none (benchmarks/band_sweep.py); it never saw a prefix, and two 5-token ones
    # lower that to 45%, so it edits on the plain prompt alone
    "tiny": {
        "*": {"band": [0, 1], "templates": 0, "clamp_norm_factor": 4.0},
        "rome": {"band": [0]},
    },
}


def method_names() -> list[str]:
    return sorted(METHODS)


def default_band(num_blocks: int) -> list[int]:
    """For a backbone nobody measured: MEMIT's GPT-J recipe (blocks 3-8 of 28) in proportion."""
    lo = max(0, round(3 / 28 * num_blocks))
    hi = max(lo, min(num_blocks - 1, round(8 / 28 * num_blocks)))
    return list(range(lo, hi + 1))


def method_params(
    name: str, backbone: str, num_blocks: int, d_in: int, overrides: dict | None = None
) -> dict[str, Any]:
    """The hyper-parameters of ``name`` on a backbone: paper defaults < measured < ``overrides``."""
    from edit_gym.editing.write import memit_lambda

    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} (known: {', '.join(method_names())})")
    method = METHODS[name]
    measured = BACKBONE_PARAMS.get(backbone, {})
    params: dict[str, Any] = {**method.params, **measured.get("*", {}), **measured.get(name, {})}
    if "band" not in params:
        band = default_band(num_blocks)
        params["band"] = band[-1:] if method.write == "rome" else band
    if "mom2_update_weight" in params and "lam" not in (overrides or {}):
        params["lam"] = memit_lambda(d_in, params["mom2_update_weight"])
    unknown = sorted(set(overrides or {}) - set(params) - {"lam", "target"})
    if unknown:
        raise ValueError(
            f"editor_params for {name!r}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(params))})"
        )
    params.update(overrides or {})
    params.setdefault("target", method.target)
    if method.target != "none" and params["target"] not in TARGET_MODES:
        raise ValueError(f"target must be one of {', '.join(TARGET_MODES)}, got {params['target']!r}")
    if method.target == "none" and params["target"] != "none":
        raise ValueError(f"method {name!r} has no target stage; target= does not apply to it")
    if "v_num_grad_steps" in params and int(params["v_num_grad_steps"]) < 1:
        raise ValueError("v_num_grad_steps must be >= 1")
    return params
