"""Stable-Baselines3 adapter: SB3's VecEnv contract. SB3's SAC learning through the
adapter is tested with the learner (tests/agents/test_sb3_agents.py, slow)."""

from __future__ import annotations

import numpy as np
import torch

import envs
from envs.sb3 import Sb3VecEnv


def test_vec_env_contract_at_episode_ends():
    env = envs.make("cartpole_balance", num_envs=4, seed=0, episode_length=6, action_repeat=2)
    vec = Sb3VecEnv(env)
    vec.seed(7)
    start = obs = vec.reset()
    np.testing.assert_array_equal(obs, envs.make("cartpole_balance", num_envs=4, seed=7).reset())
    for t in range(3):
        last_env_obs = env.get_observations().numpy()
        obs, rewards, dones, infos = vec.step(np.ones((4, 1), dtype=np.float32))
        assert dones.tolist() == [t == 2] * 4
    assert obs.dtype == np.float32 and rewards.dtype == np.float32
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True
        assert info["episode"]["l"] == 3  # agent steps, not control steps
        # pushed right for 6 control steps, then reset: obs is a new episode's start
        assert info["terminal_observation"][0] - start[i, 0] > 0.01
        assert info["terminal_observation"][0] > last_env_obs[i, 0]
        assert abs(obs[i, 3]) < 0.05 and not np.array_equal(obs[i], start[i])
    assert vec.get_attr("num_envs") == [4] * 4 and vec.env_is_wrapped(object) == [False] * 4
    assert vec.env_method("get_observations", indices=[0])[0].shape == (4, 5)


def test_episode_return_matches_summed_rewards():
    vec = Sb3VecEnv(envs.make("pendulum_swingup", num_envs=3, seed=1, episode_length=20))
    vec.reset()
    total = np.zeros(3)
    for _ in range(20):
        _, rewards, dones, infos = vec.step(np.zeros((3, 1), dtype=np.float32))
        total += rewards
    assert dones.all()
    np.testing.assert_allclose([i["episode"]["r"] for i in infos], total, rtol=1e-5)


def test_goal_tasks_report_success_to_sb3():
    """Finished episodes of a task with a goal carry SB3's `is_success`: the expert's
    are successes, a still arm's are not."""
    from envs.experts import make_expert

    env = envs.make("push", num_envs=4, seed=0, episode_length=250, nthread=1)
    vec, expert = Sb3VecEnv(env), make_expert(env)
    obs = vec.reset()
    for _ in range(250):
        obs, _, dones, infos = vec.step(expert(torch.from_numpy(obs)).numpy())
    assert dones.all() and [i["is_success"] for i in infos] == [True] * 4
    for _ in range(250):
        _, _, dones, infos = vec.step(np.zeros((4, 2), dtype=np.float32))
    assert dones.all() and [i["is_success"] for i in infos] == [False] * 4
    plain = Sb3VecEnv(envs.make("pendulum_swingup", num_envs=2, episode_length=5))
    plain.reset()
    for _ in range(5):
        _, _, dones, infos = plain.step(np.zeros((2, 1), dtype=np.float32))
    assert dones.all() and all("is_success" not in i for i in infos)
