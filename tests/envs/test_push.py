"""Push: the expert succeeds, success is detected exactly at the goal radius, the
observation's fingertip is MuJoCo's, starts follow the configured distribution, and
frames show each world's goal."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest
import torch

import envs
from envs.experts import make_expert
from envs.tasks.push import OBS, arm_angles


def test_expert_pushes_the_ball_into_the_goal():
    """Measured: 99% of 128 episodes (seed 0), 97.5% of 512 (seed 1)."""
    env = envs.make("push", num_envs=64, seed=2, nthread=1)
    expert = make_expert(env)
    obs = env.reset()
    for _ in range(env.cfg.episode_length):
        obs, _, terminated, truncated, info = env.step(expert(obs))
        assert not terminated.any()
    assert truncated.all()
    assert info["success"].float().mean() >= 0.9, info["success"].float().mean()
    # the finished episodes' flags were handed over, the new episodes start without
    obs, _, _, _, info = env.step(expert(obs))
    assert not info["success"].any()


def _place(env, ball_xy, tip_far=True):
    """Ball at `ball_xy` `[N, 2]` at rest, the arm stretched away from it."""
    n = env.num_envs
    qpos = torch.zeros(n, 4, dtype=torch.float64)
    qpos[:, 0] = torch.atan2(-ball_xy[:, 1], -ball_xy[:, 0])  # arm points away from the ball
    qpos[:, 2:4] = ball_xy
    return env.set_physics_state(qpos, torch.zeros(n, 4, dtype=torch.float64))


@pytest.mark.parametrize("sparse", [False, True])
def test_success_exactly_at_the_goal_radius(sparse):
    env = envs.make("push_sparse" if sparse else "push", num_envs=4, seed=0, nthread=1)
    radius = env.cfg.goal_radius
    goal = env.goal_position()
    away = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.6, 0.8], [0.6, -0.8]], dtype=torch.float64)
    distance = torch.tensor([radius - 1e-4, radius + 1e-4, 0.0, 0.05], dtype=torch.float64)
    _place(env, goal + distance[:, None] * away)
    _, reward, _, _, info = env.step(torch.zeros(4, 2))
    inside = torch.tensor([True, False, True, False])
    assert torch.equal(info["success"], inside)
    ball = env.get_physics_state()[0][:, 2:4]
    torch.testing.assert_close(ball, goal + distance[:, None] * away)  # nothing moved it
    if sparse:
        assert torch.equal(reward, inside.float())
    else:
        assert (reward[inside] >= 0.8).all() and (reward[~inside] < 0.8).all()
        assert reward[3] < reward[1]  # farther from the goal, less reward
    # success is the episode's: it stays once reached, though the ball leaves the goal
    _place(env, goal + 0.1 * away)
    _, reward, _, _, info = env.step(torch.zeros(4, 2))
    assert torch.equal(info["success"], inside)
    if sparse:
        assert not reward.any()


def test_observation_layout_and_fingertip_kinematics():
    env = envs.make("push", num_envs=8, seed=3, nthread=1)
    obs = env.reset()
    qpos, qvel = env.get_physics_state()
    model = env.sim.model
    data = mujoco.MjData(model)
    finger = env.object_id("geom", "finger")
    for i in range(8):
        data.qpos[:] = qpos[i].numpy()
        mujoco.mj_forward(model, data)
        np.testing.assert_allclose(obs[i, 6:8].numpy(), data.geom_xpos[finger, :2], atol=1e-6)
    q = qpos[:, 0:2].float()
    torch.testing.assert_close(
        obs[:, 0:4], torch.stack((q[:, 0].cos(), q[:, 0].sin(), q[:, 1].cos(), q[:, 1].sin()), -1)
    )
    torch.testing.assert_close(obs[:, 8:10], qpos[:, 2:4].float())
    torch.testing.assert_close(obs[:, [4, 5, 10, 11]], qvel.float())
    torch.testing.assert_close(obs[:, 12:14], env.goal_position().float())
    torch.testing.assert_close(obs[:, 14:16], obs[:, 8:10] - obs[:, 6:8])  # ball - fingertip
    torch.testing.assert_close(obs[:, 16:18], obs[:, 12:14] - obs[:, 8:10])  # goal - ball
    assert set(OBS) == {
        "arm_cos_sin",
        "arm_vel",
        "tip",
        "ball",
        "ball_vel",
        "goal",
        "ball_from_tip",
        "goal_from_ball",
    }
    torch.testing.assert_close(arm_angles(obs), q, atol=1e-6, rtol=0)


def test_starts_follow_the_configured_distribution():
    env = envs.make("push", num_envs=512, seed=4, nthread=1)
    obs = env.reset().double()
    ball, goal = obs[:, 8:10], obs[:, 12:14]
    low, high = env.cfg.start_distance
    for xy in (ball, goal):
        r = torch.linalg.vector_norm(xy, dim=-1)
        assert (r >= low - 1e-6).all() and (r <= high + 1e-6).all()
    turn = torch.atan2(goal[:, 1], goal[:, 0]) - torch.atan2(ball[:, 1], ball[:, 0])
    turn = (turn + math.pi) % (2 * math.pi) - math.pi
    lo, hi = env.cfg.goal_angle
    assert (turn.abs() >= lo - 1e-6).all() and (turn.abs() <= hi + 1e-6).all()
    assert 0.4 < (turn > 0).float().mean() < 0.6  # either side
    assert (torch.linalg.vector_norm(goal - ball, dim=-1) > env.cfg.goal_radius).all()
    # the same seeds replay the same starts
    again = envs.make("push", num_envs=512, seed=4, nthread=1).reset().double()
    assert torch.equal(obs, again)


@pytest.mark.render
def test_frames_show_each_worlds_goal():
    """The goal disc (reddish on the blue floor) is drawn where each world's goal is,
    and not where the other world's is (top-down camera)."""
    env = envs.make("push", num_envs=2, seed=0, render_width=64, render_height=64)
    goal = env.goal_position()
    _place(env, goal + torch.tensor([[0.1, 0.0], [0.0, 0.1]], dtype=torch.float64))
    frames = env.render().float()
    for i in range(2):
        (r0, c0), (r1, c1) = _pixel_of(env, goal[i]), _pixel_of(env, goal[1 - i])
        mine = frames[i, r0 - 1 : r0 + 2, c0 - 1 : c0 + 2].mean((0, 1))
        theirs = frames[i, r1 - 1 : r1 + 2, c1 - 1 : c1 + 2].mean((0, 1))
        assert mine[0] > mine[2] + 40, (i, mine)  # red over blue: the goal
        assert theirs[0] < theirs[2], (i, theirs)  # the floor


def _pixel_of(env, xy: torch.Tensor) -> tuple[int, int]:
    """Pixel (row, col) of a floor point under the fixed top-down camera."""
    model = env.sim.model
    cam = env.object_id("camera", "fixed")
    height = float(model.cam_pos[cam, 2])
    half = height * math.tan(math.radians(float(model.cam_fovy[cam])) / 2)
    col = (float(xy[0]) / half + 1) / 2 * 64
    row = (1 - float(xy[1]) / half) / 2 * 64
    return int(row), int(col)
