"""The success head: push's recorded per-step success round-trips through the data,
a head learns it well enough to tell held-out episodes' successful steps from the
rest, and an imagined env with a head reports success and pays its bonus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from agents.jobs.collect import CollectCfg, collect
from envs.experts import make_expert
from envs.rewards import SuccessBonus
from sim.data.dataset import Dataset
from sim.data.loader import EpisodeData
from world_models.imagined_env import ImaginedEnv, ImaginedEnvCfg
from world_models.models.ensemble import EnsembleDynamics
from world_models.success import SuccessHead, SuccessHeadCfg, fit_success_head


def _collect(out, seed: int, episodes: int = 16, task: str = "push", length: int = 150):
    collect(
        CollectCfg(
            task=task,
            num_envs=episodes,
            episodes=episodes,
            episode_length=length,
            policy="expert+noise",
            out=out,
            seed=seed,
            progress=False,
        )
    )
    return out


@pytest.fixture(scope="module")
def push_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("success")
    return _collect(root / "train", seed=0, episodes=32), _collect(root / "test", seed=1)


def test_per_step_success_is_recorded_and_read_back(push_data):
    train, _ = push_data
    data = Dataset(train)
    for e in data.episodes:
        episode = data.episode(e)
        success = episode["success"]
        assert success.dtype == bool and len(success) == len(episode["actions"])
        # set from the step the ball first reaches the goal on: latched, as info["success"]
        first = int(np.argmax(success)) if success.any() else len(success)
        assert not success[:first].any() and success[first:].all()
        assert bool(success[-1]) == bool(data.attrs(e)["success"])  # the episode's outcome
        # where the step's next observation puts the ball in the goal, the step succeeded
        goal_from_ball = np.linalg.norm(episode["next_obs"][:, 16:18], axis=-1)
        assert success[goal_from_ball <= 0.02 - 1e-5].all()
    loaded = EpisodeData(train)
    assert loaded.data["success"].dtype == torch.bool
    assert len(loaded.data["success"]) == len(loaded)


def test_a_task_without_a_goal_records_no_success_and_the_head_says_so(tmp_path):
    path = _collect(tmp_path / "pendulum", seed=0, episodes=4, task="pendulum_swingup", length=20)
    data = EpisodeData(path)
    assert "success" not in data.data
    assert "success" not in Dataset(path).episode(0)
    with pytest.raises(ValueError, match="records no per-step success"):
        fit_success_head(data)


def test_the_head_tells_held_out_successful_steps_from_the_rest(push_data):
    train, test = push_data
    head, report = fit_success_head(EpisodeData(train), SuccessHeadCfg(epochs=40), seed=0)
    assert 0.2 < report["success_share"] < 0.9
    held_out = EpisodeData(test)
    said = head.prob(held_out.data["next_obs"]) > 0.5
    truth = held_out.data["success"]
    assert truth.any() and (~truth).any()
    # the labels are latched (a ball that left the goal still counts): not all of
    # them can be read off the observation
    assert (said[truth]).float().mean() > 0.8  # successful steps called successful
    assert (~said[~truth]).float().mean() > 0.8  # and the others not
    # refitting from a head starts from its weights and input statistics
    again, _ = fit_success_head(EpisodeData(train), SuccessHeadCfg(epochs=1), seed=1, init=head)
    torch.testing.assert_close(again.obs_mean, head.obs_mean)


def test_an_imagined_env_with_a_head_reports_success_and_pays_the_bonus():
    torch.manual_seed(0)
    model = EnsembleDynamics(4, 1, {"members": 2, "elites": 2, "hidden": 16, "layers": 1}).eval()
    head = SuccessHead(4, hidden=8, layers=1)
    head.logits = lambda obs: 10 * obs[:, 0]  # a head whose answer the test knows
    starts = torch.randn(32, 4)
    cfg = ImaginedEnvCfg(num_envs=8, seed=0, episode_length=5, termination="never")
    plain = ImaginedEnv(model, starts, cfg)
    paid = ImaginedEnv(model, starts, ImaginedEnvCfg(**{**cfg.__dict__, "success_bonus": 2.0}))
    paid.use_success_head(head)
    plain.reset(), paid.reset()
    reached = torch.zeros(8, dtype=torch.bool)
    for _ in range(4):
        action = torch.rand(8, 1) * 2 - 1
        obs, reward, *_, info = plain.step(action)
        obs2, reward2, *_, info2 = paid.step(action)
        torch.testing.assert_close(obs2, obs)
        assert "success" not in info
        prob = torch.sigmoid(10 * obs[:, 0])
        torch.testing.assert_close(reward2, reward + 2.0 * prob)
        reached |= prob > 0.5
        assert torch.equal(info2["success"], reached)  # latched, like a real env's
    with pytest.raises(ValueError, match="success_bonus needs a success head"):
        bare = ImaginedEnv(model, starts, ImaginedEnvCfg(**{**cfg.__dict__, "success_bonus": 1.0}))
        bare.step(torch.zeros(8, 1))
    with pytest.raises(ValueError, match="success head of 3 observations"):
        paid.use_success_head(SuccessHead(3))


def test_the_success_bonus_pays_the_real_env_for_every_step_past_its_goal():
    env = envs.make("push", num_envs=4, episode_length=150)
    paid = SuccessBonus(envs.make("push", num_envs=4, episode_length=150), 3.0)
    obs = env.reset(seed=5)
    paid.reset(seed=5)
    expert = make_expert(env)
    for _ in range(150):
        action = expert(obs)
        obs, reward, *_, info = env.step(action)
        _, reward2, *_, info2 = paid.step(action)
        torch.testing.assert_close(reward2, reward + 3.0 * info["success"].to(reward.dtype))
        assert torch.equal(info2["success"], info["success"])
    assert info["success"].any()  # the expert reached the goal: the bonus was paid
    assert paid.num_envs == 4 and paid.name == "push"
    with pytest.raises(ValueError, match="no goal"):
        SuccessBonus(envs.make("pendulum_swingup", num_envs=2), 1.0).step(torch.zeros(2, 1))
    with pytest.raises(ValueError, match="must be >= 0"):
        SuccessBonus(env, -1.0)
