"""`set_state_from_obs` inverts each task's observation: the observation of a real
state gives back that observation and that picture."""

from __future__ import annotations

import math

import pytest
import torch

import envs
from envs.base import BatchedEnv
from envs.tasks.cartpole import CartpoleEnv


def _visited(task: str, n: int = 6, steps: int = 60) -> BatchedEnv:
    """An env of `task` left in states reached by random actions (pole angles past
    +-pi included: the swing-up poles start hanging at pi)."""
    env = envs.make(task, num_envs=n, seed=3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        env.step(torch.rand(n, env.action_dim, generator=gen) * 2 - 1)
    return env


def _twin(env: BatchedEnv, task: str) -> BatchedEnv:
    """Another env running the same episodes (the same targets), in other states, at
    the coordinates the observation leaves out (a walker's forward position) of `env`."""
    other = envs.make(task, num_envs=env.num_envs, seed=99)
    other.reset_envs(torch.arange(env.num_envs), env.episode_seed)
    if env.unobserved_qpos:
        qpos, qvel = other.get_physics_state()
        keep = list(env.unobserved_qpos)
        qpos[:, keep] = env.get_physics_state()[0][:, keep]
        other.set_physics_state(qpos, qvel)
    return other


def _state_part(env: BatchedEnv, obs: torch.Tensor) -> torch.Tensor:
    """The observation without its contact readings (touch), which no state gives back."""
    keep = [i for i in range(obs.shape[-1]) if i not in env.contact_obs]
    return obs[..., keep]


# observations without the body's whole orientation (a quadruped sees only how upright
# it is; a humanoid's is given only up to its heading)
NOT_INVERTIBLE = {
    "humanoid_stand",
    "humanoid_walk",
    "humanoid_run",
    "quadruped_walk",
    "quadruped_run",
}
INVERTIBLE = [t for t in envs.list_tasks() if t not in NOT_INVERTIBLE]


@pytest.mark.parametrize("task", sorted(NOT_INVERTIBLE))
def test_tasks_that_cannot_say_so(task):
    env = envs.make(task, num_envs=2)
    assert not env.can_set_state_from_obs
    with pytest.raises(NotImplementedError, match="does not implement set_state_from_obs"):
        env.set_state_from_obs(env.get_observations())


@pytest.mark.parametrize("task", INVERTIBLE)
def test_the_observation_comes_back(task):
    env = _visited(task)
    obs = env.get_observations()
    other = _twin(env, task)
    assert (other.get_observations() - obs).abs().max() > 1e-3  # it really starts elsewhere
    # a subset of rows first: the others keep their state
    before = other.get_physics_state()
    ids = torch.tensor([4, 1])
    other.set_state_from_obs(obs[ids], ids)

    def part(x):
        return _state_part(env, x)

    torch.testing.assert_close(
        part(other.get_observations()[ids]), part(obs[ids]), atol=2e-6, rtol=0
    )
    after = other.get_physics_state()
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a[[0, 2, 3, 5]], b[[0, 2, 3, 5]], atol=0, rtol=0)
    back = other.set_state_from_obs(obs)
    torch.testing.assert_close(part(back), part(obs), atol=2e-6, rtol=0)
    torch.testing.assert_close(part(other.get_observations()), part(obs), atol=2e-6, rtol=0)
    if env.unobserved_qpos:  # kept from the state each world was in
        keep = list(env.unobserved_qpos)
        torch.testing.assert_close(other.get_physics_state()[0][:, keep], before[0][:, keep])


@pytest.mark.render
@pytest.mark.parametrize("task", INVERTIBLE)
def test_the_picture_comes_back(task):
    env = _visited(task)
    other = _twin(env, task)
    other.set_state_from_obs(env.get_observations())
    want, got = env.render().int(), other.render().int()
    assert want.float().std() > 5  # a picture, not a blank frame
    # the angle comes back through float32 cos and sin: equal up to a rare edge pixel
    assert (want - got).abs().float().mean() < 0.05, (want - got).abs().max()
    assert ((want - got).abs() > 0).float().mean() < 0.005


def test_wrapped_pole_angles_and_bad_input():
    env = envs.make("cartpole_swingup", num_envs=2)
    qpos = torch.tensor([[0.3, 3 * math.pi + 0.4], [-0.2, -5.0]], dtype=torch.float64)
    obs = env.set_physics_state(qpos, torch.tensor([[0.5, -2.0], [0.1, 7.0]]).double())
    back = envs.make("cartpole_swingup", num_envs=2).set_state_from_obs(obs)
    torch.testing.assert_close(back, obs, atol=2e-6, rtol=0)
    with pytest.raises(ValueError, match=r"obs has shape \(2, 4\), expected \(2, 5\)"):
        env.set_state_from_obs(obs[:, :4])
    with pytest.raises(ValueError, match="contains NaN"):
        env.set_state_from_obs(torch.full((2, 5), float("nan")))


class _Opaque(CartpoleEnv):
    _state_from_obs = BatchedEnv._state_from_obs  # a task that cannot invert its observation


def test_a_task_without_it_says_so():
    env = _Opaque(envs.make_cfg("cartpole_swingup"))
    assert not env.can_set_state_from_obs and envs.make("cartpole_swingup").can_set_state_from_obs
    with pytest.raises(NotImplementedError, match="_Opaque does not implement set_state_from_obs"):
        env.set_state_from_obs(env.get_observations())
