"""`bench env`'s peers: (c) is a plain Gymnasium `MujocoEnv` that steps the same model
the same physics steps as the batched env, and every rate and ratio is in one result."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.mujoco import MujocoEnv

import envs
from agents.bench.env import EnvBenchCfg, GymPeer, run_bench
from agents.bench.gym_peers import gym_env_class, make_gym_env
from envs.base import BatchedEnv
from envs.gym_adapter import GymEnv

HAS_DMC = importlib.util.find_spec("dm_control") is not None

# every task family; push has two physics steps per control step and contacts
TASKS = ["cartpole_swingup", "cartpole_balance_sparse", "pendulum_swingup", "reacher_easy", "push"]


def _rewarding_start(env: BatchedEnv, task: str) -> None:
    """Start where the sparse tasks earn reward for a while: the pendulum near upright,
    the reacher's target at its fingertip."""
    if task == "pendulum_swingup":
        env.set_physics_state(torch.tensor([[0.05]]), torch.tensor([[0.0]]))
    if task == "reacher_easy":
        env.set_target(env._fingertip() + 0.01)


def _copy_start(env: BatchedEnv, peer: MujocoEnv) -> None:
    """Put the batched env's world 0 (state, and the target or goal it keeps in the
    model) into the Gymnasium env."""
    model_geom = env.sim.model_field("geom_pos")[0].numpy()
    for geom in ("target", "goal"):
        gid = mujoco_id(peer, geom)
        if gid is not None:
            peer.model.geom_pos[gid] = model_geom[gid]
    qpos, qvel = env.get_physics_state()
    peer.set_state(qpos[0].numpy(), qvel[0].numpy())


def mujoco_id(peer: MujocoEnv, geom: str) -> int | None:
    try:
        return peer.model.geom(geom).id
    except KeyError:
        return None


@pytest.mark.parametrize("task", TASKS)
def test_gymnasium_peer_steps_the_same_physics_as_the_batched_env(task):
    env = envs.make(task, num_envs=1, seed=3, nthread=1)
    env.reset()
    _rewarding_start(env, task)
    obs = env.get_observations()
    peer = gym_env_class(task)(task)
    assert isinstance(peer, MujocoEnv) and peer.frame_skip == env.cfg.substeps
    peer.reset(seed=0)
    _copy_start(env, peer)
    np.testing.assert_allclose(peer._get_obs(), obs[0].numpy(), rtol=1e-6, atol=1e-6)
    actions = np.random.default_rng(1).uniform(-1, 1, (60, env.action_dim)).astype(np.float32)
    rewards = []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(torch.from_numpy(action[None]))
        peer_obs, peer_reward, peer_terminated, peer_truncated, _ = peer.step(action)
        qpos, qvel = env.get_physics_state()
        np.testing.assert_allclose(peer.data.qpos, qpos[0].numpy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(peer.data.qvel, qvel[0].numpy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(peer_obs, obs[0].numpy(), rtol=1e-6, atol=1e-6)
        assert peer_reward == pytest.approx(float(reward[0]), abs=1e-6)
        rewards.append(peer_reward)
        assert not (peer_terminated or peer_truncated or terminated[0] or truncated[0])
    assert max(rewards) > 0.0  # the reward formula is exercised, not only zeros
    env.close()


def test_gymnasium_peer_truncates_at_the_task_episode_length():
    single = make_gym_env("push")  # 250 control steps
    single.reset(seed=0)
    zero = np.zeros(single.action_space.shape, dtype=np.float32)
    ends = [any(single.step(zero)[2:4]) for _ in range(250)]
    assert ends == [False] * 249 + [True]


def test_gymnasium_peer_is_a_plain_mujoco_env_in_a_sync_vector_env():
    peer = GymPeer(EnvBenchCfg(task="cartpole_swingup", sync_envs=3))
    assert isinstance(peer.vec, gym.vector.SyncVectorEnv) and peer.vec.num_envs == 3
    for single in peer.vec.envs:
        inner = single.unwrapped
        assert isinstance(inner, MujocoEnv)
        assert not isinstance(inner, (BatchedEnv, GymEnv))  # not our batched env underneath
        assert inner.mujoco_renderer.viewer is None and inner.render_mode is None
    assert peer.run(4) > 0
    peer.close()


TINY = dict(num_envs=4, steps=6, warmup=2, rounds=1, sync_envs=2, sync_steps=6, dmc_steps=30)


def test_bench_reports_all_four_rates_and_their_ratios(capsys):
    result = run_bench(EnvBenchCfg(task="cartpole_swingup", nthread=1, **TINY))
    rates, ratios = result["steps_per_s"], result["ratios"]
    keys = ["batched_env", "raw_rollout", "sync_vector_env"] + (["dm_control"] if HAS_DMC else [])
    assert all(rates[k] > 0 for k in keys)
    a = rates["batched_env"]
    assert ratios["batched_over_raw"] == a / rates["raw_rollout"]
    assert ratios["batched_over_raw_per_step"] == a / rates["raw_rollout_per_step"]
    assert ratios["batched_over_sync"] == a / rates["sync_vector_env"]
    assert result["targets"] == {"batched_over_raw": 0.6, "batched_over_sync": 2.0}
    out = capsys.readouterr().out
    assert "a/b =" in out and "a/c =" in out and "MujocoEnv" in out
    if HAS_DMC:
        assert ratios["batched_over_dm_control"] == a / rates["dm_control"]
        assert result["peers"]["dm_control"] == "cartpole/swingup" and "a/d =" in out
    else:
        assert rates["dm_control"] is None and "dm_control" in result["notes"]


@pytest.mark.skipif(not HAS_DMC, reason="needs dm_control (extra dev)")
def test_bench_marks_dm_control_not_applicable_without_a_counterpart(capsys):
    result = run_bench(EnvBenchCfg(task="push", nthread=1, **TINY))
    assert result["steps_per_s"]["dm_control"] is None
    assert result["ratios"]["batched_over_dm_control"] is None
    assert "not applicable" in result["notes"]["dm_control"]
    assert result["steps_per_s"]["sync_vector_env"] > 0
    assert "not applicable" in capsys.readouterr().out


def test_a_task_subclass_gets_no_gymnasium_peer_of_its_parent():
    # conftest's test_cartpole_falls subclasses the cart-pole with terminal states
    assert gym_env_class("cartpole_balance") is not None
    assert gym_env_class("test_cartpole_falls") is None
