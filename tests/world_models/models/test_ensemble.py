"""Ensemble dynamics trained on real collected data: beats the copy-last-observation
baseline by a wide margin, saves and reloads exactly, resumes, and rejects
checkpoints that are not its own."""

from __future__ import annotations

import json
import math

import pytest
import torch

import world_models
from agents.jobs.collect import CollectCfg, collect
from world_models.base import FORMAT, save_atomic
from world_models.models.ensemble import EnsembleCfg, EnsembleDynamics
from world_models.train import TrainWMCfg, train_world_model

SMALL = {"hidden": 128, "layers": 3, "members": 4, "elites": 3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, swingup_data):
    root = tmp_path_factory.mktemp("wm")
    cfg = TrainWMCfg(
        data=swingup_data,
        out=root / "wm",
        epochs=8,
        val_fraction=0.2,
        progress=False,
        ensemble=EnsembleCfg(**SMALL),
    )
    return cfg, train_world_model(cfg)


def test_beats_copy_last_observation(trained):
    cfg, report = trained
    err = report["open_loop"]
    # measured (one thread): 6.1x and 6.7x at h = 1 and 10 for this small, briefly
    # trained ensemble; the documented figure is checked by the slow test below
    for h in (1, 10):
        ratio = err["copy_last"][h] / err["model"][h]
        assert ratio > 5.0, (h, err)
    # errors grow with the horizon, as open-loop errors do
    assert err["model"][1] < err["model"][10] < err["model"][50]
    saved = json.loads((cfg.out / "report.json").read_text())
    assert saved["open_loop"]["model"]["10"] == pytest.approx(err["model"][10])
    assert (cfg.out / "tb").is_dir() and any((cfg.out / "tb").iterdir())


def test_reload_gives_the_same_predictions(trained):
    cfg, _ = trained
    model = world_models.load(cfg.out / "model.pt")
    again = world_models.load(cfg.out / "model.pt", kind="ensemble")
    obs, act = torch.randn(32, 5), torch.rand(32, 1) * 2 - 1
    a = model.predict(obs, act)
    b = again.predict(obs, act)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # sampling: one elite per row, reproducible with a generator, differs from the mean
    s1 = model.predict(obs, act, torch.Generator().manual_seed(3))["next_obs"]
    s2 = model.predict(obs, act, torch.Generator().manual_seed(3))["next_obs"]
    assert torch.equal(s1, s2) and not torch.equal(s1, a["next_obs"])
    assert (a["disagreement"] > 0).all() and ((a["cont"] >= 0) & (a["cont"] <= 1)).all()


def test_resume_continues_and_refuses_to_overwrite(trained, tmp_path):
    cfg, report = trained
    with pytest.raises(ValueError, match="already holds a model"):
        train_world_model(cfg)
    longer = TrainWMCfg(
        **{**cfg.__dict__, "epochs": report["epochs"] + 2, "resume": True, "patience": 100}
    )
    resumed = train_world_model(longer)
    assert resumed["epochs"] == report["epochs"] + 2


def test_bad_checkpoints_are_named(tmp_path, trained):
    cfg, _ = trained
    with pytest.raises(ValueError, match="no such checkpoint"):
        world_models.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable checkpoint"):
        world_models.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a wam-sandbox world model checkpoint"):
        world_models.load(tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="holds a 'ensemble' model, expected 'rssm'"):
        world_models.load(cfg.out / "model.pt", kind="rssm")
    other = EnsembleDynamics(5, 1, {**SMALL, "hidden": 64}).checkpoint()
    other["config"] = {**other["config"], "hidden": 128}  # weights of another shape
    save_atomic(other, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match="weights do not fit a ensemble model"):
        world_models.load(tmp_path / "shape.pt")
    assert other["format"] == FORMAT


@pytest.mark.slow(seconds=57)
def test_ensemble_fidelity_as_documented(tmp_path):
    """docs/world-models.md's table, by its commands: 48 swing-up episodes of the noisy
    expert, `train-wm` with defaults. On the test episodes the ensemble is far ahead
    of both baselines (measured: 1,341-1,693x copy-last at every horizon; 10x, 57x
    and 168x constant velocity at h = 1, 5, 10), and the report says where."""
    collect(
        CollectCfg(
            task="cartpole_swingup",
            episodes=48,
            policy="expert+noise",
            noise_std=0.3,
            out=tmp_path / "data",
            progress=False,
        )
    )
    report = train_world_model(
        TrainWMCfg(data=tmp_path / "data", out=tmp_path / "wm", progress=False)
    )
    err = report["open_loop"]
    assert report["open_loop_on"] == "test" and len(report["test_episodes"]) == 5
    assert not set(report["test_episodes"]) & set(report["val_episodes"])
    for h in (1, 5, 10, 25, 50):
        assert err["copy_last"][h] / err["model"][h] > 400, (h, err)
    assert err["const_velocity"][1] / err["model"][1] > 3, err
    for h in (5, 10, 25, 50):
        assert err["const_velocity"][h] / err["model"][h] > 20, (h, err)


def test_mean_imagined_reward_is_the_members_mean_inside_the_trained_range():
    torch.manual_seed(0)
    wm = EnsembleDynamics(2, 1, {"members": 3, "elites": 3, "hidden": 8, "layers": 1})
    wm.prepare(
        {
            "obs": torch.randn(64, 2),
            "actions": torch.randn(64, 1),
            "next_obs": torch.randn(64, 2),
            "rewards": torch.rand(64) * 0.5,  # rewards in [0, 0.5)
        }
    )
    low, high = float(wm.reward_low), float(wm.reward_high)
    assert 0 <= low < high < 0.5
    with torch.no_grad():  # push the reward head's mean far above anything trained on
        wm.head.bias[..., 2] = 50.0
    state, action = torch.randn(32, 2), torch.randn(32, 1)
    sampled = wm.imagine(state, action, torch.Generator().manual_seed(0)).reward
    assert (sampled > high).all()  # the default draws from the Gaussian, unbounded
    wm.config["imagined_reward"] = "mean"
    step = wm.imagine(state, action, torch.Generator().manual_seed(0))
    assert torch.equal(step.reward, torch.full((32,), high))
    # below the top of the range the reward is the drawing member's mean, without noise
    with torch.no_grad():
        wm.head.bias[..., 2] = 0.0
    a = wm.imagine(state, action, torch.Generator().manual_seed(0)).reward
    b = wm.imagine(state, action, torch.Generator().manual_seed(0)).reward
    x = (torch.cat((state, action), -1) - wm.in_mean) / wm.in_std
    means = (wm(x.expand(3, *x.shape))[0][..., 2] * wm.out_std[2] + wm.out_mean[2]).detach()
    member_of_row = (means.clamp(low, high) - a).abs().argmin(0)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, means.clamp(low, high)[member_of_row, torch.arange(32)])
    # a model loaded from a checkpoint keeps its range; an old checkpoint has none
    state_dict = wm.state_dict()
    again = EnsembleDynamics(2, 1, wm.config)
    again.load_state_dict(state_dict)
    assert (float(again.reward_low), float(again.reward_high)) == (low, high)
    del state_dict["reward_low"], state_dict["reward_high"]
    old = EnsembleDynamics(2, 1, wm.config)
    old.load_state_dict(state_dict)
    assert float(old.reward_high) == math.inf
