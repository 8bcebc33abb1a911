"""`torchrun --nproc-per-node 2 run.py train-wm`: two CPU processes (gloo), each on
its half of every global batch with DDP averaging the gradients, train the model
that one process trains on the same global batches; only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from world_models.train import TrainWMCfg, _shard, _train, train_world_model

ROOT = Path(__file__).resolve().parents[2]
ARGS = (
    "--epochs",
    "2",
    "--steps-per-epoch",
    "3",
    "--ensemble.batch-size",
    "32",
    "--joint.batch-size",
    "8",
    "--cascaded.batch-size",
    "8",
    "--no-progress",
)


def _torchrun(data: Path, model: str, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "run.py",
        "train-wm",
        "--data",
        str(data),
        "--model",
        model,
        "--out",
        str(out),
        *ARGS,
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _single(data: Path, model: str, out: Path) -> None:
    cfg = TrainWMCfg(data=data, model=model, out=out, epochs=2, steps_per_epoch=3, progress=False)
    cfg.ensemble.batch_size, cfg.joint.batch_size, cfg.cascaded.batch_size = 32, 8, 8
    train_world_model(cfg)


def _losses(out: Path) -> dict[str, list[float]]:
    runs = list((out / "tb").iterdir())
    assert len(runs) == 1  # one writer: rank 0
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    return {
        tag: [e.value for e in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
        if tag.startswith(("losses/", "val/"))
    }


@pytest.mark.parametrize("model", ["ensemble", "joint", "cascaded"])
def test_two_processes_train_what_one_trains_on_the_same_global_batches(
    swingup_data, tmp_path, model
):
    """The ensemble's loss is a plain mean over equal halves; the WAMs' are means over
    the valid steps of their windows, which the halves hold unequal numbers of near
    episode ends, so they divide by the global batch's count: either way the halves'
    averaged gradient is the whole batch's, equal to float rounding."""
    _torchrun(swingup_data, model, tmp_path / "two")
    _single(swingup_data, model, tmp_path / "one")
    two, one = _losses(tmp_path / "two"), _losses(tmp_path / "one")
    assert two.keys() == one.keys() and all(len(v) == 2 for v in one.values())  # 2 epochs
    for tag in one:
        assert two[tag] == pytest.approx(one[tag], rel=1e-4, abs=1e-6), tag
    a = torch.load(tmp_path / "two" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "one" / "model.pt", weights_only=True)["state_dict"]
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "last.pt",
        "model.pt",
        "report.json",
        "tb",
    ]


def test_a_global_batch_splits_into_each_members_share_per_process(swingup_data, tmp_path):
    idx = torch.arange(8)  # two members' rows, 4 each
    assert _shard(idx, 2, 0, 2).tolist() == [0, 1, 4, 5]
    assert _shard(idx, 2, 1, 2).tolist() == [2, 3, 6, 7]
    assert torch.equal(_shard(idx, 2, 0, 1), idx)
    cfg = TrainWMCfg(data=swingup_data, out=tmp_path, epochs=1, progress=False)
    cfg.ensemble.batch_size = 33
    with pytest.raises(ValueError, match="batch size 33 does not split over 2 processes"):
        _train(cfg, 0, 2, "cpu")
