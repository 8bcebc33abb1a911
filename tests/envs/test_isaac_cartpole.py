"""The MuJoCo twin of Isaac Lab's cart-pole follows Isaac Lab's own steps (recorded in
`tests/data/isaac_cartpole_reference.npz` by `tests/isaaclab/twin_reference.py`), keeps
the env protocol, and each engine's name of the task leads to the other's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import envs
from agents.jobs.collect import CollectCfg, env_args
from envs.checker import check_batched_env
from envs.registry import engine_task
from tests.isaaclab.twin_reference import REFERENCE


def test_the_twin_follows_isaac_labs_steps():
    ref = dict(np.load(REFERENCE))
    rows = ref["qpos"].shape[0]
    env = envs.make("isaac_cartpole", num_envs=rows, seed=0)
    obs = env.set_physics_state(torch.tensor(ref["qpos"]), torch.tensor(ref["qvel"]))
    np.testing.assert_allclose(obs.numpy(), ref["obs0"], atol=1e-6)
    for t, action in enumerate(ref["actions"]):
        _, reward, terminated, _, info = env.step(torch.tensor(action))
        alive = ref["alive"][t]
        # Isaac Lab steps in float32: 150 steps drift apart by ~1e-4 at most
        np.testing.assert_allclose(
            info["final_obs"].numpy()[alive], ref["obs"][t][alive], atol=1e-3
        )
        np.testing.assert_allclose(reward.numpy()[alive], ref["rewards"][t][alive], atol=1e-5)
        assert (terminated.numpy() == ref["terminated"][t])[alive].all()
    assert np.abs(ref["obs"][-1, :2, 1]).min() > 1.0  # the unforced poles fell
    assert ref["terminated"][:, 2:4].any(0).all()  # the pushed carts left the rail
    # ... and were paid the failure on the step they left it, as Isaac Lab pays it
    ends = ref["terminated"] & ref["alive"]
    assert ends[:, 2:4].sum() == 2 and (ref["rewards"][ends] < -1.5 / 60).all()


def test_the_twin_keeps_the_protocol_and_isaac_labs_task():
    check_batched_env(
        lambda n, seed, length: envs.make("isaac_cartpole", n, seed=seed, episode_length=length)
    )
    env = envs.make("isaac_cartpole", num_envs=64, seed=1)
    obs = env.reset()
    assert obs.shape == (64, 4) and env.action_dim == 1
    assert obs[:, 0].abs().max() <= 1.0 and obs[:, 1].abs().max() <= math.pi / 4
    assert obs[:, 2].abs().max() <= 0.5 and obs[:, 3].abs().max() <= math.pi / 4
    assert env.cfg.episode_length == 300 and env.cfg.action_repeat == 1
    assert env.sim.dt == pytest.approx(1 / 60)
    # upright and still: 1/60 a step, 5 over an episode
    env.set_physics_state(
        torch.zeros(64, 2, dtype=torch.float64), torch.zeros(64, 2, dtype=torch.float64)
    )
    _, reward, *_ = env.step(torch.zeros(64, 1))
    torch.testing.assert_close(reward, torch.full((64,), 1 / 60))
    # full force: the cart leaves the rail's 3 m within the episode, paid -2/60
    env.reset(seed=2)
    total, ended = torch.zeros(64), torch.zeros(64, dtype=torch.bool)
    for _ in range(300):
        _, reward, terminated, truncated, _ = env.step(torch.ones(64, 1))
        total += torch.where(ended, 0.0, reward)
        if terminated.any():
            assert (reward[terminated] < -1.5 / 60).all()
        ended |= terminated | truncated
    assert ended.all() and total.max() < 5.0


def test_each_engine_names_the_task_of_the_other():
    assert engine_task("isaac_cartpole", "isaaclab") == "Isaac-Cartpole-Direct"
    assert engine_task("Isaac-Cartpole-Direct", "mujoco") == "isaac_cartpole"
    assert engine_task("isaac_cartpole", "mujoco") == "isaac_cartpole"
    with pytest.raises(ValueError, match="no Isaac Lab twin .*isaac_cartpole"):
        engine_task("walker_walk", "isaaclab")
    # an Isaac Lab recording's env_args, rebuilt on mujoco: the twin, with the settings
    # the two configs share
    twin = envs.make("isaac_cartpole", num_envs=1)
    args = env_args(CollectCfg(task="isaac_cartpole"), twin)
    args.update(env_name="Isaac-Cartpole-Direct", backend="isaaclab")
    args["env_kwargs"] = {"episode_length": 200, "action_repeat": 1, "offline_assets": True}
    env = envs.make_from_args(args, 2, backend="mujoco")
    assert env.name == "isaac_cartpole" and env.cfg.episode_length == 200
