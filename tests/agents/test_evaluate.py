"""Evaluation in the real simulator: tasks with a goal report the success rate of
each row's first episode."""

from __future__ import annotations

import torch

import envs
from agents.base import Agent
from agents.evaluate import evaluate
from agents.expert_agent import ExpertAgent


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
