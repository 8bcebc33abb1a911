"""Isaac Lab still produces the steps its MuJoCo twin is held to
(`tests/data/isaac_cartpole_reference.npz`, see `twin_reference.py`)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("isaaclab_tasks", reason="Isaac Lab is not installed here")

from tests.isaaclab.twin_reference import REFERENCE, record  # noqa: E402

pytestmark = pytest.mark.isaac


def test_isaac_lab_reproduces_the_twins_reference():
    ref, now = dict(np.load(REFERENCE)), record()
    assert ref.keys() == now.keys()
    for name in ("actions", "terminated", "alive", "qpos", "qvel"):
        np.testing.assert_array_equal(now[name], ref[name], err_msg=name)
    for name in ("obs0", "obs", "rewards"):
        np.testing.assert_allclose(now[name], ref[name], atol=1e-5, err_msg=name)
