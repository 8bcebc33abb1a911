"""`python run.py bench ray`: collection throughput with Ray workers beside
the in-process collector, in one run on this machine (extra `dist`).

The same task, policy, episodes and envs per collector: (h) `collect` in this
process with its physics threads (`--nthread`, 0: every CPU); (i) `collect --ray`
with 1 and 2 workers, each its own batched env of `--num-envs` envs on one
physics thread and one reserved CPU, splitting the episodes. Each Ray figure is
the median of `--rounds` timed runs after an untimed one that starts the worker
processes (their imports); the time to start Ray itself is shown apart. Ratios:
1 worker over in-process (Ray's overhead) and 2 workers over 1 (the scaling).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.bench.common import keep
from agents.bench.data import CollectionCfg, collect_cfg, with_episode_length
from agents.jobs.collect import CollectCfg, collect


@dataclass
class RayBenchCfg(CollectionCfg):
    """`bench ray`: collection with 1 and 2 Ray workers beside the in-process collector
    (each worker: --num-envs envs on one physics thread)."""


def _cfg(cfg: RayBenchCfg, out: Path, **kw) -> CollectCfg:
    return dataclasses.replace(collect_cfg(cfg, out, cfg.num_envs, batches=cfg.batches), **kw)


def bench(cfg: RayBenchCfg) -> dict:
    cfg = with_episode_length(cfg)
    try:
        import ray
    except ImportError as err:
        raise ImportError("bench ray needs Ray: pip install -e '.[dist]'") from err
    from agents.jobs.ray_collect import collect_ray

    episodes = cfg.num_envs * cfg.batches
    print(
        f"bench ray {cfg.task}: {episodes} episodes of {cfg.episode_length} steps, "
        f"{cfg.num_envs} envs per collector, {cfg.rounds} timed rounds; "
        "median shown"
    )
    root = Path(tempfile.mkdtemp(prefix="wam-bench-ray-"))
    started_here = not ray.is_initialized()
    try:
        start = time.perf_counter()
        if started_here:
            ray.init(include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - start
        rates: dict[str, list[float]] = {"in_process": [], "ray_1": [], "ray_2": []}
        for r in range(cfg.rounds + 1):  # round 0 starts the worker processes, untimed
            for key, workers in (("in_process", 0), ("ray_1", 1), ("ray_2", 2)):
                out = root / f"{key}-{r}"
                if workers:
                    run = _cfg(cfg, out, ray=True, workers=workers, nthread=1)
                    summary = collect_ray(run)
                else:
                    summary = collect(_cfg(cfg, out))
                if r > 0:
                    rates[key].append(summary["transitions"] / summary["seconds"])
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if started_here:
            ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    median = {k: float(np.median(v)) for k, v in rates.items()}
    result = {
        "transitions_per_s": median,
        "rounds_transitions_per_s": rates,
        "ray_start_seconds": startup,
        "ray_1_over_in_process": median["ray_1"] / median["in_process"],
        "ray_2_over_ray_1": median["ray_2"] / median["ray_1"],
    }
    print(f"  {'(h) collect, in process':<44} {median['in_process']:>12,.0f} transitions/s")
    print(f"  {'(i) collect --ray, 1 worker':<44} {median['ray_1']:>12,.0f} transitions/s")
    print(f"  {'(i) collect --ray, 2 workers':<44} {median['ray_2']:>12,.0f} transitions/s")
    print(
        f"  1 worker / in process = {result['ray_1_over_in_process']:.2f}   "
        f"2 workers / 1 = {result['ray_2_over_ray_1']:.2f}   "
        f"(Ray started in {startup:.1f} s)"
    )
    return keep(result, cfg.json)
