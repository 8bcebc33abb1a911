"""`collect --ray` on an Isaac Lab task: two Ray workers, each its own process with
its own Isaac Lab simulation, record the dataset one process records (the same
episodes), read as one dataset. Runs in the Isaac Lab environment, which carries
the `dist` extra (marker `isaac`)."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("isaaclab_tasks", reason="Isaac Lab is not installed here")
ray = pytest.importorskip("ray")

from agents.jobs.collect import CollectCfg, collect  # noqa: E402
from agents.jobs.ray_collect import collect_ray  # noqa: E402
from sim.data.dataset import Dataset, read_index  # noqa: E402
from sim.data.loader import EpisodeData  # noqa: E402
from tests.agents.jobs.test_ray_collect import _same_episodes  # noqa: E402

pytestmark = pytest.mark.isaac


def test_ray_workers_record_isaac_lab_episodes_one_process_records(tmp_path):
    cfg = CollectCfg(
        task="Isaac-Cartpole-Direct",
        backend="isaaclab",
        num_envs=2,
        episodes=6,
        episode_length=40,
        policy="noise",
        seed=5,
        out=tmp_path / "plain",
        progress=False,
    )
    collect(cfg)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = collect_ray(dataclasses.replace(cfg, out=tmp_path / "ray", ray=True, workers=2))
    finally:
        ray.shutdown()
    assert summary["episodes_total"] == summary["episodes_recorded"] == 6
    assert {s["file"].split("/")[1] for s in read_index(tmp_path / "ray")["shards"]} == {
        "000",
        "001",
    }
    _same_episodes(tmp_path / "plain", tmp_path / "ray")
    first = Dataset(tmp_path / "plain")
    assert first.env_args["backend"] == "isaaclab"
    assert len(EpisodeData(tmp_path / "ray")) == sum(
        len(first.episode(e)["actions"]) for e in first.episodes
    )
