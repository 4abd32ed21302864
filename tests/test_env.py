"""The environment contract, parametrized over every registered id whose model is tiny."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils.env_checker import check_env

from edit_gym.env import LAYER_STATS
from tests.conftest import TINY_IDS, all_candidates_action, weights_hash

# Warnings the checkers may raise on these envs, and why they are expected.
ALLOWED_WARNINGS = (
    # SB3 advises flattening observations that are neither images nor 1-D: our (L, F) statistics are
    # deliberately 2-D (a per-candidate encoder reads them).
    "unconventional shape",
    # SB3 cannot train on Dict actions (field-notes); the dict id exists for custom agents.
    "Dict",
)


def _checked_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if not any(a in str(w.message) for a in ALLOWED_WARNINGS)]


def _rollout(env, seed: int, steps: int):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace = [obs]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((obs, reward, info["edit_loss_after"]))
        if terminated:
            break
    return trace


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _assert_checker_clean(checker, env_id: str, **kwargs) -> None:
    env = gym.make(env_id, num_edits=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checker(env.unwrapped, **kwargs)
    assert _checked_warnings(caught) == []
    env.close()


@pytest.mark.parametrize("env_id", TINY_IDS)
def test_gymnasium_check_env(env_id):
    _assert_checker_clean(check_env, env_id, skip_render_check=False)


@pytest.mark.parametrize("env_id", [i for i in TINY_IDS if "Box" in i or "MultiDiscrete" in i])
def test_sb3_check_env(env_id):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    _assert_checker_clean(sb3_check_env, env_id, warn=True)


@pytest.mark.parametrize("env_id", TINY_IDS)
def test_seeded_rollouts_are_identical(env_id):
    env = gym.make(env_id, num_edits=6)
    first, second = _rollout(env, 7, 6), _rollout(env, 7, 6)
    assert _same(first, second)
    other = _rollout(env, 8, 1)
    assert not _same(first[0]["request"], other[0]["request"])


@pytest.mark.parametrize("env_id", TINY_IDS)
def test_spec_json_round_trip(env_id):
    env = gym.make(env_id, num_edits=4)
    spec = EnvSpec.from_json(env.spec.to_json())
    assert spec.kwargs == env.spec.kwargs and json.loads(env.spec.to_json())["id"] == env_id
    rebuilt = spec.make()
    assert rebuilt.unwrapped.cfg == env.unwrapped.cfg


def test_pickle_keeps_the_edited_episode():
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=6).unwrapped
    env.reset(seed=3)
    for _ in range(2):
        env.step(all_candidates_action(env))
    clone = pickle.loads(pickle.dumps(env))
    assert weights_hash(clone) == weights_hash(env)
    action = all_candidates_action(env, 0.5)
    a, b = env.step(action), clone.step(action)
    assert _same(a[0], b[0]) and a[1] == b[1]


def test_sync_vector_env():
    vec = gym.make_vec("LifelongEdit-Tiny-Box-v0", num_envs=2, vectorization_mode="sync", num_edits=2)
    obs, _ = vec.reset(seed=[1, 2])
    assert obs["layer_stats"].shape[0] == 2
    dones = 0
    for _ in range(3):  # the third step is the NEXT_STEP autoreset of both sub-envs
        obs, reward, terminated, truncated, info = vec.step(vec.action_space.sample())
        assert reward.shape == (2,) and np.all(np.isfinite(reward))
        dones += int(terminated.sum())
    assert dones == 2
    vec.close()


def _make_in_child(queue) -> None:
    env = gym.make("edit_gym:LifelongEdit-Tiny-v0", num_edits=2)
    obs, _ = env.reset(seed=0)
    queue.put(obs["layer_stats"].shape)


def test_spawn_subprocess_by_module_id():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_make_in_child, args=(queue,))
    proc.start()
    shape = queue.get(timeout=240)
    proc.join(60)
    assert proc.exitcode == 0 and shape[1] == len(LAYER_STATS)


def test_reset_restores_weights_after_50_edits():
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=50).unwrapped
    env.reset(seed=0)
    pristine = weights_hash(env)
    for _ in range(50):
        *_, terminated, _, _ = env.step(all_candidates_action(env, 1.0))
    assert terminated and weights_hash(env) != pristine
    env.reset(seed=1)
    assert weights_hash(env) == pristine


def test_reward_terms_and_final_info():
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=3, w_loc=2.0, w_sparse=0.5).unwrapped
    env.reset(seed=0)
    n = env.num_candidates
    mask = np.zeros(n, dtype=np.int8)
    mask[:2] = 1
    _, reward, terminated, _, info = env.step({"mask": mask, "coef": np.zeros(n, np.float32)})
    assert not terminated and "is_success" not in info
    assert info["reward_sparsity"] == pytest.approx(-0.5 * 2 / n)
    assert info["reward_locality"] == pytest.approx(-2.0 * info["kl"])
    assert reward == pytest.approx(
        -info["edit_loss_after"] + info["reward_locality"] + info["reward_sparsity"]
    )
    assert info["edit_loss_after"] < info["edit_loss_before"]  # the ridge edit moves the target
    for _ in range(2):
        _, _, terminated, _, info = env.step({"mask": mask, "coef": np.zeros(n, np.float32)})
    assert terminated and isinstance(info["is_success"], bool)
    assert {"final_efficacy", "final_generalization", "final_specificity"} <= set(info)
    with pytest.raises(gym.error.ResetNeeded):
        env.step({"mask": mask, "coef": np.zeros(n, np.float32)})


@pytest.mark.parametrize(
    ("action_type", "action", "message"),
    [
        ("mask", np.zeros(6, np.int8), "selects 0 candidates; the layer budget allows 1 to 2"),
        ("mask", np.ones(6, np.int8), "selects 6 candidates; the layer budget allows 1 to 2"),
        ("slots", np.array([6, 6]), "selects 0 candidates"),
        ("slots", np.array([0, 7]), "integers in \\[0, 6\\]"),
        ("slots", np.array([0, 1, 2]), "expected shape \\(2,\\)"),
    ],
)
def test_layer_budget_refuses_out_of_budget_actions(action_type, action, message):
    from edit_gym.actions import InvalidActionError

    env = gym.make("LifelongEdit-Tiny-v0", num_edits=2, action_type=action_type, budget=2).unwrapped
    obs, _ = env.reset(seed=0)
    before = weights_hash(env)
    with pytest.raises(InvalidActionError, match=message):
        env.step(action)
    assert weights_hash(env) == before and _same(env._observation(), obs)


def test_slots_action_and_its_masks():
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=2, action_type="slots", budget=2).unwrapped
    env.reset(seed=0)
    masks = env.action_masks().reshape(2, 7)
    assert masks.sum() == 13 and not masks[0, 6] and masks[1, 6]  # slot 0 may not pick "none"
    _, _, _, _, info = env.step(np.array([4, 4]))  # a repeated pick is one candidate
    assert info["layers_touched"] == 1
    _, _, _, _, info = env.step(np.array([1, 6]))
    assert info["layers_touched"] == 1
    with pytest.raises(ValueError, match="needs a layer budget"):
        gym.make("LifelongEdit-Tiny-v0", action_type="slots")
    with pytest.raises(ValueError, match="budget 7 exceeds the 6 candidates"):
        gym.make("LifelongEdit-Tiny-v0", action_type="slots", budget=7)


def test_empty_mask_changes_nothing_but_the_step():
    env = gym.make("LifelongEdit-Tiny-Mask-v0", num_edits=2).unwrapped
    env.reset(seed=0)
    before = weights_hash(env)
    _, _, _, _, info = env.step(np.zeros(env.num_candidates, dtype=np.int8))
    assert (
        weights_hash(env) == before
        and info["layers_touched"] == 0
        and info["kl"] == pytest.approx(0, abs=1e-6)
    )


@pytest.mark.parametrize(
    ("env_id", "action", "message"),
    [
        ("LifelongEdit-Tiny-v0", {"mask": np.ones(3), "coef": np.zeros(6)}, "expected shape"),
        ("LifelongEdit-Tiny-v0", {"mask": np.ones(6), "coef": np.full(6, np.nan)}, "NaN"),
        ("LifelongEdit-Tiny-v0", {"mask": np.full(6, 2), "coef": np.zeros(6)}, "0 or 1"),
        ("LifelongEdit-Tiny-v0", {"mask": np.ones(6)}, "keys 'mask' and 'coef'"),
        ("LifelongEdit-Tiny-Box-v0", np.full(12, 3.0), "must lie in \\[-1, 1\\]"),
        ("LifelongEdit-Tiny-Box-v0", np.array(["a"] * 12), "expected numbers"),
        ("LifelongEdit-Tiny-MultiDiscrete-v0", np.full(6, 9), "integers in \\[0, 5\\]"),
    ],
)
def test_bad_actions_change_nothing(env_id, action, message):
    from edit_gym.actions import InvalidActionError

    env = gym.make(env_id, num_edits=2).unwrapped
    obs, _ = env.reset(seed=0)
    before, rng = weights_hash(env), env.np_random.bit_generator.state
    with pytest.raises(InvalidActionError, match=message):
        env.step(action)
    assert weights_hash(env) == before and env.np_random.bit_generator.state == rng
    assert _same(env._observation(), obs)  # the episode did not advance


def test_renders():
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=3, render_mode="rgb_array").unwrapped
    env.reset(seed=0)
    env.step(all_candidates_action(env))
    img = env.render()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] == 6 * env.num_candidates
    text = gym.make("LifelongEdit-Tiny-v0", num_edits=3, render_mode="ansi").unwrapped
    text.reset(seed=0)
    text.step(all_candidates_action(text))
    out = text.render()
    assert "model.layers.0.mlp.down_proj" in out and "reward" in out


def test_unknown_model_and_module_are_named():
    with pytest.raises(ValueError, match="unknown model 'no-such-model-xyz'"):
        gym.make("LifelongEdit-Tiny-v0", model="no-such-model-xyz")
    with pytest.raises(ValueError, match="unknown candidate module 'model.layers.0.mlp.nope'"):
        gym.make("LifelongEdit-Tiny-v0", candidates=["model.layers.0.mlp.nope"])


def test_custom_candidates_and_editor():
    names = ["model.layers.1.mlp.up_proj", "model.layers.2.self_attn.o_proj"]
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=2, candidates=names, editor="gradient").unwrapped
    env.reset(seed=0)
    assert env.candidate_names == names and env.observation_space["layer_stats"].shape == (2, 8)
    _, _, _, _, info = env.step(all_candidates_action(env))
    assert np.isfinite(info["edit_loss_after"])
    with pytest.raises(ValueError, match="unknown editor 'magic'"):
        gym.make("LifelongEdit-Tiny-v0", editor="magic")


def test_sb3_ppo_two_rollouts():
    from stable_baselines3 import PPO

    env = gym.make("LifelongEdit-Tiny-Box-v0", num_edits=4)
    model = PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0, verbose=0, device="cpu")
    model.learn(total_timesteps=16)
    assert model.num_timesteps == 16


def test_blown_up_update_is_rolled_back_and_ends_the_episode():
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=4, max_loss=1e-6).unwrapped
    env.reset(seed=0)
    before = weights_hash(env)
    _, reward, terminated, _, info = env.step(all_candidates_action(env, 1.0))
    assert terminated and "rolled back" in info["fault"] and info["layers_touched"] == 0
    assert weights_hash(env) == before and reward == pytest.approx(-1e-6)
    assert info["is_success"] is False


def test_pickle_rebuilds_the_editor_around_the_new_model():
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=4, editor="ridge+nullspace+topk").unwrapped
    env.reset(seed=0)
    env.step(all_candidates_action(env))
    clone = pickle.loads(pickle.dumps(env))
    assert clone._rule.wrappers[1].context.candidates[0].module is clone.candidates[0].module
    saved = env._rule.wrappers[0]._edited
    assert saved and all(torch.equal(saved[j], clone._rule.wrappers[0]._edited[j]) for j in saved)
    a, b = env.step(all_candidates_action(env)), clone.step(all_candidates_action(clone))
    assert a[1] == b[1] and weights_hash(env) == weights_hash(clone)


def test_export_reloads_with_identical_outputs(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    env = gym.make("LifelongEdit-Tiny-v0", num_edits=4).unwrapped
    with pytest.raises(gym.error.ResetNeeded):
        env.export(tmp_path / "none")
    env.reset(seed=0)
    for _ in range(3):
        env.step(all_candidates_action(env, 0.5))
    out = env.export(tmp_path / "edited")
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = env.encoder.encode([(env.stream[0].prompt, env.stream[0].target_new)], device="cpu")
    with torch.no_grad():
        a = env.model(input_ids=ids.input_ids, attention_mask=ids.attention_mask).logits
        b = reloaded(input_ids=ids.input_ids, attention_mask=ids.attention_mask).logits
    assert torch.equal(a, b)
    manifest = json.loads((out / "edit_gym_export.json").read_text())
    assert [e["prompt"] for e in manifest["edits"]] == [r.prompt for r in env.stream[:3]]
    env.reset(seed=0)
    pristine = env.export(tmp_path / "pristine-after-reset")
    assert not torch.equal(
        AutoModelForCausalLM.from_pretrained(pristine).model.layers[0].mlp.down_proj.weight,
        reloaded.model.layers[0].mlp.down_proj.weight,
    )


def test_reset_restores_bit_exactly_after_1000_edits(shared_data):
    path = str(shared_data / "knowedit_counterfact_train.json")
    env = gym.make(
        "LifelongEdit-Tiny-v0", dataset=path, num_edits=1000, edits_per_step=10, final_eval=False
    ).unwrapped
    env.reset(seed=0)
    pristine = weights_hash(env)
    terminated = False
    while not terminated:
        *_, terminated, _, info = env.step(all_candidates_action(env, 0.0))
    assert info["edit_index"] == 1000 and not info["fault"] and weights_hash(env) != pristine
    env.reset(seed=0)
    assert weights_hash(env) == pristine


def test_envs_share_one_backbone_and_keep_their_own_weights():
    def rollout(envs, seeds, steps=4):
        """Interleave the envs step by step; return each env's rewards and final weights hash."""
        for env, seed in zip(envs, seeds, strict=True):
            env.reset(seed=seed)
        rewards = [[] for _ in envs]
        for _ in range(steps):
            for i, env in enumerate(envs):
                rewards[i].append(env.step(all_candidates_action(env, 0.5))[1])
        return rewards, [weights_hash(env) for env in envs]

    shared = [gym.make("LifelongEdit-Tiny-v0", num_edits=4, final_eval=False).unwrapped for _ in range(2)]
    assert shared[0]._state.base is shared[1]._state.base
    assert shared[0]._state.own[0].data_ptr() != shared[1]._state.own[0].data_ptr()
    private = [
        gym.make("LifelongEdit-Tiny-v0", num_edits=4, final_eval=False, share_model=False).unwrapped
        for _ in range(2)
    ]
    assert private[0]._state.base is not private[1]._state.base
    together = rollout(shared, [0, 1])
    alone = [rollout([env], [seed]) for env, seed in zip(private, [0, 1], strict=True)]
    assert together[0] == [r for rewards, _ in alone for r in rewards]
    assert together[1] == [h for _, hashes in alone for h in hashes]
    assert together[1][0] != together[1][1]
    shared[0].reset(seed=0)  # back to pristine, while its neighbour keeps its edits
    private[0].reset(seed=0)
    assert weights_hash(shared[0]) == weights_hash(private[0])
    assert weights_hash(shared[1]) == together[1][1]


def test_an_env_never_computes_with_a_neighbours_edits_of_other_matrices():
    others = ["model.layers.1.mlp.up_proj", "model.layers.2.self_attn.o_proj"]
    neighbour = gym.make("LifelongEdit-Tiny-v0", candidates=others, num_edits=3, final_eval=False).unwrapped
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=3, final_eval=False).unwrapped
    private = gym.make("LifelongEdit-Tiny-v0", num_edits=3, final_eval=False, share_model=False).unwrapped
    neighbour.reset(seed=0)
    for _ in range(2):
        neighbour.step(all_candidates_action(neighbour, 1.0))  # edits up_proj / o_proj, which env does not
    rewards = []
    for e in (env, private):
        e.reset(seed=4)
        rewards.append(e.step(all_candidates_action(e, 0.0))[1])
    assert rewards[0] == rewards[1]


@pytest.mark.parametrize(
    "device_map",
    [
        pytest.param(
            "auto",
            marks=pytest.mark.skipif(
                torch.cuda.is_available(), reason="'auto' would place the model on the GPU"
            ),
        ),
        {"": "cpu"},
    ],
)
def test_device_map_loads_through_accelerate_and_edits_the_same(device_map, monkeypatch):
    """accelerate places the model (here all on the CPU); each edit runs on its candidate's device.

    A real multi-device placement needs GPUs (docs/gpu.md); this checks the loading path and that
    the results equal the plain load's, step for step.
    """
    from transformers import AutoModelForCausalLM

    plain = gym.make("LifelongEdit-Tiny-v0", num_edits=3, final_eval=False)
    seen = []
    load = AutoModelForCausalLM.from_pretrained

    def recording_load(*args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return load(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", recording_load)
    mapped = gym.make("LifelongEdit-Tiny-v0", num_edits=3, final_eval=False, device_map=device_map)
    assert seen == [device_map], "the model is loaded with accelerate's device_map"
    assert mapped.unwrapped.model is not plain.unwrapped.model  # not the shared plain load
    assert {c.param.device.type for c in mapped.unwrapped.candidates} == {"cpu"}
    for env in (plain, mapped):
        env.reset(seed=5)
        env.action_space.seed(5)
    for _ in range(3):
        action = plain.action_space.sample()
        a = plain.step(action)
        b = mapped.step(action)
        assert a[1] == b[1] and a[2] == b[2]
    for c, d in zip(plain.unwrapped.candidates, mapped.unwrapped.candidates, strict=True):
        assert torch.equal(c.param, d.param)


def test_bad_device_map_is_refused():
    with pytest.raises(ValueError, match="device_map must be one of auto"):
        gym.make("LifelongEdit-Tiny-v0", device_map="everywhere")


def test_a_target_that_tokenizes_to_nothing_is_refused_at_construction(tmp_path, monkeypatch):
    """Tokenizers that drop a character (unlike the byte-level ones here) would leave no answer token."""
    from edit_gym.data import InvalidRecordError
    from edit_gym.tokens import PairEncoder

    class DroppingTokenizer:  # drops "∅", as a tokenizer without that character might
        pad_token_id, eos_token_id = 0, 0

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) % 50 + 1 for c in text if c not in " ∅"]}

    with pytest.raises(ValueError, match="tokenizes to no token"):
        PairEncoder(DroppingTokenizer()).ids("∅", answer=True)

    original = PairEncoder.ids

    def ids(self, text, *, answer):
        if answer and text.strip() == "∅":
            return original(PairEncoder(DroppingTokenizer()), text, answer=True)
        return original(self, text, answer=answer)

    monkeypatch.setattr(PairEncoder, "ids", ids)
    records = [
        {"subject": "Paris", "prompt": "Paris is the capital of", "target_new": "∅", "ground_truth": "France"}
    ]
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    with pytest.raises(InvalidRecordError, match="field 'target_new': answer '∅' tokenizes to no token"):
        gym.make("LifelongEdit-Tiny-v0", dataset=str(path), num_edits=1, known_only=False)


@pytest.mark.parametrize("editor", ["ridge", "memit"])
def test_a_stream_that_edits_per_step_does_not_divide_ends_with_a_shorter_step(editor):
    """839 CounterFact records is a prime: 5 edits at 2 per step are steps of 2, 2 and 1."""
    env = gym.make("LifelongEdit-Tiny-v0", num_edits=5, edits_per_step=2, editor=editor, final_eval=False)
    inner = env.unwrapped
    env.reset(seed=0)
    assert inner.num_steps == 3
    sizes, indices, done = [], [], False
    while not done:
        sizes.append(len(inner._batch_requests(inner._t)))
        _, _, done, _, info = env.step(all_candidates_action(env))
        indices.append(info["edit_index"])
    assert sizes == [2, 2, 1] and indices == [2, 4, 5] and not info["fault"]
    assert len(inner._applied()) == 5 and len(inner.edit_efficacies()) == 5
    env.close()
