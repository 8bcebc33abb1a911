"""`collect --ray`: Ray workers record the dataset one process records (the same
episodes, bit for bit), read as one dataset; a worker process killed mid-run is
restarted and records exactly its unfinished episodes; GPU reservations are
checked, and GPU workers (where CUDA is) record what one GPU process records. A
local Ray instance is started here (marker `ray`, extra `dist`): with this
machine's GPUs, or, without CUDA, with 2 declared GPUs that torch cannot see."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from agents.jobs.collect import CollectCfg, collect
from sim.data.dataset import Dataset, DatasetError, DatasetWriter, read_index
from sim.data.loader import EpisodeData

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from agents.jobs.ray_collect import check_devices, collect_ray, worker_dir  # noqa: E402

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def local_ray():
    gpus = torch.cuda.device_count() if CUDA else 2  # without CUDA: GPUs torch cannot see
    ray.init(num_cpus=2, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _same_episodes(a, b) -> None:
    first, second = Dataset(a), Dataset(b)
    assert first.episodes == second.episodes
    assert first.env_args == second.env_args
    for e in first.episodes:
        x, y = first.episode(e), second.episode(e)
        assert x.keys() == y.keys()
        for key in x:
            assert np.array_equal(x[key], y[key]), (e, key)
        assert first.attrs(e) == second.attrs(e)


def test_ray_workers_record_the_dataset_one_process_records(local_ray, tmp_path):
    cfg = CollectCfg(
        task="push",
        episodes=7,
        num_envs=2,
        episode_length=20,
        policy="expert+noise",
        seed=4,
        out=tmp_path / "plain",
        progress=False,
    )
    collect(cfg)
    ray_cfg = dataclasses.replace(cfg, out=tmp_path / "ray", ray=True, workers=3)
    summary = collect_ray(ray_cfg)
    assert summary["episodes_total"] == summary["episodes_recorded"] == 7
    _same_episodes(tmp_path / "plain", tmp_path / "ray")
    assert len(EpisodeData(tmp_path / "ray")) == 7 * 20  # the loaders read it as one
    shards = read_index(tmp_path / "ray")["shards"]
    assert {s["file"].split("/")[1] for s in shards} == {"000", "001", "002"}
    # continuing a finished run records nothing; the plain writer refuses to append
    assert collect_ray(dataclasses.replace(ray_cfg, resume=True))["episodes_recorded"] == 0
    with pytest.raises(DatasetError, match="continue it with --ray --resume"):
        DatasetWriter(tmp_path / "ray", Dataset(tmp_path / "ray").env_args, resume=True)
    with pytest.raises(DatasetError, match="already holds a dataset"):
        collect_ray(ray_cfg)


def test_a_killed_worker_is_restarted_and_redoes_only_its_unfinished_episodes(local_ray, tmp_path):
    cfg = CollectCfg(
        task="push",
        episodes=8,
        num_envs=1,
        policy="expert+noise",
        seed=2,
        pixels=32,
        flush_episodes=1,
        out=tmp_path / "ray",
        ray=True,
        workers=2,
        progress=False,
    )
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(collect_ray(cfg)))
    run.start()
    # kill worker 0's process once it has committed some but not all of its 4 episodes
    index, deadline = worker_dir(cfg.out, 0) / "index.json", time.monotonic() + 300
    while time.monotonic() < deadline:
        if index.exists() and 1 <= read_index(index.parent)["num_episodes"] < 4:
            break
        time.sleep(0.02)
    else:
        pytest.fail("worker 0 committed no episode in time")
    pid_file = worker_dir(cfg.out, 0).with_suffix(".pid")
    killed = int(pid_file.read_text())
    os.kill(killed, signal.SIGKILL)
    kept = read_index(index.parent)["num_episodes"]  # what the killed process committed
    run.join(timeout=600)
    assert not run.is_alive() and result["episodes_total"] == 8
    assert int(pid_file.read_text()) != killed  # a new process took over
    assert result["episodes_recorded"] == 8 - kept  # the retry redid only the rest
    collect(dataclasses.replace(cfg, out=tmp_path / "plain", ray=False))
    _same_episodes(tmp_path / "plain", tmp_path / "ray")


def test_policies_scored_as_ray_tasks_equal_the_ones_scored_in_turn(local_ray, tmp_path):
    from agents.jobs.rank import rank_policies
    from world_models.evaluate import EvalWMCfg
    from world_models.models.ensemble import EnsembleCfg
    from world_models.train import TrainWMCfg, train_world_model

    collect(
        CollectCfg(
            task="cartpole_swingup",
            num_envs=4,
            episodes=4,
            episode_length=40,
            policy="expert+noise",
            out=tmp_path / "data",
            progress=False,
        )
    )
    small = EnsembleCfg(hidden=32, layers=2, members=2, elites=1)
    train_world_model(
        TrainWMCfg(
            data=tmp_path / "data", out=tmp_path / "wm", epochs=1, ensemble=small, progress=False
        )
    )
    cfg = EvalWMCfg(
        wm=tmp_path / "wm",
        policies=("expert:0", "expert:0.5", "expert:2"),
        episodes=3,
        seed=4,
        progress=False,
        out=tmp_path / "turn",
    )
    in_turn = rank_policies(cfg)
    parallel = rank_policies(dataclasses.replace(cfg, ray=True, out=tmp_path / "ray"))
    for key in ("policies", "pearson", "spearman", "task", "steps"):
        assert parallel[key] == in_turn[key], key


def test_ray_workers_run_the_warp_backend_too(local_ray, tmp_path):
    pytest.importorskip("mujoco_warp")
    cfg = CollectCfg(
        task="reacher_easy",
        backend="warp",
        episodes=4,
        num_envs=2,
        episode_length=30,
        policy="noise",
        seed=1,
        out=tmp_path / "plain",
        progress=False,
    )
    collect(cfg)
    collect_ray(dataclasses.replace(cfg, out=tmp_path / "ray", ray=True, workers=2))
    _same_episodes(tmp_path / "plain", tmp_path / "ray")
    assert Dataset(tmp_path / "ray").env_args["backend"] == "warp"


def test_device_and_gpu_reservation_must_agree():
    with pytest.raises(ValueError, match="needs --worker-gpus"):
        check_devices("cuda", 0.0)
    with pytest.raises(ValueError, match="pass --device cuda"):
        check_devices("cpu", 0.5)
    with pytest.raises(ValueError, match="must be >= 0"):
        check_devices("cuda", -1.0)
    check_devices("cuda:0", 0.5)
    check_devices("cpu", 0.0)


@pytest.mark.skipif(CUDA, reason="checks GPUs declared to Ray that torch cannot see")
def test_a_worker_given_a_gpu_torch_cannot_see_stops_before_recording(local_ray, tmp_path):
    cfg = CollectCfg(
        task="cartpole_swingup",
        episodes=4,
        num_envs=2,
        episode_length=20,
        out=tmp_path / "ray",
        ray=True,
        workers=2,
        worker_gpus=1.0,
        device="cuda",
        progress=False,
    )
    with pytest.raises(RuntimeError, match=r"Ray gave this task GPU\(s\) \[.+torch there sees 0"):
        collect_ray(cfg)
    assert not list(tmp_path.glob("ray/workers/*/index.json"))  # nothing was recorded


@pytest.mark.gpu
def test_gpu_workers_record_what_one_gpu_process_records(local_ray, tmp_path):
    pytest.importorskip("mujoco_warp")
    cfg = CollectCfg(
        task="reacher_easy",
        backend="warp",
        device="cuda",
        episodes=6,
        num_envs=3,
        episode_length=30,
        policy="expert+noise",
        seed=3,
        out=tmp_path / "plain",
        progress=False,
    )
    collect(cfg)
    gpus = 1.0 / 2 if torch.cuda.device_count() == 1 else 1.0  # both workers at once
    collect_ray(
        dataclasses.replace(cfg, out=tmp_path / "ray", ray=True, workers=2, worker_gpus=gpus)
    )
    first, second = Dataset(tmp_path / "plain"), Dataset(tmp_path / "ray")
    assert first.episodes == second.episodes and first.env_args == second.env_args
    for e in first.episodes:  # the same kernels on the same device; rows differ
        x, y = first.episode(e), second.episode(e)
        for key in ("obs", "actions", "rewards", "states"):
            np.testing.assert_allclose(x[key], y[key], rtol=1e-5, atol=1e-5, err_msg=f"{e} {key}")
