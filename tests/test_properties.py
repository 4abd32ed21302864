"""Property-based tests (hypothesis): random actions at ``step`` and random records at the loaders.

Whatever is thrown at them, the env and the loaders either accept it or refuse it with their own
error type (InvalidActionError, InvalidRecordError), and a refused action changes nothing: the
weights, the episode's step and its random generator are exactly as before.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edit_gym.actions import InvalidActionError  # noqa: E402
from edit_gym.data import InvalidRecordError  # noqa: E402
from edit_gym.data.loaders import requests_from_records  # noqa: E402
from tests.conftest import weights_hash  # noqa: E402

N = 6  # candidates of the tiny env
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
ARRAYS = st.one_of(
    st.lists(FLOATS, min_size=0, max_size=14).map(lambda v: np.array(v, dtype=np.float32)),
    st.lists(st.integers(-3, 9), min_size=0, max_size=14).map(np.array),
    st.lists(st.booleans(), min_size=N, max_size=N).map(np.array),
    st.lists(st.floats(-1, 1, width=32), min_size=N, max_size=N).map(lambda v: np.array(v, dtype=np.float32)),
    st.just(np.array(["a"] * N)),
    st.none(),
)
ACTIONS = {
    "LifelongEdit-Tiny-v0": st.one_of(
        st.fixed_dictionaries({"mask": ARRAYS, "coef": ARRAYS}),
        st.dictionaries(st.sampled_from(["mask", "coef", "other"]), ARRAYS, max_size=3),
        ARRAYS,
    ),
    "LifelongEdit-Tiny-Box-v0": st.one_of(
        ARRAYS, st.lists(st.floats(-1, 1, width=32), min_size=2 * N, max_size=2 * N).map(np.array)
    ),
    "LifelongEdit-Tiny-MultiDiscrete-v0": st.one_of(
        ARRAYS, st.lists(st.integers(-1, 6), min_size=N, max_size=N).map(np.array)
    ),
}
_ENVS: dict[str, gym.Env] = {}


def _env(env_id: str):
    if env_id not in _ENVS:
        _ENVS[env_id] = gym.make(env_id, num_edits=50, final_eval=False).unwrapped
    return _ENVS[env_id]


@pytest.mark.parametrize("env_id", sorted(ACTIONS))
def test_random_actions_are_taken_or_refused_cleanly(env_id):
    env = _env(env_id)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(action=ACTIONS[env_id])
    def check(action):
        env.reset(seed=0)
        before, rng, t = weights_hash(env), env.np_random.bit_generator.state, env._t
        try:
            _, reward, _, _, info = env.step(action)
        except InvalidActionError as err:
            assert str(err)  # a message that names the problem
            assert weights_hash(env) == before and env.np_random.bit_generator.state == rng and env._t == t
            return
        assert env._t == t + 1 and np.isfinite(reward) and isinstance(info["fault"], str)

    check()


TEXT = st.one_of(
    st.text(max_size=12), st.sampled_from(["Paris", "The Eiffel Tower is in", "Eiffel Tower", ""])
)
VALUES = st.recursive(
    st.one_of(TEXT, st.none(), st.integers(), st.floats(allow_nan=True), st.booleans()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6,
)
FIELDS = [
    "prompt", "subject", "target_new", "ground_truth", "rephrase", "locality", "requested_rewrite",
    "paraphrase_prompts", "neighborhood_prompts", "src", "alt", "answers", "loc", "loc_ans", "case_id",
]  # fmt: skip
RECORDS = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8),
    st.fixed_dictionaries(
        {"prompt": TEXT, "subject": TEXT, "target_new": TEXT},
        optional={"ground_truth": VALUES, "rephrase": VALUES, "locality": VALUES},
    ),
    st.fixed_dictionaries(
        {
            "requested_rewrite": st.dictionaries(
                st.sampled_from(["prompt", "subject", "target_new", "target_true"]), VALUES
            )
        },
        optional={"paraphrase_prompts": VALUES, "neighborhood_prompts": VALUES},
    ),
    VALUES,
)


@settings(max_examples=400, deadline=None)
@given(records=st.lists(RECORDS, max_size=3))
def test_random_records_load_or_are_refused_with_the_field_named(records):
    try:
        requests = requests_from_records(records, source="fuzz")
    except InvalidRecordError as err:
        assert "fuzz" in str(err)  # names where the bad record is
        return
    assert len(requests) == len(records)
    for r in requests:
        assert r.subject in r.prompt and r.target_new.strip()
