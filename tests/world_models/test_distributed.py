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

from sim.data.dataset import Dataset
from sim.data.loader import EpisodeData
from world_models.base import KINDS, model_config, shared_batch
from world_models.models.rssm import RssmCfg
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


@pytest.mark.slow  # three torchrun launches; the default suite keeps the RSSM's test below
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


def _halves_grads(rank: int, init: str, model, batch: dict, out: str) -> None:
    """One of two gloo processes: the gradient of the loss of its half of `batch`
    inside `shared_batch(2)`, averaged over the processes as DDP averages them."""
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        half = {k: v.chunk(2)[rank] for k, v in batch.items()}
        with shared_batch(2):
            loss, _ = model.loss(half)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        for g in grads:
            torch.distributed.all_reduce(g)
            g /= 2
        if rank == 0:
            torch.save(grads, out)
    finally:
        torch.distributed.destroy_process_group()


def test_rssm_halves_with_unequal_valid_steps_average_to_the_whole_batch(swingup_data, tmp_path):
    """The RSSM's masked means divide by the global batch's count (`masked_count`): two
    processes holding halves with unequal numbers of valid steps (windows that run
    past an episode's end) average to the gradient of the whole batch. In eval mode
    the latents are their modes, so both sides see the same samples."""
    data = EpisodeData(Dataset(swingup_data), sequence_length=16)
    model = KINDS["rssm"](5, 1, model_config(RssmCfg(deter=32, hidden=32, stoch=4, classes=4)))
    rows = torch.arange(len(data))
    cut = rows[data.__getitems__(rows)["mask"].sum(1) < 15]  # windows that cross an end
    assert len(cut) >= 4
    batch = data.__getitems__(torch.cat((cut[:4], rows[100:104], rows[200:208])))
    mask = batch["mask"].sum(1)
    assert mask[:8].sum() < mask[8:].sum()  # the first half holds fewer valid steps
    model.prepare(data.data)  # the statistics of every transition
    model.eval()
    out = tmp_path / "grads.pt"
    torch.multiprocessing.spawn(
        _halves_grads, args=(f"file://{tmp_path / 'rdv'}", model, batch, str(out)), nprocs=2
    )
    loss, _ = model.loss(batch)
    loss.backward()
    whole = [p.grad for p in model.parameters() if p.grad is not None]
    halves = torch.load(out, weights_only=True)
    assert len(halves) == len(whole) > 0
    for a, b in zip(halves, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
