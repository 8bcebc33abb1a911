"""`collect`: episodes that end at different steps are recorded whole, each one
replays bit for bit from its seed, and the data does not depend on the batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from agents.jobs.collect import CollectCfg, collect
from agents.jobs.ray_collect import run_collect
from agents.policies import AgentPolicy, SharedAgentPolicy, make_policy
from sim.data.dataset import Dataset, DatasetError
from sim.randomization import RandomizationCfg


def _collect(tmp_path, name="ds", **kw):
    cfg = CollectCfg(out=tmp_path / name, progress=False, **kw)
    return collect(cfg), Dataset(cfg.out)


def _replay(task, episode, attrs, policy_name, **env_kw):
    """Re-run one recorded episode from its seed alone, in a fresh one-env batch."""
    env = envs.make(task, num_envs=1, seed=12345, **env_kw)
    policy = make_policy(policy_name, env)
    seed = torch.tensor([attrs["seed"]])
    obs = env.reset_envs(torch.tensor([0]), seed)
    policy.reset(torch.tensor([0]), seed)
    out = {"obs": [], "next_obs": [], "actions": [], "rewards": [], "terminated": []}
    for _ in range(len(episode["actions"])):
        action = policy(obs)
        out["obs"].append(obs[0].numpy())
        out["actions"].append(action[0].numpy())
        obs, reward, terminated, _, info = env.step(action)
        out["next_obs"].append(info["final_obs"][0].numpy())
        out["rewards"].append(reward[0].item())
        out["terminated"].append(terminated[0].item())
    return {k: np.array(v) for k, v in out.items()}


def test_episodes_of_different_lengths_are_recorded_whole(tmp_path):
    summary, ds = _collect(
        tmp_path, task="test_cartpole_falls", num_envs=4, episodes=10, policy="noise", seed=3
    )
    assert summary["episodes_recorded"] == 10 and ds.episodes == list(range(10))
    lengths = [ds.length(e) for e in ds.episodes]
    assert len(set(lengths)) > 3, lengths  # episodes really ended at different steps
    assert ds.total == sum(lengths) == summary["transitions"]
    for e in ds.episodes:
        ep, attrs = ds.episode(e), ds.attrs(e)
        done = ep["terminated"] | ep["truncated"]
        assert done[-1] and not done[:-1].any()  # one episode, no reset inside
        # next_obs continues obs; the last one is the final state, not a reset state
        np.testing.assert_array_equal(ep["next_obs"][:-1], ep["obs"][1:])
        if ep["terminated"][-1]:
            cos = ep["next_obs"][-1, 1]
            assert cos < np.cos(0.44) + 1e-6  # the pole had fallen
        np.testing.assert_array_equal(ep["states"][:, 0].astype(np.float32), ep["obs"][:, 0])
        # bit for bit what a replay from the seed alone gives
        replay = _replay("test_cartpole_falls", ep, attrs, "noise")
        for key in ("obs", "next_obs", "actions", "rewards", "terminated"):
            np.testing.assert_array_equal(ep[key], replay[key].astype(ep[key].dtype), key)
        assert attrs["episode_return"] == pytest.approx(float(ep["rewards"].sum()), rel=1e-5)


@pytest.mark.parametrize(
    ("task", "policy"),
    [
        ("pendulum_swingup", "random"),
        ("pendulum_swingup", "noise"),
        ("cartpole_swingup", "expert+noise"),
        ("reacher_easy", "expert+noise"),
        ("push", "expert+noise"),
    ],
)
def test_data_does_not_depend_on_the_batch(tmp_path, task, policy):
    kw = {"task": task, "episodes": 5, "policy": policy, "episode_length": 60}
    _, a = _collect(tmp_path, "a", num_envs=5, **kw)
    _, b = _collect(tmp_path, "b", num_envs=2, flush_episodes=1, **kw)
    assert a.episodes == b.episodes == list(range(5))
    for e in a.episodes:
        ea, eb = a.episode(e), b.episode(e)
        for key in ea:
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=f"episode {e} {key}")
        assert a.attrs(e) == b.attrs(e)
    _, c = _collect(tmp_path, "c", num_envs=5, **{**kw, "seed": 1})
    assert not np.array_equal(c.episode(0)["obs"], a.episode(0)["obs"])


def test_goal_tasks_record_success(tmp_path):
    """Each episode of a task with a goal records whether it reached it, which its
    recorded observations say too (the ball within 2 cm of the goal at some step)."""
    summary, ds = _collect(
        tmp_path, "push", task="push", num_envs=4, episodes=6, policy="expert+noise"
    )
    flags = [ds.attrs(e)["success"] for e in ds.episodes]
    assert summary["success_rate"] == pytest.approx(sum(flags) / 6) and sum(flags) >= 5
    for e in ds.episodes:
        seen = ds.episode(e)["next_obs"]
        reached = (np.linalg.norm(seen[:, 16:18], axis=-1) <= 0.02).any()  # goal - ball
        assert reached == ds.attrs(e)["success"]
    summary, ds = _collect(
        tmp_path, "swing", task="pendulum_swingup", num_envs=2, episodes=2, episode_length=20
    )
    assert "success_rate" not in summary and "success" not in ds.attrs(0)


def test_resume_adds_only_missing_episodes(tmp_path):
    kw = {"task": "pendulum_swingup", "num_envs": 3, "episode_length": 40}
    _, full = _collect(tmp_path, "full", episodes=7, **kw)
    _collect(tmp_path, "part", episodes=4, **kw)
    with pytest.raises(DatasetError, match="already holds a dataset"):
        _collect(tmp_path, "part", episodes=7, **kw)
    summary, part = _collect(tmp_path, "part", episodes=7, resume=True, **kw)
    assert summary["episodes_recorded"] == 3 and part.episodes == list(range(7))
    for e in range(7):
        np.testing.assert_array_equal(part.episode(e)["actions"], full.episode(e)["actions"])


@pytest.mark.render
def test_pixels_show_each_recorded_state(tmp_path):
    _, ds = _collect(
        tmp_path, task="test_cartpole_falls", num_envs=3, episodes=4, pixels=32, seed=1
    )
    env = envs.make("test_cartpole_falls", num_envs=1, render_width=32, render_height=32)
    for e in ds.episodes:
        ep = ds.episode(e)
        assert ep["pixels"].shape == (len(ep["actions"]) + 1, 32, 32, 3)
        for t in (0, len(ep["actions"]) // 2, len(ep["actions"]) - 1):
            state = torch.from_numpy(ep["states"][t : t + 1])
            env.set_physics_state(state[:, :2], state[:, 2:])
            np.testing.assert_array_equal(env.render()[0].numpy(), ep["pixels"][t])
        # the last frame is the final state: the pole of a fallen episode leans far
        assert not np.array_equal(ep["pixels"][-1], ep["pixels"][0])


def test_randomization_is_recorded_per_episode(tmp_path):
    dr = RandomizationCfg(mass_scale=(0.5, 1.5), gravity_scale=(0.8, 1.2), obs_noise_std=0.01)
    _, ds = _collect(
        tmp_path, task="pendulum_swingup", num_envs=2, episodes=3, episode_length=30, randomize=dr
    )
    assert ds.env_args["env_kwargs"]["randomization"]["mass_scale"] == [0.5, 1.5]
    env = envs.make("pendulum_swingup", num_envs=1, randomization=dr, episode_length=30)
    gravity = set()
    for e in ds.episodes:
        attrs = ds.attrs(e)
        obs = env.reset_envs(torch.tensor([0]), torch.tensor([attrs["seed"]]))
        params = env.episode_params(0)
        assert {k: attrs[k] for k in params} == params
        np.testing.assert_array_equal(ds.episode(e)["obs"][0], obs[0].numpy())
        gravity.add(attrs["rand_gravity_scale"])
    assert len(gravity) == 3


def test_bad_settings_fail_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"pixel buffers for 4096 envs .* GiB"):
        collect(
            CollectCfg(
                task="pendulum_swingup",
                num_envs=4096,
                pixels=512,
                out=tmp_path / "a",
                progress=False,
            )
        )
    with pytest.raises(ValueError, match="no scripted expert for task 'test_cartpole_falls'"):
        collect(
            CollectCfg(
                task="test_cartpole_falls", policy="expert", out=tmp_path / "b", progress=False
            )
        )
    with pytest.raises(ValueError, match="unknown policy 'greedy'"):
        collect(CollectCfg(policy="greedy", out=tmp_path / "c", progress=False))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: torch sees no CUDA device"):
            collect(CollectCfg(device="cuda", out=tmp_path / "d", progress=False))
    with pytest.raises(ValueError, match="--worker-gpus .* needs --ray"):
        run_collect(CollectCfg(worker_gpus=1.0, device="cuda", out=tmp_path / "e"))
    assert not list(tmp_path.iterdir())


class _Shift:
    """An agent whose action is its offset plus the noise (or the offset alone)."""

    obs_dim, action_dim = 5, 1

    def __init__(self, offset: float):
        self.offset, self.resets = offset, []

    def reset(self, env_ids):
        self.resets.append(env_ids.tolist())

    def act(self, obs, noise=None):
        out = torch.full((len(obs), 1), self.offset)
        return out if noise is None else out + noise


def test_two_agents_share_a_collection_row_by_row_and_label_their_episodes(tmp_path):
    first, second = _Shift(-0.5), _Shift(0.5)
    rows = torch.tensor([False, True, True])
    shared = SharedAgentPolicy(3, first, second, rows)
    # each alone on the same episode seeds: the same noise
    alone = [AgentPolicy(3, _Shift(-0.5)), AgentPolicy(3, _Shift(0.5))]
    seeds = torch.tensor([7, 8, 9])
    for policy in (shared, *alone):
        policy.reset(torch.arange(3), seeds)
    obs = torch.zeros(3, 5)
    for _ in range(3):
        got, by_first, by_second = shared(obs), alone[0](obs), alone[1](obs)
        assert torch.equal(got[0], by_first[0]) and torch.equal(got[1:], by_second[1:])
        assert not torch.equal(by_first, by_second)
    assert second.resets == [[0, 1, 2]]  # both agents start their episodes
    assert [shared.episode_attrs(i) for i in range(3)] == [
        {"second_agent": 0.0},
        {"second_agent": 1.0},
        {"second_agent": 1.0},
    ]
    # and the labels reach the dataset, one per episode, by the row that played it
    cfg = CollectCfg(
        out=tmp_path / "shared",
        progress=False,
        task="cartpole_swingup",
        num_envs=3,
        episodes=3,
        episode_length=20,
        policy="closed-loop",
    )
    collect(cfg, lambda env: SharedAgentPolicy(3, _Shift(-0.5), _Shift(0.5), rows))
    data = Dataset(cfg.out)
    labels = sorted(data.attrs(e)["second_agent"] for e in data.episodes)
    assert labels == [0.0, 1.0, 1.0]
    for e in data.episodes:  # each episode's actions are its agent's (clipped noise aside)
        actions = data.episode(e, ("actions",))["actions"]
        sign = 1.0 if data.attrs(e)["second_agent"] else -1.0
        assert np.mean(actions) * sign > 0
