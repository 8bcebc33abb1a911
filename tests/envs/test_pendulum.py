"""Pendulum: the reward is 1 exactly within 8 degrees of upright, and initial
angles are uniform over the whole circle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import envs

stats = pytest.importorskip("scipy.stats")


def test_reward_is_one_exactly_within_the_upright_bound():
    env = envs.make("pendulum_swingup", num_envs=4, seed=0)
    bound = math.radians(8.0)
    eps = 2e-3  # [rad]; one step from rest moves the pole out by g sin(8 deg) / L dt^2 = 1.1e-3
    angles = torch.tensor([[bound - eps], [-(bound - eps)], [bound + eps], [math.pi]])
    obs = env.set_physics_state(angles, torch.zeros(4, 1))
    torch.testing.assert_close(obs[:, 0], torch.cos(angles[:, 0]).float())  # pole zz
    torch.testing.assert_close(obs[:, 1], torch.sin(angles[:, 0]).float())  # pole xz
    _, reward, *_ = env.step(torch.zeros(4, 1))
    assert reward.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_initial_angles_are_uniform_on_the_circle():
    # one-sample KS against the exact law, with many samples: detects a few percent
    # of missing or extra mass that a two-sample test against dm_control would miss
    obs = envs.make("pendulum_swingup", num_envs=20_000, seed=3).reset().double()
    angle = torch.atan2(obs[:, 1], obs[:, 0]).numpy()
    assert stats.kstest(angle, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 1e-3
    assert (obs[:, 2] == 0).all()  # released at rest
