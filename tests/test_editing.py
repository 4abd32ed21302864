"""Update-rule math on small matrices, candidate layouts, and the capture pass."""

from __future__ import annotations

import math

import pytest
import torch

from edit_gym.architectures import ARCHITECTURES, architecture_for, default_candidates
from edit_gym.candidates import resolve_candidates
from edit_gym.editing.rules import GradientRule, RidgeRule, make_rule


def test_ridge_moves_each_key_by_its_target():
    torch.manual_seed(0)
    keys, grads, weight = torch.randn(3, 16), torch.randn(3, 5), torch.randn(5, 16)
    rule = RidgeRule(step_size=0.7, log_lambda=math.log(1e-6))
    delta = rule.delta(keys, grads, weight)
    assert delta.shape == (5, 16)
    wanted = -0.7 * (keys * keys).sum(1, keepdim=True) * grads  # D_i = -a <k_i, k_i> g_i
    torch.testing.assert_close(keys @ delta.T, wanted, rtol=1e-4, atol=1e-4)
    # the dual solve equals the primal (K^T K + e^lam I)^-1 K^T D
    lam = 0.3
    primal = torch.linalg.solve(keys.T @ keys + math.exp(lam) * torch.eye(16), keys.T @ wanted).T
    torch.testing.assert_close(RidgeRule(0.7, lam).delta(keys, grads, weight), primal, rtol=1e-4, atol=1e-5)


def test_gradient_rule_is_the_fine_tuning_step():
    keys, grads = torch.randn(4, 6), torch.randn(4, 3)
    torch.testing.assert_close(GradientRule(0.5).delta(keys, grads, torch.zeros(3, 6)), -0.5 * grads.T @ keys)


def test_make_rule_unknown():
    assert isinstance(make_rule("ridge", step_size=1.0), RidgeRule)
    with pytest.raises(ValueError, match="unknown editor 'memit2'"):
        make_rule("memit2")


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


def test_gpt2_checkpoint_runs_in_the_env(tmp_path):
    """A GPT-2 (Conv1D) model from a local folder: default candidates, capture shapes, an edit."""
    import numpy as np
    from transformers import GPT2Config, GPT2LMHeadModel

    from edit_gym.env import LifelongEditEnv
    from edit_gym.tiny import build_tokenizer

    tok = build_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    env = LifelongEditEnv(model=str(tmp_path), num_edits=2, known_only=False)
    assert env.candidate_names == ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]
    env.reset(seed=0)
    assert env._cap.keys[0].shape[1] == 128 and env._cap.grads[0].shape[1] == 32
    before = [c.param.clone() for c in env.candidates]
    _, _, _, _, info = env.step({"mask": np.ones(2, np.int8), "coef": np.zeros(2, np.float32)})
    assert info["edit_loss_after"] < info["edit_loss_before"]
    assert all(not torch.equal(b, c.param) for b, c in zip(before, env.candidates, strict=True))
