"""BatchedEnv contract: bad input, clipping, autoreset with the true final
observation, divergence, action repeat, seeding and the physics-state API."""

from __future__ import annotations

import pytest
import torch

import envs


def rollout(env, actions):
    out = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs.clone(), reward.clone(), info["final_obs"].clone()))
    return out


@pytest.fixture
def env():
    e = envs.make("cartpole_swingup", num_envs=4, seed=3)
    yield e
    e.close()


@pytest.mark.parametrize(
    "action, message",
    [
        (torch.full((4, 1), float("nan")), r"cartpole_swingup: action contains NaN or inf"),
        (torch.tensor([[0.0], [float("inf")], [0.0], [0.0]]), r"rows \[1\]"),
        (torch.zeros(4, 2), r"shape \(4, 2\), expected \(4, 1\)"),
        (torch.zeros(4), r"shape \(4,\), expected \(4, 1\)"),
        (torch.zeros(4, 1, dtype=torch.long), r"dtype is torch.int64.*\(4, 1\)"),
        ([[0.0]] * 4, r"must be a torch.Tensor of shape \(4, 1\)"),
    ],
)
def test_bad_actions_raise_clear_errors(env, action, message):
    before = env.get_physics_state()
    with pytest.raises(ValueError, match=message):
        env.step(action)
    after = env.get_physics_state()  # nothing stepped
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_out_of_range_actions_are_clipped():
    a, b = (envs.make("cartpole_swingup", num_envs=2, seed=0) for _ in range(2))
    big = torch.tensor([[7.0], [-3.0]])
    for _ in range(20):
        oa, ra, *_ = a.step(big)
        ob, rb, *_ = b.step(big.clamp(-1, 1))
    torch.testing.assert_close(oa, ob, rtol=0, atol=0)
    torch.testing.assert_close(ra, rb, rtol=0, atol=0)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task 'cartpole'.*cartpole_swingup"):
        envs.make("cartpole")
    with pytest.raises(ValueError, match="unknown backend 'bullet'; valid backends: mujoco"):
        envs.make("cartpole_swingup", backend="bullet")
    with pytest.raises(ValueError, match="unknown config field.*episode_len\\b.*valid fields"):
        envs.make("cartpole_swingup", episode_len=10)
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        envs.make("cartpole_swingup", num_envs=0)


def test_same_seed_same_trajectory_bit_for_bit():
    actions = [
        torch.rand(8, 1, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(60)
    ]
    runs = []
    for seed in (5, 5, 6):
        env = envs.make("cartpole_swingup", num_envs=8, seed=seed, episode_length=25)
        runs.append([env.reset()] + [o for step in rollout(env, actions) for o in step])
    assert all(torch.equal(x, y) for x, y in zip(runs[0], runs[1], strict=True))
    assert not torch.equal(runs[0][0], runs[2][0])
    env = envs.make("cartpole_swingup", num_envs=8, seed=0)
    assert torch.equal(env.reset(seed=5), runs[0][0])  # reset(seed) re-seeds


def test_time_limit_truncates_and_keeps_the_true_final_observation():
    env = envs.make("cartpole_swingup", num_envs=3, seed=0, episode_length=5)
    env.reset()
    action = torch.ones(3, 1)
    for t in range(5):
        prev = env.get_observations()
        obs, reward, terminated, truncated, info = env.step(action)
        if t < 4:
            assert not truncated.any() and torch.equal(info["final_obs"], obs)
    assert truncated.all() and not terminated.any()
    # the final observation continues the episode; the returned one starts a new one
    assert (info["final_obs"][:, 0] > prev[:, 0]).all()  # the cart kept moving right
    assert obs[:, 0].abs().max() < 0.05 and (obs[:, 1] < -0.99).all()  # hanging, centred
    assert env.episode_length_buf.eq(0).all()
    assert info["episode_length"].eq(5).all()
    assert info["episode_return"].shape == (3,)


def test_diverged_world_is_reset_counted_and_never_leaks_nan(env):
    env.reset()
    qpos, qvel = env.get_physics_state()
    qvel[2, 1] = 1e12
    env.set_physics_state(qpos, qvel)
    last_good = env.get_observations()
    obs, reward, terminated, truncated, info = env.step(torch.zeros(4, 1))
    assert info["diverged"].tolist() == [False, False, True, False]
    assert truncated.tolist() == [False, False, True, False] and not terminated.any()
    assert env.num_diverged == 1 and reward[2] == 0
    assert torch.isfinite(obs).all() and torch.isfinite(info["final_obs"]).all()
    torch.testing.assert_close(info["final_obs"][2], last_good[2])
    assert env.episode_length_buf[2] == 0 and env.episode_length_buf[0] == 1


def test_action_repeat_equals_repeated_steps():
    fast = envs.make("cartpole_swingup", num_envs=2, seed=1, action_repeat=4, episode_length=8)
    slow = envs.make("cartpole_swingup", num_envs=2, seed=1, episode_length=8)
    for k in range(2):
        action = torch.full((2, 1), 0.5 - k)
        obs, reward, _, truncated, info = fast.step(action)
        total = 0
        for _ in range(4):
            obs_s, r, _, trunc_s, info_s = slow.step(action)
            total = total + r
        torch.testing.assert_close(reward, total)
        torch.testing.assert_close(info["final_obs"], info_s["final_obs"])
        assert torch.equal(truncated, trunc_s)
    assert truncated.all()  # 8 control steps = 2 agent steps of 4


def test_physics_state_round_trip(env):
    env.step(torch.rand(4, 1))
    qpos, qvel = env.get_physics_state()
    obs = env.get_observations()
    other = envs.make("cartpole_swingup", num_envs=4, seed=99)
    torch.testing.assert_close(other.set_physics_state(qpos, qvel), obs, rtol=0, atol=0)
    action = torch.rand(4, 1)
    torch.testing.assert_close(other.step(action)[0], env.step(action)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"qpos has shape \(4, 3\), expected \(4, 2\)"):
        env.set_physics_state(torch.zeros(4, 3), qvel)
    with pytest.raises(ValueError, match="qvel contains NaN"):
        env.set_physics_state(qpos, torch.full_like(qvel, float("nan")))
    sub = env.set_physics_state(torch.zeros(1, 2), torch.zeros(1, 2), env_ids=torch.tensor([1]))
    assert sub.shape == (4, 5) and sub[1, 0] == 0 and sub[1, 1] == 1.0


def test_spaces_and_dtypes(env):
    obs = env.reset()
    assert env.observation_space.shape == (5,) and env.action_space.shape == (1,)
    assert obs.dtype == torch.float32 and obs.shape == (4, 5)
    obs, reward, terminated, truncated, _ = env.step(torch.zeros(4, 1, dtype=torch.float32))
    assert reward.dtype == torch.float32 and terminated.dtype == truncated.dtype == torch.bool
    assert "cartpole_swingup" in envs.list_tasks()


@pytest.mark.parametrize("task", ["cartpole_swingup", "reacher_easy"])
def test_an_episode_replays_from_its_seed_in_any_env(task):
    """An episode depends on its seed alone: not on the env that ran it, the batch
    size, or the episodes before it in that env (warm-start included)."""
    env = envs.make(task, num_envs=3, seed=4, episode_length=20)
    actions = torch.rand(60, 3, env.action_dim, generator=torch.Generator().manual_seed(0))
    env.reset()
    traj, seed = [], None
    for t in range(60):
        obs, *_ = env.step(actions[t] * 2 - 1)
        if t == 39:  # the third episode of env 2 starts here
            seed, start = int(env.episode_seed[2]), obs[2].clone()
        elif t > 39:
            traj.append(obs[2].clone())
    replay = envs.make(task, num_envs=2, seed=99, episode_length=20)
    replay.reset()
    obs = replay.reset_envs(torch.tensor([1]), torch.tensor([seed]))
    assert torch.equal(obs[1], start)
    for t, expected in zip(range(40, 59), traj, strict=False):
        act = torch.stack((torch.zeros(env.action_dim), actions[t, 2] * 2 - 1))
        obs, *_ = replay.step(act)
        assert torch.equal(obs[1], expected), t


def test_reset_envs_checks_its_input():
    env = envs.make("pendulum_swingup", num_envs=2)
    with pytest.raises(ValueError, match="2 seeds for 1 env ids"):
        env.reset_envs(torch.tensor([0]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"env ids must lie in \[0, 2\)"):
        env.reset_envs(torch.tensor([2]), torch.tensor([1]))
    with pytest.raises(RuntimeError, match="only available inside _reset_idx"):
        env.uniform(0.0, 1.0, 2)
