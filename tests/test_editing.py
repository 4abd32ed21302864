"""Update-rule math on small matrices, candidate layouts, and the capture pass."""

from __future__ import annotations

import math

import pytest
import torch

from edit_gym.architectures import ARCHITECTURES, architecture_for, default_candidates
from edit_gym.candidates import resolve_candidates
from edit_gym.editing.rules import Editor, GradientRule, RidgeRule, RuleContext


def test_ridge_moves_each_key_by_its_target():
    torch.manual_seed(0)
    keys, grads, weight = torch.randn(3, 16), torch.randn(3, 5), torch.randn(5, 16)
    rule = RidgeRule(step_size=0.7, log_lambda=math.log(1e-6))
    delta = rule.update(0, keys, grads, weight).matrix()
    assert delta.shape == (5, 16)
    wanted = -0.7 * (keys * keys).sum(1, keepdim=True) * grads  # D_i = -a <k_i, k_i> g_i
    torch.testing.assert_close(keys @ delta.T, wanted, rtol=1e-4, atol=1e-4)
    # the dual solve equals the primal (K^T K + e^lam I)^-1 K^T D
    lam = 0.3
    primal = torch.linalg.solve(keys.T @ keys + math.exp(lam) * torch.eye(16), keys.T @ wanted).T
    torch.testing.assert_close(
        RidgeRule(0.7, lam).update(0, keys, grads, weight).matrix(), primal, rtol=1e-4, atol=1e-5
    )


def test_gradient_rule_is_the_fine_tuning_step():
    keys, grads = torch.randn(4, 6), torch.randn(4, 3)
    torch.testing.assert_close(
        GradientRule(0.5).update(0, keys, grads, torch.zeros(3, 6)).matrix(), -0.5 * grads.T @ keys
    )


def test_editor_specs():
    ctx = RuleContext([], [], lambda: [])
    assert isinstance(Editor("ridge", ctx).rule, RidgeRule)
    assert [w.name for w in Editor("covariance+nullspace+topk", ctx).wrappers] == ["nullspace", "topk"]
    with pytest.raises(ValueError, match="unknown editor 'covariance2'"):
        Editor("covariance2", ctx)
    with pytest.raises(ValueError, match="wrapper"):
        Editor("ridge+nullspace+nullspace", ctx)
    with pytest.raises(ValueError, match="wrapper"):
        Editor("ridge+magic", ctx)


def test_conv1d_and_linear_candidates_edit_identically():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    linear, conv = torch.nn.Linear(8, 4, bias=False), Conv1D(4, 8)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.T)
        conv.bias.zero_()
    model = torch.nn.ModuleDict({"lin": linear, "conv": conv})
    lin_c, conv_c = resolve_candidates(model, ["lin", "conv"])
    assert (lin_c.transposed, conv_c.transposed) == (False, True)
    assert lin_c.shape == conv_c.shape == (4, 8)
    delta = torch.randn(4, 8)
    lin_c.add_(delta)
    conv_c.add_(delta)
    x = torch.randn(2, 8)
    torch.testing.assert_close(linear(x), conv(x))


def test_architecture_maps_are_data():
    for family in ("llama", "mistral", "qwen2", "gpt2", "gptj", "gpt_neox"):
        assert family in ARCHITECTURES
    assert default_candidates("gpt2", 2) == ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]
    assert default_candidates("llama", 1, "mlp_in") == [
        "model.layers.0.mlp.gate_proj",
        "model.layers.0.mlp.up_proj",
    ]
    with pytest.raises(ValueError, match="no candidate-module map for model_type 'mamba'"):
        architecture_for("mamba")


@pytest.mark.parametrize("editor", ["ridge", "memit"])
def test_gpt2_checkpoint_runs_in_the_env(tmp_path, monkeypatch, editor):
    """A GPT-2 (Conv1D) model from a local folder: default candidates, capture shapes, an edit
    (a one-step rule and a named method, whose writes go through the transposed storage)."""
    monkeypatch.setenv(
        "EDIT_GYM_CACHE", str(tmp_path / "cache")
    )  # C0 of a throwaway model: not the user's cache
    import numpy as np
    from transformers import GPT2Config, GPT2LMHeadModel

    from edit_gym.env import LifelongEditEnv
    from edit_gym.tiny import build_tokenizer

    tok = build_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    env = LifelongEditEnv(model=str(tmp_path / "gpt2"), num_edits=2, known_only=False, editor=editor)
    assert env.candidate_names == ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]
    env.reset(seed=0)
    assert env._cap.keys[0].shape[1] == 128 and env._cap.grads[0].shape[1] == 32
    before = [c.param.clone() for c in env.candidates]
    _, _, _, _, info = env.step({"mask": np.ones(2, np.int8), "coef": np.zeros(2, np.float32)})
    assert not info["fault"]
    if editor == "ridge":
        assert info["edit_loss_after"] < info["edit_loss_before"]
    else:  # a random model hardly routes the subject to the answer; the target stage still gains
        assert info["target_layer"] == 1 and np.isfinite(info["target_nll"])
    assert all(not torch.equal(b, c.param) for b, c in zip(before, env.candidates, strict=True))


def _context(weight: torch.Tensor, cov: torch.Tensor) -> RuleContext:
    lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False).requires_grad_(False)
    with torch.no_grad():
        lin.weight.copy_(weight)
    (cand,) = resolve_candidates(torch.nn.ModuleDict({"w": lin}), ["w"])
    return RuleContext([cand], [weight.clone()], lambda: [cov])


def test_covariance_rule_matches_the_closed_form():
    from edit_gym.editing.rules import CovarianceRule, desired_change

    torch.manual_seed(1)
    text_keys = torch.randn(200, 12)
    cov = text_keys.T @ text_keys / 200
    keys, grads, weight = torch.randn(2, 12), torch.randn(2, 5), torch.randn(5, 12)
    rule = CovarianceRule(_context(weight, cov), step_size=0.3, cov_weight=2.0)
    d = desired_change(keys, grads, 0.3)
    direct = d.T @ keys @ torch.linalg.inv(2.0 * cov + keys.T @ keys)
    torch.testing.assert_close(rule.update(0, keys, grads, weight).matrix(), direct, rtol=1e-3, atol=1e-5)
    # a vanishing covariance weight reaches the targets on the edit keys exactly
    exact = CovarianceRule(_context(weight, cov), step_size=0.3, cov_weight=1e-6)
    torch.testing.assert_close(
        keys @ exact.update(0, keys, grads, weight).matrix().T, d, rtol=1e-3, atol=1e-3
    )


def test_nullspace_leaves_preserved_keys_unchanged():
    from edit_gym.editing.rules import AlphaEditWrapper

    torch.manual_seed(2)
    basis = torch.linalg.qr(torch.randn(16, 16))[0]
    preserved = torch.randn(300, 6) @ basis[:, :6].T  # ordinary text lives in a 6-dim subspace
    cov = preserved.T @ preserved / 300
    weight = torch.randn(4, 16)
    ctx = _context(weight, cov)
    wrapper = AlphaEditWrapper(ctx)
    keys, grads = torch.randn(3, 16), torch.randn(3, 4)
    dw = wrapper.transform(0, RidgeRule(1.0).update(0, keys, grads, weight)).matrix()
    assert float((preserved @ dw.T).abs().max()) < 1e-5
    assert float(dw.abs().max()) > 1e-3  # it still edits, in the null space
    wrapper.record(0, keys)  # the edited keys are preserved from now on
    later = wrapper.transform(
        0, RidgeRule(1.0).update(0, torch.randn(2, 16), torch.randn(2, 4), weight)
    ).matrix()
    assert float((keys @ later.T).abs().max()) < 1e-5 and float((preserved @ later.T).abs().max()) < 1e-5


def test_nullspace_basis_stays_orthonormal_when_keys_repeat():
    """Keys nearly inside the preserved span must not add noise directions: the projection would
    stop being one and amplify (this made SmolLM2 explode after ~57 edits of a 839-edit stream)."""
    from edit_gym.editing.rules import AlphaEditWrapper

    torch.manual_seed(0)
    d = 64
    basis = torch.linalg.qr(torch.randn(d, d))[0]
    cov = (basis * torch.cat([torch.full((16,), 100.0), torch.full((48,), 1e-4)])) @ basis.T
    wrapper = AlphaEditWrapper(_context(torch.randn(4, d), cov))
    repeated = torch.randn(3, d) * 50
    for t in range(40):
        keys = repeated + 1e-5 * torch.randn(3, d) if t % 2 else torch.randn(3, d) * 50
        wrapper.record(0, keys)
        q = wrapper._edited[0]
        assert len(q) <= 48  # never more directions than the null space holds
        assert float((q @ q.T - torch.eye(len(q))).abs().max()) < 1e-4
        x = torch.randn(50, d)
        assert float((wrapper._project(0, x).norm(dim=1) / x.norm(dim=1)).max()) <= 1.0 + 1e-4


def test_nullspace_closed_form_reaches_targets_in_the_null_space():
    from edit_gym.editing.rules import AlphaEditWrapper, Editor, desired_change

    torch.manual_seed(3)
    basis = torch.linalg.qr(torch.randn(16, 16))[0]
    preserved = torch.randn(300, 6) @ basis[:, :6].T
    cov = preserved.T @ preserved / 300
    weight = torch.randn(4, 16)
    ctx = _context(weight, cov)
    keys, grads = torch.randn(3, 16), torch.randn(3, 4)
    d = desired_change(keys, grads, 1.0)
    dw = AlphaEditWrapper(ctx, ridge_floor=0.0).solve(0, keys, d, log_lambda=-20.0).matrix()
    torch.testing.assert_close(keys @ dw.T, d, rtol=1e-3, atol=1e-3)  # each key gets its change
    assert float((preserved @ dw.T).abs().max()) < 1e-4  # and ordinary text none
    memit = Editor("covariance+nullspace", ctx).update(0, keys, grads, weight).matrix()
    ridge = Editor("ridge+nullspace", ctx).update(0, keys, grads, weight).matrix()
    torch.testing.assert_close(memit, ridge)  # P takes C0's place


def test_nullspace_edits_a_mostly_preserved_key_little():
    """The ridge floor (relative to the key scale) bounds the update of a key whose residual outside
    the preserved span is small: at most 1 / (2 sqrt(floor)) times the plain ridge update."""
    from edit_gym.editing.rules import AlphaEditWrapper, RidgeRule, desired_change

    torch.manual_seed(4)
    basis = torch.linalg.qr(torch.randn(16, 16))[0]
    preserved = torch.randn(300, 6) @ basis[:, :6].T
    weight = torch.randn(4, 16)
    ctx = _context(weight, preserved.T @ preserved / 300)
    key = 50 * basis[:, 0] + 0.5 * basis[:, 10]  # 1% of its norm outside the preserved span
    keys, grads = key[None], torch.randn(1, 4)
    d = desired_change(keys, grads, 1.0)
    ridge = RidgeRule(1.0).update(0, keys, grads, weight).matrix()
    floored = AlphaEditWrapper(ctx).solve(0, keys, d, log_lambda=0.0).matrix()
    unfloored = AlphaEditWrapper(ctx, ridge_floor=0.0).solve(0, keys, d, log_lambda=0.0).matrix()
    assert float(unfloored.norm() / ridge.norm()) > 20  # what exploded: |k| / 2 times ridge's norm
    assert float(floored.norm() / ridge.norm()) <= 5.0 + 1e-3
    assert float((preserved @ floored.T).abs().max()) < 1e-3


def test_rect_keeps_the_largest_relative_entries():
    from edit_gym.editing.rules import RectWrapper, Update

    torch.manual_seed(3)
    weight = torch.randn(10, 10)
    dense = torch.randn(10, 10)
    out = (
        RectWrapper(_context(weight, torch.eye(10)), rect_keep=0.2).transform(0, Update(dense=dense)).matrix()
    )
    kept = out != 0
    assert int(kept.sum()) == 20
    rel = dense.abs() / (weight.abs() + 1e-8)
    assert float(rel[kept].min()) >= float(rel[~kept].max())
    torch.testing.assert_close(out[kept], dense[kept])


def test_prune_restrains_large_singular_values():
    from edit_gym.editing.rules import PruneWrapper

    torch.manual_seed(4)
    weight = torch.randn(6, 8)
    ctx = _context(weight, torch.eye(8))
    bound = float(torch.linalg.matrix_norm(weight, ord=2))
    rank_one = torch.outer(torch.randn(6), torch.randn(8))
    big = rank_one / torch.linalg.matrix_norm(rank_one, ord=2) * 10 * bound  # singular value at 10x the bound
    ctx.candidates[0].add_(big)
    PruneWrapper(ctx).restrain(0)
    s = torch.linalg.svdvals(ctx.candidates[0].param - weight)
    assert float(s[0]) == pytest.approx(bound + math.log(10.0), rel=1e-3)
    small = big / 100  # below the bound: untouched
    ctx2 = _context(weight, torch.eye(8))
    ctx2.candidates[0].add_(small)
    PruneWrapper(ctx2).restrain(0)
    torch.testing.assert_close(ctx2.candidates[0].param - weight, small, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "editor", ["covariance", "covariance+nullspace", "ridge+topk+spectral", "gradient+nullspace"]
)
def test_every_editor_runs_in_the_env(editor):
    import numpy as np

    from edit_gym.env import LifelongEditEnv

    env = LifelongEditEnv(model="tiny", num_edits=3, editor=editor)
    env.reset(seed=0)
    n = env.num_candidates
    for _ in range(3):
        _, reward, _, _, info = env.step({"mask": np.ones(n, np.int8), "coef": np.zeros(n, np.float32)})
        assert np.isfinite(reward) and info["fault"] == ""
    assert info["edit_loss_after"] < info["edit_loss_before"]


def test_register_rule_makes_a_new_editor_name():
    import gymnasium as gym

    from edit_gym.editing.rules import RULE_FACTORIES, GradientRule, register_rule

    register_rule("half_gradient", lambda ctx, p: GradientRule(0.5 * p.get("step_size", 1.0)))
    try:
        updates = {}
        for editor in ("gradient", "half_gradient"):
            env = gym.make("LifelongEdit-Tiny-v0", editor=editor, num_edits=2)
            env.reset(seed=0)
            inner = env.unwrapped
            cap = inner._cap
            updates[editor] = inner._rule.update(0, cap.keys[0], cap.grads[0], inner.candidates[0].weight())
            env.close()
        full, half = updates["gradient"].matrix(), updates["half_gradient"].matrix()
        assert torch.allclose(half, 0.5 * full, rtol=1e-5, atol=1e-8)
        with pytest.raises(ValueError, match="is taken"):
            register_rule("ridge", lambda ctx, p: None)
        with pytest.raises(ValueError, match="plain identifier"):
            register_rule("my+rule", lambda ctx, p: None)
    finally:
        RULE_FACTORIES.pop("half_gradient", None)
    with pytest.raises(ValueError, match="unknown editor 'half_gradient'"):
        gym.make("LifelongEdit-Tiny-v0", editor="half_gradient", num_edits=2)
