"""Unbounded angles as (cos, sin): the features, and that each task's declared entries
really are angles whose turn changes nothing else."""

from __future__ import annotations

import math

import pytest
import torch

import envs
from envs.features import angle_features, feature_dim, periodic_obs, wrap_angle

DECLARED = [t for t in envs.list_tasks() if periodic_obs(t)]


def test_the_tasks_with_raw_angles_declare_them():
    assert periodic_obs("reacher_easy") == (0,)  # the shoulder
    assert periodic_obs("cheetah_run") == (1,) and periodic_obs("hopper_hop") == (1,)
    assert periodic_obs("cartpole_swingup") == () and periodic_obs("Isaac-Cartpole-v0") == ()


def test_features_see_angles_by_their_turn():
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(5, 7, generator=gen) * 20
    assert angle_features(obs, ()) is obs
    feats = angle_features(obs, (0, 3))
    assert feats.shape == (5, feature_dim(7, (0, 3))) == (5, 9)
    torch.testing.assert_close(feats[:, :5], obs[:, [1, 2, 4, 5, 6]])
    turned = obs.clone()
    turned[:, 0] += 2 * math.pi * torch.randint(-9, 9, (5,), generator=gen)
    turned[:, 3] -= 6 * math.pi
    torch.testing.assert_close(angle_features(turned, (0, 3)), feats, atol=2e-4, rtol=0)
    assert not torch.allclose(angle_features(obs + 0.5, (0, 3)), feats)
    x = torch.tensor([0.0, math.pi, -math.pi, 7.0, -7.0])
    torch.testing.assert_close(
        wrap_angle(x), torch.tensor([0.0, -math.pi, -math.pi, 7 - 2 * math.pi, 2 * math.pi - 7])
    )


@pytest.mark.parametrize("task", DECLARED)
def test_a_full_turn_of_a_declared_angle_changes_nothing_else(task):
    """Two worlds, one with each declared angle a whole number of turns on: the same
    actions give the same observations but for those angles, which stay turns apart."""
    env = envs.make(task, num_envs=2, seed=1)
    env.reset_envs(torch.arange(2), torch.tensor([5, 5]))  # one episode (target) in both
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        env.step((torch.rand(1, env.action_dim, generator=gen) * 2 - 1).expand(2, -1))
    obs = env.get_observations()[:1].repeat(2, 1)
    angles = list(periodic_obs(task))
    obs[1, angles] += 4 * math.pi
    env.set_state_from_obs(obs)
    for _ in range(30):
        obs, *_ = env.step((torch.rand(1, env.action_dim, generator=gen) * 2 - 1).expand(2, -1))
    others = [i for i in range(obs.shape[1]) if i not in angles]
    torch.testing.assert_close(obs[1, others], obs[0, others], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(obs[1, angles] - obs[0, angles], torch.full((1,), 4 * math.pi))
