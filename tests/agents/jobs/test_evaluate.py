"""Evaluation in the real simulator: tasks with a goal report the success rate of
each row's first episode; action errors along recorded demonstrations."""

from __future__ import annotations

import pytest
import torch

import envs
from agents.base import Agent
from agents.expert_agent import ExpertAgent
from agents.jobs.collect import CollectCfg, collect
from agents.jobs.evaluate import action_errors, evaluate
from envs.experts import make_expert
from sim.data.dataset import Dataset


class Still(Agent):
    """Zero actions: the arm only drifts, the ball stays where it starts."""

    def act(self, obs, noise=None):
        return torch.zeros(len(obs), self.action_dim)


def test_success_rate_of_the_first_episodes():
    env = envs.make("push", num_envs=16, nthread=1)
    expert = evaluate(ExpertAgent.for_env(env, noise_std=0.0), env, seed=5)
    assert expert["real_success_rate"] >= 0.9
    still = evaluate(Still(env.observation_dim, env.action_dim, {}), env, seed=5)
    assert still["real_success_rate"] == 0.0
    assert still["real_return"]["mean"] < expert["real_return"]["mean"]
    swing = envs.make("pendulum_swingup", num_envs=2, episode_length=20)
    assert "real_success_rate" not in evaluate(Still(3, 1, {}), swing)


class Recorder(Still):
    """Zero actions, and a log of what it is told the env executed."""

    def __init__(self, *args):
        super().__init__(*args)
        self.seen: list[torch.Tensor] = []

    def executed(self, action):
        self.seen.append(action.clone())


def test_action_errors_against_the_recording_and_the_expert(tmp_path):
    collect(
        CollectCfg(
            task="push",
            num_envs=3,
            episodes=3,
            episode_length=30,
            policy="expert+noise",
            noise_std=0.3,
            seed=2,
            out=tmp_path / "demos",
            progress=False,
        )
    )
    data = Dataset(tmp_path / "demos")
    obs = torch.stack([torch.from_numpy(data.episode(e, ("obs",))["obs"]) for e in data.episodes])
    rec = torch.stack(
        [torch.from_numpy(data.episode(e, ("actions",))["actions"]) for e in data.episodes]
    )
    env = envs.make("push", num_envs=1)
    target = make_expert(env)(obs.reshape(-1, 18)).reshape(rec.shape)
    expert = action_errors(ExpertAgent.for_env(env, noise_std=0.0), tmp_path / "demos", env)
    assert expert["transitions"] == 90 and expert["mse_expert"] < 1e-10
    assert expert["mse_recorded"] == pytest.approx(expert["recorded_mse_expert"], rel=1e-5)
    assert expert["recorded_mse_expert"] == pytest.approx(
        (rec - target).pow(2).mean().item(), rel=1e-5
    )
    still = Recorder(18, 2, {})
    zero = action_errors(still, tmp_path / "demos", env)
    assert zero["mse_expert"] == pytest.approx(target.pow(2).mean().item(), rel=1e-5)
    assert zero["mse_recorded"] == pytest.approx(rec.pow(2).mean().item(), rel=1e-5)
    # the agent was told each step's recorded actions, in order
    torch.testing.assert_close(torch.stack(still.seen, 1), rec)
    with pytest.raises(ValueError, match="of 'push', the agent is evaluated on 'reacher_easy'"):
        action_errors(still, tmp_path / "demos", envs.make("reacher_easy", num_envs=1))
