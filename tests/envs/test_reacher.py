"""Reacher: the reward fires exactly when the fingertip touches the target, and
each world's target is its own, in the physics and in the pictures."""

from __future__ import annotations

import math

import pytest
import torch

import envs


def test_reward_is_one_exactly_inside_the_target():
    env = envs.make("reacher_hard", num_envs=3, seed=0)
    env.set_physics_state(torch.zeros(3, 2), torch.zeros(3, 2))  # arm straight along +x
    tip = 0.24  # shoulder-to-fingertip length [m]
    reach = 0.015 + 0.01  # target radius + fingertip radius [m]
    # centre distances: just inside, just outside, far away
    obs = env.set_target(
        torch.tensor([[tip + reach - 1e-4, 0.0], [tip + reach + 1e-4, 0], [0, 0.2]])
    )
    torch.testing.assert_close(obs[:, 2], torch.tensor([reach - 1e-4, reach + 1e-4, -tip]))
    _, reward, *_ = env.step(torch.zeros(3, 2))
    assert reward.tolist() == [1.0, 0.0, 0.0]


def test_targets_are_sampled_per_world_and_reset_with_the_episode():
    env = envs.make("reacher_easy", num_envs=64, seed=0, episode_length=2)
    first = env.target_position()
    distance = first.norm(dim=-1)
    assert ((distance >= 0.05) & (distance <= 0.20)).all()
    assert first[:, 0].std() > 0.05 and first[:, 1].std() > 0.05  # spread around the arm
    for _ in range(2):
        env.step(torch.zeros(64, 2))
    assert (env.target_position() - first).norm(dim=-1).min() > 0  # new episode, new target
    with pytest.raises(ValueError, match=r"target has shape \(2,\), expected \(64, 2\)"):
        env.set_target(torch.zeros(2))


@pytest.mark.render
def test_render_shows_each_worlds_target():
    env = envs.make("reacher_easy", num_envs=2, seed=0, render_width=64, render_height=64)
    env.set_target(torch.tensor([[0.15, 0.0], [-0.15, 0.0]]))
    # the arm straight along +y, away from both targets
    env.set_physics_state(torch.tensor([[math.pi / 2, 0.0]] * 2), torch.zeros(2, 2))
    frames = env.render().float()
    # the target is the reddest thing in the top-down view: its column says where it is
    red = frames[..., 0] - frames[..., 1]  # the arm is yellow: red and green
    cols = [(r > 60).float().sum(0).argmax().item() for r in red]
    assert cols[0] > 40 and cols[1] < 24, cols
    env.close()


def test_fingertip_kinematics_equal_mujoco_frames():
    env = envs.make("reacher_easy", num_envs=16, seed=4)
    for _ in range(5):
        env.step(torch.rand(16, 2) * 2 - 1)
    geom_xpos = env.sim.data("geom_xpos")  # MuJoCo's own kinematics at the same state
    tip = geom_xpos[:, env.object_id("geom", "finger"), :2]
    target = geom_xpos[:, env.object_id("geom", "target"), :2]
    torch.testing.assert_close(env._to_target(), target - tip, rtol=0, atol=1e-12)


def test_initial_states_follow_the_exact_distribution():
    # one-sample KS tests against the exact laws, with many samples: sensitive to a
    # few percent of misplaced mass (e.g. a wrist range of 180 instead of 160 degrees)
    stats = pytest.importorskip("scipy.stats")
    n = 20_000
    env = envs.make("reacher_easy", num_envs=n, seed=5)
    qpos, qvel = env.get_physics_state()
    target = env.target_position()
    wrist = math.radians(160)
    samples = {
        "shoulder": (qpos[:, 0], stats.uniform(-math.pi, 2 * math.pi)),
        "wrist": (qpos[:, 1], stats.uniform(-wrist, 2 * wrist)),
        # x = r sin(angle), y = r cos(angle): the angle is measured from +y towards +x
        "target angle": (
            torch.atan2(target[:, 0], target[:, 1]) % (2 * math.pi),
            stats.uniform(0, 2 * math.pi),
        ),
        "target distance": (target.norm(dim=-1), stats.uniform(0.05, 0.15)),
    }
    for label, (x, law) in samples.items():
        p = stats.kstest(x.numpy(), law.cdf).pvalue
        assert p > 1e-3, f"{label}: KS p={p:.2g}"
    assert (qvel == 0).all()
