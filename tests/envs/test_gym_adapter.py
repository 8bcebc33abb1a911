"""Gymnasium adapters: the env checker passes, the vector env declares and honours
same-step autoreset, and single envs report the true last observation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from envs.gym_adapter import GymEnv, GymVectorEnv

GYM_IDS = sorted(k for k in gym.registry if k.startswith("wam/"))


def test_every_task_has_its_gym_id():
    shipped = [t for t in envs.list_tasks() if not t.startswith("test_")]  # tests add tasks
    assert sorted(envs.spec(t).gym_id for t in shipped) == GYM_IDS
    assert "wam/CartpoleSwingup-v0" in GYM_IDS and len(GYM_IDS) == 26


@pytest.mark.parametrize("gym_id", GYM_IDS)
def test_env_checker_passes(gym_id):
    env = gym.make(gym_id)
    check_env(env.unwrapped, skip_render_check=True)
    assert isinstance(env.unwrapped, GymEnv)
    obs, _ = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    env.close()


@pytest.mark.render
def test_single_env_renders():
    env = gym.make("wam/PendulumSwingup-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 1


def test_single_env_ends_with_the_true_final_observation():
    env = gym.make("wam/CartpoleSwingup-v0", episode_length=4)
    obs, _ = env.reset(seed=0)
    start = obs
    for t in range(4):
        prev = obs
        obs, reward, terminated, truncated, info = env.step(np.ones(1, dtype=np.float32))
        assert truncated == (t == 3) and not terminated
    # pushing right for 4 steps: the last observation continues the episode
    assert obs[0] > prev[0] > start[0] and obs[0] - start[0] > 0.005
    assert info["episode_length"] == 4
    restarted, _ = env.reset()
    assert abs(restarted[0]) < 0.05 and restarted[1] < -0.99  # hanging again, centred


def test_single_env_truncates_at_1000_steps():
    env = gym.make("wam/PendulumSwingup-v0")
    env.reset(seed=0)
    action = np.zeros(1, dtype=np.float32)
    for t in range(1, 1001):
        _, _, terminated, truncated, _ = env.step(action)
        assert not terminated and truncated == (t == 1000)


def test_make_vec_is_the_batched_env_with_same_step_autoreset():
    vec = gym.make_vec(
        "wam/CartpoleSwingup-v0",
        num_envs=6,
        vectorization_mode="vector_entry_point",
        episode_length=5,
    )
    assert isinstance(vec.unwrapped, GymVectorEnv)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert vec.observation_space.shape == (6, 5) and vec.single_action_space.shape == (1,)
    start, _ = vec.reset(seed=2)
    batched = vec.unwrapped.batched
    for t in range(5):
        obs, reward, terminated, truncated, infos = vec.step(np.ones((6, 1), np.float32))
        assert obs.dtype == np.float32 and reward.shape == (6,)
        assert ("final_obs" in infos) == (t == 4)
    assert truncated.all() and infos["_final_obs"].all() and infos["_final_info"].all()
    final = np.stack(infos["final_obs"])
    assert np.all(final[:, 0] - start[:, 0] > 0.008)  # carts pushed right for 0.05 s...
    assert np.all(np.abs(obs[:, 0] - start[:, 0]) > 0)  # ...the returned obs start afresh
    assert np.all(np.abs(obs[:, 3]) < 0.05)  # at rest again
    np.testing.assert_array_equal(obs, batched.get_observations().numpy())
    assert infos["final_info"]["episode_length"].tolist() == [5] * 6


def test_sync_vector_env_of_single_envs_matches_the_batched_env():
    n, task = 3, "reacher_easy"
    sync = gym.vector.SyncVectorEnv(
        [lambda: gym.make("wam/ReacherEasy-v0", episode_length=6) for _ in range(n)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    sync.reset(seed=0)
    batched = envs.make(task, num_envs=n, episode_length=6)
    # start the batched rows from the single envs' states and targets
    singles = [e.unwrapped.batched for e in sync.envs]
    batched.set_target(torch.cat([s.target_position() for s in singles]))
    batched.set_physics_state(
        torch.cat([s.get_physics_state()[0] for s in singles]),
        torch.cat([s.get_physics_state()[1] for s in singles]),
    )
    rng = np.random.default_rng(0)
    for t in range(6):
        action = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        obs_s, rew_s, _, trunc_s, info_s = sync.step(action)
        obs_b, rew_b, _, trunc_b, info_b = batched.step(torch.from_numpy(action))
        np.testing.assert_array_equal(rew_s, rew_b.numpy())
        assert trunc_s.tolist() == trunc_b.tolist()
        if t < 5:
            np.testing.assert_array_equal(obs_s, obs_b.numpy())
    np.testing.assert_array_equal(np.stack(info_s["final_obs"]), info_b["final_obs"].numpy())
