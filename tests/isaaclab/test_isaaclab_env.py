"""Isaac Lab tasks behind the batched env protocol, kit-less on the CPU (Newton).

Run in Isaac Lab's own environment: `PYTHONPATH=. $(python -m sim.isaaclab_setup)
-m pytest -m isaac tests/isaaclab`. One cart-pole env serves the module: Isaac
Lab keeps one simulation per process."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("isaaclab_tasks", reason="Isaac Lab is not installed here")

import envs  # noqa: E402

pytestmark = pytest.mark.isaac
N = 16
TASK = "Isaac-Cartpole-Direct"


@pytest.fixture(scope="module")
def env():
    env = envs.make(TASK, num_envs=N, backend="isaaclab", seed=0)
    yield env
    env.close()


def _rollout(env, actions, seed):
    """obs, final_obs, terminated, truncated per step from reset(seed)."""
    env.reset(seed=seed)
    out = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, info["final_obs"], terminated, truncated, reward))
    return out


def test_protocol_shapes_spaces_and_dtypes(env):
    assert env.observation_space.shape == (4,) and env.action_space.shape == (1,)
    assert env.action_space.low.min() == -1 and env.action_space.high.max() == 1
    obs = env.reset(seed=1)
    assert obs.shape == (N, 4) and obs.dtype == torch.float32 and torch.isfinite(obs).all()
    assert torch.equal(env.get_observations(), obs)
    obs2, reward, terminated, truncated, info = env.step(torch.zeros(N, 1))
    assert obs2.shape == (N, 4) and obs2.dtype == torch.float32
    assert reward.shape == (N,) and reward.dtype == torch.float32
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert info["final_obs"].shape == (N, 4)
    assert env.cfg.episode_length == 300  # the task's 5 s at 60 Hz


def test_final_obs_is_the_state_before_the_reset(env):
    """Pushing the cart hard drives it past 3 m (termination). The final observation
    must equal what the same env reports when it is not reset at all: replayed from
    the same seed and actions with Isaac Lab's resets switched off."""
    g = torch.Generator().manual_seed(0)
    actions = [(0.6 + 0.4 * torch.rand(N, 1, generator=g)) for _ in range(60)]
    run = _rollout(env, actions, seed=7)
    ended = torch.stack([te | tr for _, _, te, tr, _ in run])  # [T, N]
    assert ended.any(0).all(), "every cart should have left the track"
    first = ended.int().argmax(0)  # step at which each row's first episode ended
    assert all(run[first[i]][2][i] for i in range(N))  # termination, not time limit
    raw = env.unwrapped

    def no_reset():
        return torch.zeros_like(raw.reset_terminated), torch.zeros_like(raw.reset_time_outs)

    raw._get_dones = no_reset
    try:
        twin = _rollout(env, actions, seed=7)
    finally:
        del raw._get_dones
    assert not torch.stack([te | tr for _, _, te, tr, _ in twin]).any()
    for i in range(N):
        t = int(first[i])
        final, reset_obs, twin_obs = run[t][1][i], run[t][0][i], twin[t][0][i]
        torch.testing.assert_close(final, twin_obs, rtol=0, atol=1e-5)
        assert final[0].abs() > 3.0  # the cart is off the track in the final observation
        assert reset_obs[0].abs() <= 1.0 + 1e-6  # the new episode starts within +-1 m
        # before the end, obs and final_obs agree and match the twin
        if t > 0:
            torch.testing.assert_close(run[t - 1][0][i], twin[t - 1][0][i], rtol=0, atol=1e-5)


def test_time_limit_truncates_and_episode_statistics(env):
    env.reset(seed=3)
    for t in range(300):
        obs, reward, terminated, truncated, info = env.step(torch.zeros(N, 1))
        if t < 299:
            assert not truncated.any(), t
    assert truncated.all() and not terminated.any()
    assert torch.equal(info["episode_length"], torch.full((N,), 300))
    assert torch.isfinite(info["episode_return"]).all()


def test_seeding_and_per_episode_seeds(env):
    a = env.reset(seed=5)
    b = env.reset(seed=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, env.reset(seed=6))
    before = env.get_observations()
    obs = env.reset_envs(torch.tensor([0, 9]), torch.tensor([123, 123]))
    torch.testing.assert_close(obs[0], obs[9], rtol=0, atol=0)  # a row's start is its seed's
    others = torch.ones(N, dtype=torch.bool)
    others[[0, 9]] = False
    torch.testing.assert_close(obs[others], before[others], rtol=0, atol=0)
    again = env.reset_envs(torch.tensor([4]), torch.tensor([123]))
    torch.testing.assert_close(again[4], obs[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="2 seeds for 1 env ids"):
        env.reset_envs(torch.tensor([1]), torch.tensor([1, 2]))


def test_physics_state_round_trip(env):
    env.reset(seed=2)
    qpos, qvel = env.get_physics_state()
    assert qpos.shape == (N, 2) and qvel.shape == (N, 2) and qpos.dtype == torch.float64
    obs0 = env.get_observations()
    for _ in range(20):
        env.step(torch.rand(N, 1) * 2 - 1)
    assert not torch.allclose(env.get_observations(), obs0)
    obs = env.set_physics_state(qpos, qvel)
    torch.testing.assert_close(obs, obs0, rtol=0, atol=1e-5)
    assert torch.equal(env.get_observations(), obs)
    with pytest.raises(ValueError, match="must have shape"):
        env.set_physics_state(qpos[:, :1], qvel)
    bad = qvel.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        env.set_physics_state(qpos, bad)


def test_bad_input_gets_a_clear_error(env):
    env.reset(seed=0)
    bad = torch.zeros(N, 1)
    bad[3] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf in env rows \[3\]"):
        env.step(bad)
    with pytest.raises(ValueError, match=r"action has shape \(16, 2\)"):
        env.step(torch.zeros(N, 2))
    with pytest.raises(ValueError, match="unknown Isaac Lab task 'Isaac-No-Such-Task'"):
        envs.make("Isaac-No-Such-Task", backend="isaaclab")
    with pytest.raises(ValueError, match="unknown config field"):
        envs.make(TASK, backend="isaaclab", substeps=2)
