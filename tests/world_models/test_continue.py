"""`train-wm --continue-from`: training goes on where another run stopped (weights,
statistics and optimiser state), as the closed loop trains one model across its
iterations at a ratio of gradient steps to data."""

from __future__ import annotations

import pytest
import torch

import world_models
from world_models.base import read_checkpoint
from world_models.models.ensemble import EnsembleCfg
from world_models.train import TrainWMCfg, train_world_model

SMALL = EnsembleCfg(hidden=32, layers=2, members=3, elites=2)


def _train(data, out, **kw):
    cfg = TrainWMCfg(data=data, out=out, epochs=1, progress=False, ensemble=SMALL, **kw)
    return train_world_model(cfg)


def test_training_goes_on_where_it_stopped(tmp_path, swingup_data):
    _train(swingup_data, tmp_path / "a", steps_per_epoch=5)
    first = read_checkpoint(tmp_path / "a" / "last.pt")
    _train(
        swingup_data,
        tmp_path / "b",
        steps_per_epoch=3,
        continue_from=tmp_path / "a",
        keep_last=True,
        seed=7,
    )
    then = read_checkpoint(tmp_path / "b" / "last.pt")
    # Adam's moments went on: 5 + 3 steps, not 3 from a fresh optimiser
    steps = {int(s["step"]) for s in then["optimizer"]["state"].values()}
    assert steps == {8}, steps
    # the statistics are the first run's (another split would refit others)
    for key in ("in_mean", "in_std", "out_mean", "out_std"):
        torch.testing.assert_close(then["state_dict"][key], first["state_dict"][key])
    # the weights moved on from the first run's, and the newest act (keep_last)
    w = "trunk.0.weight"
    assert not torch.equal(then["state_dict"][w], first["state_dict"][w])
    kept = world_models.load(tmp_path / "b" / "model.pt")
    torch.testing.assert_close(kept.state_dict()[w], then["state_dict"][w])


def test_continuing_refuses_what_does_not_fit(tmp_path, swingup_data):
    _train(swingup_data, tmp_path / "a", steps_per_epoch=2)
    other = EnsembleCfg(hidden=16, layers=2, members=3, elites=2)
    cfg = TrainWMCfg(
        data=swingup_data,
        out=tmp_path / "b",
        epochs=1,
        steps_per_epoch=1,
        progress=False,
        ensemble=other,
        continue_from=tmp_path / "a",
    )
    with pytest.raises(ValueError, match="other settings cannot be continued"):
        train_world_model(cfg)
    with pytest.raises(ValueError, match="give one of them"):
        _train(
            swingup_data,
            tmp_path / "c",
            steps_per_epoch=1,
            continue_from=tmp_path / "a",
            init=tmp_path / "a" / "model.pt",
        )
