"""`bench ray`: collection with 1 and 2 Ray workers beside the in-process collector,
on a local Ray instance it did not start (marker `ray`, extra `dist`)."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_bench_ray_measures_both_worker_counts_beside_the_in_process_collector(local_ray):
    from agents.bench.ray import RayBenchCfg, bench

    cfg = RayBenchCfg(task="cartpole_swingup", num_envs=2, batches=2, episode_length=20, rounds=1)
    result = bench(cfg)
    rates = result["transitions_per_s"]
    assert set(rates) == {"in_process", "ray_1", "ray_2"} and min(rates.values()) > 0
    assert result["ray_2_over_ray_1"] == pytest.approx(rates["ray_2"] / rates["ray_1"])
    assert ray.is_initialized()  # a Ray instance it did not start is left running
