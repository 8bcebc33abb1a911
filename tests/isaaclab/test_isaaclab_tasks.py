"""Isaac Lab's manager-based workflow behind the same protocol: the manager-based
cart-pole (`Isaac-Cartpole`, its robot named `robot`, its observations from an
observation manager) runs offline and resets, writes state and ends episodes as
the direct task does."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("isaaclab_tasks", reason="Isaac Lab is not installed here")

import envs  # noqa: E402

pytestmark = pytest.mark.isaac


def test_manager_based_cartpole_speaks_the_protocol():
    n = 6
    env = envs.make("Isaac-Cartpole", num_envs=n, backend="isaaclab", seed=0, episode_length=40)
    try:
        obs = env.reset(seed=1)
        assert obs.shape == (n, 4) and env.action_dim == 1 and env.sim.nq == 2
        # rows restart from their own seeds; the others keep their state
        moved = env.reset_envs(torch.tensor([0, 3]), torch.tensor([77, 77]))
        torch.testing.assert_close(moved[0], moved[3], rtol=0, atol=0)
        torch.testing.assert_close(moved[[1, 2, 4, 5]], obs[[1, 2, 4, 5]], rtol=0, atol=0)
        # the policy group is the joints' positions then velocities: written state shows
        qpos = torch.tensor([[0.5, -0.2]] * n, dtype=torch.float64)
        qvel = torch.tensor([[0.1, 0.3]] * n, dtype=torch.float64)
        obs = env.set_physics_state(qpos, qvel)
        torch.testing.assert_close(obs, torch.cat((qpos, qvel), 1).float(), rtol=0, atol=1e-6)
        # the time limit truncates every row at step 40 and hands out the final state
        for t in range(40):
            prev = obs
            obs, _, terminated, truncated, info = env.step(torch.zeros(n, 1))
            if t < 39:
                assert not (terminated | truncated).any(), t
        assert truncated.all() and not terminated.any()
        assert not torch.equal(info["final_obs"], obs)  # pre-reset state, not the new start
        assert (info["final_obs"] - prev).abs().max() < 0.5  # one step after the last obs
    finally:
        env.close()
