"""Domain randomization: the sampled values are the ones the physics uses (each
world equals a plain MjModel edited by hand), noise and delay act as configured,
and everything is drawn from the episode seed."""

from __future__ import annotations

import copy

import mujoco
import numpy as np
import pytest
import torch

import envs
from sim.randomization import RandomizationCfg

PHYSICS = RandomizationCfg(
    mass_scale=(0.5, 1.5),
    damping_scale=(0.5, 2.0),
    friction_scale=(0.7, 1.3),
    actuator_gain_scale=(0.6, 1.4),
    gravity_scale=(0.8, 1.2),
)


def _reference_model(env, world: int) -> mujoco.MjModel:
    """The nominal model with world `world`'s sampled scales written in by hand."""
    model = copy.deepcopy(env.sim.model)
    p = {k: np.asarray(v) for k, v in env.episode_params(world).items()}
    model.body_mass[:] *= p["rand_mass_scale"]
    model.body_inertia[:] *= p["rand_mass_scale"][:, None]
    model.dof_damping[:] *= p["rand_damping_scale"]
    model.geom_friction[:, 0] *= p["rand_friction_scale"]
    model.actuator_gear[:, 0] *= p["rand_actuator_gain_scale"]
    model.opt.gravity[:] *= p["rand_gravity_scale"]
    mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


@pytest.mark.parametrize("task", ["cartpole_swingup", "reacher_easy"])
def test_sampled_parameters_are_the_physics(task):
    env = envs.make(task, num_envs=4, seed=2, randomization=PHYSICS)
    env.reset()
    scales = env.randomizer.params
    for name in ("mass_scale", "damping_scale", "gravity_scale"):
        low, high = getattr(PHYSICS, name)
        assert (scales[name] >= low).all() and (scales[name] <= high).all()
        assert len(torch.unique(scales[name])) > 3  # per world (and per body)
    qpos0, qvel0 = env.get_physics_state()
    actions = torch.rand(25, 4, env.action_dim, generator=torch.Generator().manual_seed(1))
    for t in range(25):
        env.step(actions[t] * 2 - 1)
    qpos, qvel = env.get_physics_state()
    for world in range(4):
        for model in (_reference_model(env, world), env.sim.model):
            data = mujoco.MjData(model)
            data.qpos[:], data.qvel[:] = qpos0[world].numpy(), qvel0[world].numpy()
            for t in range(25):
                data.ctrl[:] = (actions[t, world] * 2 - 1).double().numpy()
                mujoco.mj_step(model, data)
            same = np.array_equal(data.qpos, qpos[world]) and np.array_equal(data.qvel, qvel[world])
            # bit for bit the hand-edited model; the nominal model moves differently
            assert same == (model is not env.sim.model), world


def test_parameters_change_every_episode_and_replay_from_the_seed():
    env = envs.make("pendulum_swingup", num_envs=2, seed=0, episode_length=5, randomization=PHYSICS)
    first = env.episode_params(0)
    for _ in range(5):
        env.step(torch.zeros(2, 1))
    assert env.episode_params(0) != first
    replay = envs.make("pendulum_swingup", num_envs=1, seed=7, randomization=PHYSICS)
    replay.reset_envs(torch.tensor([0]), env.episode_seed[1:2])
    assert replay.episode_params(0) == env.episode_params(1)


def test_observation_noise():
    cfg = RandomizationCfg(obs_noise_std=0.05)
    env = envs.make("cartpole_swingup", num_envs=256, seed=0, randomization=cfg)
    obs = env.reset()
    noise = obs - env._get_observations()
    assert noise.std().item() == pytest.approx(0.05, rel=0.05)
    assert abs(noise.mean().item()) < 0.005
    obs2, *_ = env.step(torch.zeros(256, 1))
    assert not torch.equal(obs2 - env._get_observations(), noise)  # fresh every step


def test_action_delay_and_noise_reach_the_actuators():
    cfg = RandomizationCfg(action_delay=(0, 3))
    env = envs.make("reacher_easy", num_envs=64, seed=0, randomization=cfg)
    env.reset()
    delay = env.randomizer.params["action_delay"]
    assert set(delay.tolist()) == {0, 1, 2, 3}
    sent = [torch.rand(64, 2) * 2 - 1 for _ in range(6)]
    for t, action in enumerate(sent):
        env.step(action)
        for i in range(64):
            d = int(delay[i])
            expected = sent[t - d][i] if t >= d else torch.zeros(2)
            torch.testing.assert_close(env.sim.ctrl[i].float(), expected, rtol=0, atol=1e-7)
    noisy = envs.make(
        "reacher_easy", num_envs=512, randomization=RandomizationCfg(action_noise_std=0.1)
    )
    noisy.step(torch.zeros(512, 2))
    assert noisy.sim.ctrl.std().item() == pytest.approx(0.1, rel=0.1)


def test_bad_ranges_are_rejected():
    with pytest.raises(ValueError, match="mass_scale must satisfy 0 < low <= high"):
        RandomizationCfg(mass_scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="action_delay must be integers"):
        RandomizationCfg(action_delay=(2, 1))
    with pytest.raises(ValueError, match="obs_noise_std must be >= 0"):
        RandomizationCfg(obs_noise_std=-1.0)
