"""World models and agents see a task's unbounded angles by their turn: predictions
do not change with a whole turn, and on the reacher, whose shoulder spans many turns,
the angle features are what let a model predict the fingertip-to-target vector."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import world_models
from agents.dreamer import DreamerAgent
from agents.jobs.collect import CollectCfg, collect
from sim.data.loader import EpisodeData
from world_models.models.ensemble import EnsembleDynamics
from world_models.models.rssm import RSSM
from world_models.models.tdmpc2 import TdMpc2
from world_models.train import TrainWMCfg, train_world_model


def _turned(obs: torch.Tensor, angles: list[int]) -> torch.Tensor:
    out = obs.clone()
    out[:, angles] += 2 * math.pi * torch.tensor([3.0, -5.0, 11.0, 0.0])[: len(obs), None]
    return out


def test_predictions_do_not_change_with_a_whole_turn():
    torch.manual_seed(0)
    obs, act = torch.randn(4, 6), torch.rand(4, 2) * 2 - 1
    turned = _turned(obs, [0])
    ensemble = EnsembleDynamics(
        6, 2, {"hidden": 32, "layers": 2, "members": 3, "elites": 2, "periodic": [0]}
    )
    a, b = ensemble.predict(obs, act), ensemble.predict(turned, act)
    torch.testing.assert_close(b["next_obs"] - turned, a["next_obs"] - obs, atol=1e-4, rtol=0)
    torch.testing.assert_close(b["reward"], a["reward"], atol=1e-5, rtol=0)
    rssm = RSSM(6, 2, {"deter": 32, "stoch": 4, "classes": 4, "hidden": 32, "periodic": [0]})
    s, t = rssm.encode(obs), rssm.encode(turned)
    torch.testing.assert_close(s[:, : rssm.deter], t[:, : rssm.deter])
    gen = torch.Generator().manual_seed(1)
    step = rssm.next(s, act, torch.Generator().manual_seed(1))
    again = rssm.next(t, act, gen)
    torch.testing.assert_close(again.reward, step.reward, atol=1e-5, rtol=0)
    latent = TdMpc2(6, 2, {"latent": 16, "hidden": 32, "enc_hidden": 32, "periodic": [0]})
    torch.testing.assert_close(latent.encode(turned), latent.encode(obs), atol=1e-5, rtol=0)
    agent = DreamerAgent(6, 2, {"hidden": 16, "layers": 1, "periodic": [0]})
    torch.testing.assert_close(agent.act(turned), agent.act(obs), atol=1e-5, rtol=0)
    torch.testing.assert_close(agent.value(turned), agent.value(obs), atol=1e-5, rtol=0)
    # without the hint the same networks see the raw number
    plain = DreamerAgent(6, 2, {"hidden": 16, "layers": 1})
    assert not torch.allclose(plain.act(turned), plain.act(obs), atol=1e-3)


def test_train_wm_gives_the_model_the_tasks_angles(tmp_path):
    data = tmp_path / "data"
    collect(
        CollectCfg(
            task="reacher_easy",
            num_envs=2,
            episodes=4,
            episode_length=40,
            seed=0,
            out=data,
            progress=False,
        )
    )
    for kind in ("ensemble", "rssm"):
        cfg = TrainWMCfg(
            data=data, out=tmp_path / kind, model=kind, epochs=1, steps_per_epoch=2, progress=False
        )
        train_world_model(cfg)
        assert world_models.load(Path(cfg.out) / "model.pt").periodic == (0,)


def _fit(model: EnsembleDynamics, batch: dict[str, torch.Tensor], steps: int) -> None:
    """`steps` Adam steps of the ensemble's loss on random minibatches of `batch`."""
    model.prepare(batch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    n, e = len(batch["obs"]), model.config["members"]
    for _ in range(steps):
        rows = torch.randint(n, (e, 256), generator=gen)
        loss, _ = model.loss({k: v[rows] for k, v in batch.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    errors = model.member_errors(batch)
    model.set_elites(errors)


@pytest.mark.slow(seconds=50)
def test_angle_features_let_a_model_predict_the_reacher(tmp_path):
    """Correlated noise spins the reacher's shoulder through about eight turns each way
    (32 episodes of 500 steps: -26 to 26 rad). The same ensemble, trained the same way
    on 24 of them, with and without the angle features: on the other 8, with them the
    one-step error of the fingertip-to-target vector is a small fraction of copying the
    last observation's, without them most of it (measured: 0.05 against 0.5-0.7)."""
    data = tmp_path / "data"
    collect(
        CollectCfg(
            task="reacher_easy",
            num_envs=8,
            episodes=32,
            episode_length=500,
            policy="noise",
            noise_std=0.8,
            noise_rho=0.98,
            seed=1,
            out=data,
            progress=False,
        )
    )
    episodes = EpisodeData(data)
    fields = ("obs", "actions", "next_obs", "rewards", "terminated")
    shoulder = episodes.data["obs"][:, 0]
    assert shoulder.max() - shoulder.min() > 6 * 2 * math.pi
    held_out = episodes.episode_of >= 24
    train = {k: episodes.data[k][~held_out] for k in fields}
    test = {k: episodes.data[k][held_out] for k in fields}
    copy = ((test["next_obs"] - test["obs"])[:, 2:4] ** 2).mean(0)
    errors = {}
    for periodic in ([0], []):
        torch.manual_seed(0)
        config = {"hidden": 128, "layers": 3, "members": 3, "elites": 2, "periodic": periodic}
        model = EnsembleDynamics(6, 2, config)
        _fit(model, train, 1500)
        pred = model.predict(test["obs"], test["actions"])["next_obs"]
        errors[bool(periodic)] = ((pred - test["next_obs"])[:, 2:4] ** 2).mean(0) / copy
    assert (errors[True] < 0.2).all(), errors
    assert (errors[False] > 2 * errors[True]).all(), errors
