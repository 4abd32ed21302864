"""The named editors on the tiny model: target, keys, spreading, writes, restraints, and faults."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from edit_gym.actions import encode_action
from edit_gym.data import EditRequest, InvalidRecordError
from edit_gym.editing.keys import build_sites, read_sites
from edit_gym.editing.methods import METHODS, method_params
from edit_gym.editing.restraints import prune_singular_values, rect_sparsify
from edit_gym.editing.spreading import shares, spread
from edit_gym.editing.targets import optimize_target
from edit_gym.editing.write import AlphaEditWriter, CovarianceWriter, nullspace_projector
from edit_gym.env import LAYER_STATS
from tests.conftest import weights_hash


@pytest.fixture(scope="module")
def memit_env():
    env = gym.make("LifelongEdit-Tiny-v0", editor="memit", num_edits=6, edits_per_step=1)
    env.reset(seed=0)
    return env


def _requests(env, n):
    u = env.unwrapped
    return [u.requests[int(i)] for i in u._stream[:n]]


def _band_action(env, band, coef=0.0):
    u = env.unwrapped
    mask = np.zeros(u.num_candidates, bool)
    mask[band] = True
    return encode_action(mask, np.full(u.num_candidates, coef), u.cfg.action_type, u.cfg.coef_levels)


def test_optimized_target_reaches_the_target_token(memit_env):
    u = memit_env.unwrapped
    m = u.method
    reqs = _requests(memit_env, 6)
    sites = build_sites(u.encoder, reqs, m.templates(), "cpu")
    before = optimize_target(u.model, m.ctx.blocks, 0, sites, {**m.params, "v_num_grad_steps": 1})
    target = optimize_target(u.model, m.ctx.blocks, 0, sites, m.params)
    assert not target.fault
    converged = [i for i, nll in enumerate(target.nll) if nll < m.params["early_stop_nll"]]
    # how many reach the early stop within the step budget depends on the tiny model's build (its
    # training is seeded, not bit-reproducible across machines: 2-4 of these 6 on block 0); every
    # request ends far below its one-step value (NLL 5-14 -> below 1)
    assert converged, target.nll
    assert all(t < min(1.0, b / 5) for t, b in zip(target.nll, before.nll, strict=True)), (
        target.nll,
        before.nll,
    )
    # a request leaves the optimization only when it has converged; one may converge on the last step
    stopped_early = [i for i, s in enumerate(target.steps) if s < m.params["v_num_grad_steps"] - 1]
    assert stopped_early and set(stopped_early) <= set(converged), (target.steps, target.nll)
    # with delta at the site, the model's top-1 answer on each converged plain prompt is the target
    block = m.ctx.blocks[0]
    plains = sites.plain[converged]

    def hook(_m, _a, out):
        h = out.clone()
        h[plains, sites.lookup[plains]] += target.delta[converged]
        return h

    handle = block.register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = u.model(input_ids=sites.input_ids, attention_mask=sites.attention_mask).logits
    finally:
        handle.remove()
    for plain in plains.tolist():
        rows = sites.answer_mask[plain].nonzero()[:, 0]
        assert torch.equal(logits[plain, rows].argmax(-1), sites.labels[plain, rows])


def test_batched_target_equals_per_request(memit_env):
    u = memit_env.unwrapped
    m = u.method
    reqs = _requests(memit_env, 3)
    params = {**m.params, "v_num_grad_steps": 8, "early_stop_nll": 0.0}
    templates = m.ctx.templates(2, 5)  # with context prefixes: several sequences per request
    batched = optimize_target(
        u.model, m.ctx.blocks, 1, build_sites(u.encoder, reqs, templates, "cpu"), params
    )
    for i, r in enumerate(reqs):
        one = optimize_target(u.model, m.ctx.blocks, 1, build_sites(u.encoder, [r], templates, "cpu"), params)
        torch.testing.assert_close(batched.delta[i], one.delta[0], rtol=1e-4, atol=1e-4)
        assert batched.nll[i] == pytest.approx(one.nll[0], rel=1e-4, abs=1e-4)


def test_early_stopping_is_per_request(memit_env):
    u = memit_env.unwrapped
    m = u.method
    reqs = _requests(memit_env, 3)
    sites = build_sites(u.encoder, reqs, m.templates(), "cpu")
    target = optimize_target(u.model, m.ctx.blocks, 0, sites, m.params)
    alone = [
        optimize_target(u.model, m.ctx.blocks, 0, build_sites(u.encoder, [r], m.templates(), "cpu"), m.params)
        for r in reqs
    ]
    assert target.steps == [a.steps[0] for a in alone]


def test_write_effect_is_the_residual_each_layer_removed():
    env = gym.make("LifelongEdit-Tiny-v0", editor="memit", num_edits=2, edits_per_step=1)
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    column = [name for name, *_ in LAYER_STATS].index("write_effect")
    assert not obs["layer_stats"][:, column].any()  # nothing written yet
    band = list(u.method.band())
    obs, _, _, _, info = env.step(_band_action(env, band))
    assert not info["fault"]
    moved = info["write_moved"]
    assert (moved[band] > 0.01).all() and 0.5 < moved.sum() <= 1.0 + 1e-6  # MEMIT's band removes most of it
    assert not np.delete(moved, band).any()  # candidates that did not write remove nothing
    np.testing.assert_allclose(obs["layer_stats"][:, column], moved, rtol=1e-5, atol=1e-6)


def test_spread_reports_what_each_write_removed():
    """A toy site whose hidden state is the sum of what the layers wrote: each takes its share."""
    z = torch.tensor([[4.0, 0.0]])
    written = {0: torch.zeros(1, 2), 1: torch.zeros(1, 2)}

    def read(j):
        return torch.ones(1, 1), sum(written.values())

    def write(j, keys, resid):
        written[j] = written[j] + resid

    layers = spread([0, 1], [0.5, 0.5], z, read, write)
    assert [layer["residual_norm"] for layer in layers] == [4.0, 2.0]
    assert [layer["moved"] for layer in layers] == [0.5, 0.25]  # half, then half of what was left


def test_spreading_over_one_candidate_is_romes_closed_form(memit_env):
    u = memit_env.unwrapped
    m = u.method
    env_state = [c.param.detach().clone() for c in u.candidates]
    req = _requests(memit_env, 1)
    sites = build_sites(u.encoder, req, m.templates(), "cpu")
    layer = 0
    j = m.band()[0] if m.ctx.block_index[m.band()[0]] == layer else 0
    target = optimize_target(u.model, m.ctx.blocks, layer, sites, m.params)
    keys, now = read_sites(u.model, sites, [u.candidates[j].module], m.ctx.blocks[layer])
    k, r = keys[0][0], (target.z - now)[0]
    c0 = u._state.covariance()[j].double()
    c0.diagonal().add_(1e-6 * float(c0.diagonal().mean()) + 1e-12)
    ck = torch.linalg.solve(c0, k.double())
    rome = torch.outer(r.double(), ck) / float(k.double() @ ck)  # ROME: (v* - W k) (C^-1 k)^T / (k^T C^-1 k)
    writer = CovarianceWriter(u._state.covariance, lam=0.0)
    ours = writer.solve(j, keys[0], r[None]).matrix().double()
    torch.testing.assert_close(ours, rome, rtol=1e-4, atol=1e-6)
    # written, the target block's output at the site is the target
    with torch.no_grad():
        u.candidates[j].add_(ours.float())
        _, after = read_sites(u.model, sites, [u.candidates[j].module], m.ctx.blocks[layer])
        torch.testing.assert_close(after[0], target.z[0], rtol=1e-4, atol=1e-3)
        for c, w in zip(u.candidates, env_state, strict=True):
            c.param.copy_(w)


def test_alphaedit_leaves_preserved_keys_unchanged():
    torch.manual_seed(0)
    d_in, d_out = 24, 8
    basis = torch.linalg.qr(torch.randn(d_in, d_in))[0]
    spectrum = torch.cat([torch.full((16,), 10.0), torch.full((8,), 1e-4)])
    c0 = (basis * spectrum) @ basis.T
    writer = AlphaEditWriter(lambda: [c0], l2=1.0, rule="energy", value=1e-3)
    preserved = basis[:, :16].T  # C0's principal directions
    keys, resid = torch.randn(2, d_in), torch.randn(2, d_out)
    dw = writer.solve(0, keys, resid).matrix()
    assert float((dw @ preserved.T).abs().max()) < 1e-5 * float(dw.abs().max())
    # the earlier edited keys: a hard constraint in "project" mode ...
    hard = AlphaEditWriter(lambda: [c0], l2=1.0, rule="energy", value=1e-3, kp_mode="project")
    hard.record(0, keys)
    later = hard.solve(0, torch.randn(1, d_in), torch.randn(1, d_out)).matrix()
    assert float((later @ keys.T).abs().max()) < 1e-5 * float(later.abs().max())
    # ... and the paper's least-squares term in "penalty" mode: they move less than with no memory
    fresh = AlphaEditWriter(lambda: [c0], l2=1.0, rule="energy", value=1e-3)
    new_keys, new_resid = torch.randn(1, d_in), torch.randn(1, d_out)
    writer.record(0, keys)
    remembered = writer.solve(0, new_keys, new_resid).matrix()
    forgetful = fresh.solve(0, new_keys, new_resid).matrix()
    assert float((remembered @ keys.T).norm()) < float((forgetful @ keys.T).norm())


def test_nullspace_projector_energy_rule():
    c0 = torch.diag(torch.tensor([100.0, 10.0, 1.0, 0.5, 0.01]))
    p = nullspace_projector(c0, "energy", 0.02)  # 0.01 + 0.5 + 1.0 = 1.51 <= 2.23: three directions
    assert torch.allclose(p, torch.diag(torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])))
    assert torch.allclose(
        nullspace_projector(c0, "absolute", 0.02), torch.diag(torch.tensor([0.0, 0, 0, 0, 1]))
    )
    with pytest.raises(ValueError, match="unknown null-space rule"):
        nullspace_projector(c0, "spectral", 0.1)


def test_restraints_by_hand():
    w0 = torch.ones(2, 3)
    dw = torch.tensor([[0.1, -0.5, 0.2], [0.05, 0.3, -0.01]])
    kept = rect_sparsify(dw, w0, keep=2 / 6)
    assert torch.equal(kept, torch.tensor([[0.0, -0.5, 0.0], [0.0, 0.3, 0.0]]))
    delta = torch.diag(torch.tensor([5.0, 0.5]))
    out = prune_singular_values(delta, bound=1.0)
    torch.testing.assert_close(
        torch.linalg.svdvals(out), torch.tensor([1.0 + math.log(5.0), 0.5]), rtol=1e-5, atol=1e-6
    )


def test_shares_map():
    assert shares([0.0, 0.0, 0.0], 10.0) == pytest.approx([1 / 3, 1 / 2, 1.0])  # MEMIT at coefficient 0
    assert shares([1.0, -1.0], 10.0) == pytest.approx([1.0, 0.1])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_edits_the_tiny_model(name):
    env = gym.make("LifelongEdit-Tiny-v0", editor=name, num_edits=2)
    u = env.unwrapped
    env.reset(seed=0)
    before = weights_hash(env)
    _, reward, _, _, info = env.step(_band_action(env, u.method.band()))
    assert not info["fault"], info["fault"]
    assert np.isfinite(reward) and weights_hash(env) != before
    assert info["edited_candidates"] == u.method.band()


def test_methods_params_are_data_and_checked():
    p = method_params("memit", "smollm2-135m", 30, 1536)
    assert p["band"] == [3, 4, 5, 6, 7] and p["lam"] == pytest.approx(15000 * 1536 / 16384)
    assert method_params("rome", "some/model", 28, 4096)["band"] == [8]  # one layer, MEMIT's recipe top
    with pytest.raises(ValueError, match="unknown key"):
        method_params("memit", "tiny", 6, 128, {"v_lrr": 0.1})
    with pytest.raises(ValueError, match="target must be one of"):
        method_params("memit", "tiny", 6, 128, {"target": "magic"})
    with pytest.raises(ValueError, match="no target stage"):
        method_params("ft-l", "tiny", 6, 128, {"target": "optimized"})


def test_a_diverging_target_is_rolled_back_with_the_reason():
    env = gym.make(
        "LifelongEdit-Tiny-v0",
        editor="memit",
        num_edits=4,
        editor_params={"v_lr": 1e30, "clamp_norm_factor": float("inf")},
    )
    u = env.unwrapped
    env.reset(seed=0)
    before = weights_hash(env)
    state = u.method.snapshot()
    _, reward, terminated, _, info = env.step(_band_action(env, u.method.band()))
    assert "diverged" in info["fault"] or "not finite" in info["fault"]
    assert "rolled back" in info["fault"] and terminated and reward == -u.cfg.max_loss
    assert weights_hash(env) == before and u.method.snapshot().keys() == state.keys()


def test_bad_records_are_refused_naming_them(memit_env):
    u = memit_env.unwrapped
    with pytest.raises(InvalidRecordError, match="r7"):
        EditRequest(prompt="The capital of France is", subject="Spain", target_new="Rome", uid="r7")
    from edit_gym.tokens import EmptyAnswerError, PairEncoder

    class Dropping(PairEncoder):  # a tokenizer without the character "∅"
        def ids(self, text, *, answer):
            if answer and text.strip() == "∅":
                raise EmptyAnswerError("answer '∅' tokenizes to no token")
            return super().ids(text, answer=answer)

    empty = EditRequest(prompt="The capital of France is", subject="France", target_new="∅", uid="r8")
    with pytest.raises(InvalidRecordError, match="record 'r8': field 'target_new'"):
        build_sites(Dropping(u.encoder.tokenizer), [empty], ["{}"], "cpu")


def test_the_band_agent_selects_the_method_band(memit_env):
    from agents.baselines import BandAgent

    u = memit_env.unwrapped
    obs, _ = memit_env.reset(seed=1)
    action, _ = BandAgent(memit_env).predict(obs)
    from edit_gym.actions import decode_action

    mask, _ = decode_action(action, u.cfg.action_type, u.num_candidates, u.cfg.coef_levels, u.cfg.budget)
    assert np.flatnonzero(mask).tolist() == u.method.band()


def test_advantage_reward_reuses_the_target_and_leaves_no_trace():
    """The reference outcome is written with the same target and rolled back: the weights after a
    step equal those of the same step under the plain reward."""
    hashes, infos = [], []
    for reward in ("edit", "advantage"):
        env = gym.make("LifelongEdit-Tiny-v0", editor="memit", num_edits=2, reward=reward)
        env.reset(seed=3)
        _, _, _, _, info = env.step(_band_action(env, [0]))
        hashes.append(weights_hash(env))
        infos.append(info)
    assert hashes[0] == hashes[1]
    assert infos[0]["edit_loss_after"] == pytest.approx(infos[1]["edit_loss_after"])
    assert "reward_all_candidates" in infos[1] and np.isfinite(infos[1]["reward_advantage"])


def test_fixed_stream_order_and_its_validation():
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=3)
    u = env.unwrapped
    env.reset(seed=0, options={"stream": [5, 1, 7]})
    assert [r.uid for r in u.stream] == [u.requests[i].uid for i in (5, 1, 7)]
    for bad in ([1, 1, 2], [1, 2], [0, 1, 10_000], [0.5, 1, 2]):
        with pytest.raises(ValueError, match="options\\['stream'\\]"):
            env.reset(seed=0, options={"stream": bad})


def test_stream_for_is_the_stream_reset_draws_and_touches_nothing():
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=4)
    u = env.unwrapped
    env.reset(seed=5)
    first = [r.uid for r in u.stream]
    weights, rng_state = weights_hash(env), u.np_random.bit_generator.state
    assert u.stream_for(9) != u.stream_for(5)  # another seed, another stream
    assert [u.requests[i].uid for i in u.stream_for(5)] == first
    assert weights_hash(env) == weights and u.np_random.bit_generator.state == rng_state
    assert [r.uid for r in u.stream] == first  # the episode is untouched
    env.reset(seed=9)
    assert [r.uid for r in u.stream] == [u.requests[i].uid for i in u.stream_for(9)]


def test_generation_scores_in_evaluate():
    env = gym.make("LifelongEdit-Tiny-v0", editor="rome", num_edits=2)
    u = env.unwrapped
    env.reset(seed=0)
    before = u.evaluate("stream", wild=True)
    assert before["wild_specificity_em"] == 1.0  # the pristine model agrees with itself
    env.step(_band_action(env, u.method.band()))
    after = u.evaluate("edited", wild=True)
    assert {"wild_efficacy_em", "wild_efficacy_f1", "wild_generalization_f1", "wild_specificity_f1"} <= set(
        after
    )
    assert all(0.0 <= after[k] <= 1.0 for k in after if k.startswith("wild_"))
    assert u.evaluate("edited", wild=True, progress=True) == after  # the bars change no score


def test_legacy_editor_names():
    from edit_gym.editing.rules import legacy_editor

    assert legacy_editor("memit+alphaedit") == "covariance+nullspace"
    assert legacy_editor("ridge+rect+prune") == "ridge+topk+spectral"
    assert legacy_editor("rledit:runs/x+alphaedit") == "rledit:runs/x+nullspace"


def test_one_step_ids_and_the_default_method():
    import edit_gym

    ids = edit_gym.env_ids()
    assert ids["LifelongEdit-v0"]["editor"] in METHODS
    assert ids["LifelongEdit-OneStep-v0"]["editor"] == "ridge"
    assert ids["LifelongEdit-Tiny-v0"]["editor"] == "ridge"


def test_advantage_against_the_band_reference():
    """``reference="band"``: the reference is the method's band (cut at the target block); the weights
    after the step are those of the plain reward, and a bad reference name is refused."""
    hashes, rewards = [], []
    for reference in ("all", "band"):
        env = gym.make(
            "LifelongEdit-Tiny-v0",
            editor="memit",
            editor_params={"band": [1]},  # band [1] vs all below the target block: [0, 1]
            num_edits=2,
            reward="advantage",
            reference=reference,
        )
        env.reset(seed=3)
        _, _, _, _, info = env.step(_band_action(env, [0, 1]))
        hashes.append(weights_hash(env))
        rewards.append(info["reward_reference"])
    assert hashes[0] == hashes[1] and all(np.isfinite(rewards))
    assert rewards[0] != rewards[1]  # two different reference writes
    with pytest.raises(ValueError, match="unknown reference 'best'"):
        gym.make("LifelongEdit-Tiny-v0", reference="best")
    # a one-step rule has no band: refused rather than silently measured against all candidates
    with pytest.raises(ValueError, match="reference='band' needs a named method.*'ridge'"):
        gym.make("LifelongEdit-Tiny-v0", editor="ridge", reward="advantage", reference="band")


def test_target_block_band_compares_a_partial_selection_with_the_whole_band():
    """With the target at the selection's block, the band's bottom layer alone is its own reference
    (advantage 0 whatever it does); ``target_block="band"`` optimizes the target at the band's top,
    so the same selection is compared with the whole band writing that target."""
    outcomes = {}
    for target_block in ("selection", "band"):
        for selection in ([0], [0, 1]):
            env = gym.make(
                "LifelongEdit-Tiny-v0",
                editor="memit",
                num_edits=2,
                reward="advantage",
                reference="band",  # the tiny model's MEMIT band: blocks 0 and 1
                target_block=target_block,
            )
            assert list(env.unwrapped.method.band()) == [0, 1]
            env.reset(seed=3)
            _, _, _, _, info = env.step(_band_action(env, selection))
            outcomes[target_block, len(selection)] = (info["target_layer"], info["reward_advantage"])
    assert outcomes["selection", 1] == (0, 0.0)  # the loophole: compared with itself
    assert outcomes["selection", 2][0] == 1 and outcomes["band", 2] == outcomes["selection", 2]
    layer, advantage = outcomes["band", 1]
    assert layer == 1 and advantage != 0.0 and np.isfinite(advantage)
    # above the band's top nothing can take its target: masked for MaskablePPO, left out of a write
    env = gym.make(
        "LifelongEdit-Tiny-v0",
        editor="memit",
        num_edits=2,
        target_block="band",
        action_type="slots",
        budget=2,
    )
    n = env.unwrapped.num_candidates
    masks = env.unwrapped.action_masks().reshape(2, n + 1)
    assert masks[:, :2].all() and not masks[:, 2:n].any() and masks[1, n] and not masks[0, n]
    env = gym.make(
        "LifelongEdit-Tiny-v0", editor="memit", num_edits=2, target_block="band", action_type="mask"
    )
    assert env.unwrapped.action_masks().reshape(n, 2)[:, 1].tolist() == [True, True] + [False] * (n - 2)
    env.reset(seed=3)
    _, _, _, _, info = env.step(_band_action(env, [0, n - 1]))
    assert info["not_writable"] == 1 and info["target_layer"] == 1 and info["edited_candidates"] == [0]
    from agents import RandomKAgent

    draws = RandomKAgent(env, k=2, seed=0)  # random-K draws among the writable candidates only
    assert all(np.flatnonzero(draws.choose({})).tolist() == [0, 1] for _ in range(5))
    with pytest.raises(ValueError, match="k=3 is more than the 2 candidates the env can write"):
        RandomKAgent(env, k=3)
    with pytest.raises(ValueError, match="unknown target_block 'top'"):
        gym.make("LifelongEdit-Tiny-v0", editor="memit", target_block="top")
    with pytest.raises(ValueError, match="target_block='band' needs a named method.*'ridge'"):
        gym.make("LifelongEdit-Tiny-v0", editor="ridge", target_block="band")
