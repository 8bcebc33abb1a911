"""The counter-based generator equals SplitMix64 and has the right distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from sim import rng

_MASK = (1 << 64) - 1


def _splitmix64(state: int, count: int) -> list[int]:
    """Reference SplitMix64 on Python integers."""
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & _MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        out.append(z ^ (z >> 31))
    return out


def test_bits_equal_reference_splitmix64():
    keys = torch.tensor([0, 1, -1, 123456789, 2**62, -(2**63)])
    got = rng.bits(keys, 0, 7)
    for row, key in zip(got.tolist(), keys.tolist(), strict=True):
        assert [v & _MASK for v in row] == _splitmix64(key & _MASK, 7)
    # a per-key start counter continues each stream
    tail = rng.bits(keys, torch.tensor([3] * 6), 4)
    assert torch.equal(tail, got[:, 3:7])


def test_uniform_and_normal_laws():
    keys = rng.episode_seeds(7, torch.arange(20000))
    u = rng.uniform(keys, 0, 3).numpy()
    assert u.min() >= 0.0 and u.max() < 1.0
    for col in u.T:
        assert stats.kstest(col, "uniform").pvalue > 1e-3
    z = rng.normal(keys, 5, 2).numpy()
    for col in z.T:
        assert stats.kstest(col, "norm").pvalue > 1e-3
    # neighbouring counters and neighbouring keys are uncorrelated
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.03


def test_episode_seeds_and_substreams_are_distinct():
    seeds = rng.episode_seeds(0, torch.arange(100000))
    assert len(torch.unique(seeds)) == len(seeds)
    assert torch.equal(rng.episode_seeds(0, [5, 6]), seeds[5:7])  # independent of the others
    assert not torch.equal(rng.episode_seeds(1, [5, 6]), seeds[5:7])
    assert not torch.equal(rng.substream(seeds[:10], 1), rng.substream(seeds[:10], 2))


def test_float_seeds_rejected():
    with pytest.raises(ValueError, match="integers"):
        rng.as_keys(torch.tensor([1.5]))
