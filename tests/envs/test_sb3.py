"""Stable-Baselines3 adapter: SB3's VecEnv contract. SB3's SAC learning through the
adapter is tested with the learner (tests/agents/test_sb3_agents.py, slow)."""

from __future__ import annotations

import numpy as np

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

