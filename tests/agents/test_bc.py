"""Behaviour cloning: a small expert dataset is cloned closely enough that the clone
balances the cart-pole as well as the expert."""

from __future__ import annotations

import json

import pytest
import torch

import envs
from agents.base import load, save
from agents.bc import BcAgent, TrainBCCfg, train_bc
from agents.jobs.collect import CollectCfg, collect
from envs.experts import make_expert

TASK = "cartpole_balance"
EPISODE_LENGTH = 200


@pytest.fixture(scope="module")
def expert_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("bc") / "data"
    collect(
        CollectCfg(
            task=TASK,
            policy="expert",
            episodes=8,
            episode_length=EPISODE_LENGTH,
            num_envs=4,
            out=out,
            progress=False,
            nthread=1,
        )
    )
    return out


@pytest.fixture(scope="module")
def trained(expert_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bc") / "run"
    report = train_bc(TrainBCCfg(data=expert_data, out=out, hidden=64, epochs=150, progress=False))
    return out, report


def _returns(policy, seed: int = 7, n: int = 8) -> torch.Tensor:
    """Returns of one episode in each of n envs (same seeds for every policy)."""
    env = envs.make(TASK, num_envs=n, seed=seed, episode_length=EPISODE_LENGTH, nthread=1)
    obs = env.reset()
    for _ in range(EPISODE_LENGTH):
        obs, _, _, truncated, info = env.step(policy(obs))
    assert truncated.all()
    return info["episode_return"]


def test_bc_clones_the_expert(trained):
    out, report = trained
    assert json.loads((out / "report.json").read_text())["val_mse"] == report["val_mse"]
    assert (out / "tb").is_dir()
    # held-out action error far below what predicting the mean action would give
    assert report["val_mse"] < 0.05 * report["val_action_var"], report
    agent = load(out)
    assert isinstance(agent, BcAgent)
    env = envs.make(TASK, num_envs=1, episode_length=EPISODE_LENGTH, nthread=1)
    expert = make_expert(env)
    bc, ref = _returns(agent.act), _returns(expert)
    # measured: expert 199.8, clone 199.8 mean return; uniform random actions 111.5
    assert bc.mean() > 0.95 * ref.mean(), (bc, ref)


def test_act_and_round_trip(trained, tmp_path):
    agent = load(trained[0])
    # observations like the data's, where the clone's actions are not saturated
    obs = agent.obs_mean + 0.5 * agent.obs_std * torch.randn(5, agent.obs_dim)
    det = agent.act(obs)
    assert det.shape == (5, agent.action_dim) and det.abs().max() <= 1.0
    assert torch.equal(det, agent.mean(obs).detach().clamp(-1, 1))
    noise = torch.randn(5, agent.action_dim, generator=torch.Generator().manual_seed(0))
    explore = agent.act(obs, noise)
    assert torch.equal(explore, agent.act(obs, noise))
    with torch.no_grad():
        mean, std = agent.mean(obs), agent.log_std.exp()
    assert torch.equal(explore, (mean + std * noise).clamp(-1, 1))
    assert not torch.equal(explore, det)
    save(agent, tmp_path / "bc.pt")
    again = load(tmp_path / "bc.pt", kind="bc")
    assert torch.equal(again.act(obs), det) and torch.equal(again.act(obs, noise), explore)


def test_bad_inputs(expert_data, tmp_path):
    with pytest.raises(ValueError, match="no such dataset"):
        train_bc(TrainBCCfg(data=tmp_path / "missing", out=tmp_path / "a", progress=False))
    one = tmp_path / "one"
    collect(
        CollectCfg(
            task=TASK,
            policy="expert",
            episodes=1,
            episode_length=20,
            num_envs=1,
            out=one,
            progress=False,
            nthread=1,
        )
    )
    with pytest.raises(
        ValueError, match="need at least 3 episodes .training, validation and test."
    ):
        train_bc(TrainBCCfg(data=one, out=tmp_path / "b", progress=False))
    with pytest.raises(ValueError, match="val_fraction"):
        train_bc(TrainBCCfg(data=expert_data, out=tmp_path / "c", val_fraction=1.0))
    with pytest.raises(ValueError, match="unknown config key"):
        BcAgent(3, 1, {"width": 4})
    with pytest.raises(ValueError, match="observations have shape"):
        BcAgent(3, 1).act(torch.zeros(2, 4))
