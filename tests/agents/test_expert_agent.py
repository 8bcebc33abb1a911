"""The scripted expert as an agent: acts like `make_expert`, and its checkpoint
(env_args, no weights) rebuilds it."""

from __future__ import annotations

import pytest
import torch

import envs
from agents.base import load, save
from agents.expert_agent import ExpertAgent
from envs.experts import make_expert
from sim.data.dataset import Dataset


def _obs(env, steps: int = 30) -> torch.Tensor:
    """Observations of a short random rollout (varied states, all rows)."""
    gen = torch.Generator().manual_seed(0)
    obs, seen = env.reset(), []
    for _ in range(steps):
        seen.append(obs)
        obs = env.step(2 * torch.rand(env.num_envs, env.action_dim, generator=gen) - 1)[0]
    return torch.cat(seen)


@pytest.mark.parametrize("task", ["cartpole_swingup", "pendulum_swingup", "reacher_hard"])
def test_acts_like_the_expert(task, tmp_path):
    env = envs.make(task, num_envs=4, seed=1, nthread=1)
    agent = ExpertAgent.for_env(env, noise_std=0.5)
    obs = _obs(env)
    expected = make_expert(env)(obs)
    assert torch.equal(agent.act(obs), expected)
    noise = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    explore = agent.act(obs, noise)
    assert torch.equal(explore, (expected + 0.5 * noise).clamp(-1, 1))
    assert not torch.equal(explore, expected)
    save(agent, tmp_path / "expert.pt")
    again = load(tmp_path / "expert.pt", kind="expert")
    assert isinstance(again, ExpertAgent) and again.config == agent.config
    assert list(again.state_dict()) == []
    assert torch.equal(again.act(obs), expected)
    assert torch.equal(again.act(obs, noise), explore)


def test_from_a_datasets_env_args(tmp_path):
    from agents.jobs.collect import CollectCfg, collect

    cfg = CollectCfg(
        task="pendulum_swingup",
        policy="expert",
        episodes=2,
        num_envs=2,
        episode_length=10,
        out=tmp_path / "d",
        progress=False,
        nthread=1,
    )
    collect(cfg)
    args = Dataset(tmp_path / "d").env_args
    env = envs.make_from_args(args, 3)
    agent = ExpertAgent(env.observation_dim, env.action_dim, {"env_args": args, "noise_std": 0.1})
    obs = _obs(env, 5)
    assert torch.equal(agent.act(obs), make_expert(env)(obs))


def test_bad_config():
    env = envs.make("pendulum_swingup", nthread=1)
    args = ExpertAgent.for_env(env).config["env_args"]
    with pytest.raises(ValueError, match="env_args"):
        ExpertAgent(3, 1, {"noise_std": 0.1})
    with pytest.raises(ValueError, match="noise_std"):
        ExpertAgent(3, 1, {"env_args": args, "noise_std": -1.0})
    with pytest.raises(ValueError, match="dims"):
        ExpertAgent(4, 1, {"env_args": args, "noise_std": 0.1})
    with pytest.raises(ValueError, match="noise has shape"):
        ExpertAgent.for_env(env).act(torch.zeros(2, 3), torch.zeros(2, 2))
