"""benchmarks/alphaedit_capacity.py: the replay of AlphaEdit's write on synthetic keys (no model)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import benchmark_module


@pytest.fixture(scope="module")
def cap():
    return benchmark_module("alphaedit_capacity")


def _c0(d: int, small: int) -> torch.Tensor:
    """A covariance whose last ``small`` axes carry almost no energy (the null space)."""
    values = torch.ones(d, dtype=torch.float64)
    values[d - small :] = 1e-6
    return torch.diag(values)


def test_a_free_null_space_writes_the_whole_residual_and_leaks_nothing(cap):
    d, small = 12, 6
    key = torch.zeros(1, d, dtype=torch.float64)
    key[0, d - 1] = 3.0  # inside the null space
    ordinary = torch.randn(50, d, dtype=torch.float64)
    ordinary[:, d - small :] = 0.0  # ordinary text uses only the preserved axes
    out = cap.replay(_c0(d, small), [key], ordinary, "energy", 0.01, l2=1e-9)
    assert out["dim"] == small
    assert out["shares"][0] == pytest.approx(1.0, abs=1e-6)
    assert out["leak"] == pytest.approx(0.0, abs=1e-12)


def test_a_key_outside_the_null_space_cannot_be_written(cap):
    d, small = 12, 6
    key = torch.zeros(1, d, dtype=torch.float64)
    key[0, 0] = 3.0  # a preserved axis only
    out = cap.replay(_c0(d, small), [key], torch.zeros(1, d, dtype=torch.float64), "energy", 0.01, 1.0)
    assert out["shares"][0] == pytest.approx(0.0, abs=1e-9)


def test_the_null_space_fills_up_with_earlier_edits(cap):
    """Once earlier keys span the null space, a new key's share falls and old edits are disturbed."""
    torch.manual_seed(0)
    d, small = 16, 4
    steps = [torch.randn(2, d, dtype=torch.float64) for _ in range(8)]
    out = cap.replay(_c0(d, small), steps, torch.randn(20, d, dtype=torch.float64), "energy", 0.01, 0.1)
    assert out["dim"] == small
    assert out["shares"][-1] < 0.5 * out["shares"][0]
    assert out["old_leak"] > 0.0
    # a larger L2 writes less of each residual
    stiff = cap.replay(_c0(d, small), steps, torch.randn(20, d, dtype=torch.float64), "energy", 0.01, 10.0)
    assert stiff["shares"][0] < out["shares"][0]


def test_configs_are_parsed_or_refused(cap):
    assert cap.parse_config("energy:0.05:3") == ("energy", 0.05, 3.0)
    with pytest.raises(ValueError, match="RULE:VALUE:L2"):
        cap.parse_config("energy:0.05")


def test_band_delivers_follows_memit_shares(cap):
    assert cap.band_delivers([1.0, 1.0, 1.0]) == pytest.approx(1.0)  # the top layer takes what is left
    assert cap.band_delivers([0.0, 0.0]) == pytest.approx(0.0)
    # two layers delivering half of what each asks: 1/2 * 1/2 first, then half of the 3/4 left
    assert cap.band_delivers([0.5, 0.5]) == pytest.approx(1 - (1 - 0.25) * (1 - 0.5))
