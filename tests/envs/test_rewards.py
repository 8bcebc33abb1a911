"""envs.rewards.tolerance equals dm_control's reference for every sigmoid."""

import numpy as np
import pytest
import torch

from envs.rewards import SIGMOIDS, tolerance

rewards = pytest.importorskip("dm_control.utils.rewards")


@pytest.mark.parametrize("sigmoid", SIGMOIDS)
@pytest.mark.parametrize("bounds, margin", [((0.0, 0.0), 1.0), ((-0.5, 0.25), 2.0), ((1, 1), 0.3)])
def test_tolerance_matches_reference(sigmoid, bounds, margin):
    x = np.linspace(-4, 4, 801)
    value_at_margin = 0.0 if sigmoid in ("linear", "quadratic", "cosine") else 0.1
    for v in {value_at_margin, 0.3}:
        ref = rewards.tolerance(x, bounds, margin, sigmoid, v)
        ours = tolerance(torch.tensor(x), bounds, margin, sigmoid, v).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_zero_margin_is_an_indicator_and_bad_arguments_raise():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 1.5])
    assert tolerance(x, (0.0, 1.0)).tolist() == [0, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="lower bound"):
        tolerance(x, (1.0, 0.0))
    with pytest.raises(ValueError, match="unknown sigmoid 'cubic'"):
        tolerance(x, margin=1.0, sigmoid="cubic")
    with pytest.raises(ValueError, match="out of range"):
        tolerance(x, margin=1.0, value_at_margin=0.0)  # gaussian never reaches 0
