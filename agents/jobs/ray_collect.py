"""`python run.py collect --ray`: Ray workers record one dataset together; `run_collect`
(the `collect` command) runs this or the in-process collector (`agents.jobs.collect`).

Episode e of a run is a function of (settings, seed, e) alone (`agents.jobs.collect`),
so the run's episodes can be split among workers in any way without changing what
is recorded. Worker k (of K) records episodes k, k + K, k + 2K, ... with its own
batched env, as `collect --resume` into its own dataset directory
`out/workers/<k>/`: its shards are committed atomically as they finish.

A worker is a Ray task with retries: if its process dies (a node lost, a process
killed), Ray runs it again, and the new attempt resumes the worker's directory, so
it records exactly the episodes that were not committed; nothing finished is lost
or recorded twice. When every worker is done, `out/index.json` lists all their
shards (paths relative to `out`), and the loaders read `out` as one dataset, the
same as an in-process run of the same settings would have written. A run that
was stopped is continued with `--resume --ray` (any number of workers: each
episode index is recorded once, wherever it is already committed).

The driver shows progress from the workers' indexes; `--address` joins a running
Ray cluster (`ray start --head` on one machine, `ray start --address HEAD:6379`
on the others), where every node needs this package installed.

GPU workers: `--worker-gpus G --device cuda` reserves G GPUs for each worker (a
fraction shares one GPU among several), and each runs its env on the GPU Ray gave
it (Ray sets the worker's CUDA_VISIBLE_DEVICES, so "cuda" is that GPU). A worker
that Ray gave a GPU its torch cannot see stops with an error naming the GPU and
the node, before it records anything.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agents.jobs.collect import CollectCfg, collect
from sim.data.atomic import write_bytes_atomic
from sim.data.dataset import INDEX, DatasetError, read_index, write_index

WORKERS = "workers"
RETRIES = 3  # attempts after the first when a worker's process dies


def check_devices(device: str, gpus: float) -> None:
    """Refuse a device and GPU reservation of Ray tasks that cannot work together."""
    if gpus < 0:
        raise ValueError(f"--worker-gpus must be >= 0, got {gpus}")
    on_gpu = device.startswith("cuda")
    if gpus and not on_gpu:
        raise ValueError(
            f"--worker-gpus {gpus} reserves GPUs for tasks that run on "
            f"{device!r}: pass --device cuda"
        )
    if on_gpu and not gpus:
        raise ValueError(
            f"--device {device} in Ray tasks needs --worker-gpus: Ray shows no "
            "GPU to a task that reserves none"
        )


def connect(address: str | None, what: str = "--ray", device: str = "cpu", gpus: float = 0.0):
    """The `ray` module, connected to the cluster at `address` (None: a Ray instance
    started on this machine) unless already, for tasks that run on `device` and
    reserve `gpus` GPUs each (checked first, `check_devices`); an ImportError naming
    the extra if Ray is not installed."""
    check_devices(device, gpus)
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"{what} needs Ray: pip install -e '.[dist]'") from err
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray


def _on_reserved_gpu(fn, device: str, *args):
    """`fn(*args)` in a Ray task that reserved GPUs, once `device` is one of them."""
    import ray
    import torch

    ids = ray.get_gpu_ids()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = torch.device(device).index or 0
    if index >= count:
        raise RuntimeError(
            f"Ray gave this task GPU(s) {ids} on {socket.gethostname()} (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}), but torch there sees {count} CUDA "
            f"device(s), so {device!r} does not exist: check the node's CUDA driver and torch "
            "build, and the GPUs it declared to Ray (ray start --num-gpus)"
        )
    return fn(*args)


def submit(
    ray, fn, calls, *, cpus: float = 1.0, gpus: float = 0.0, device: str = "cpu", retries: int = 0
) -> list:
    """`fn(*args)` for each `args` of `calls` as Ray tasks reserving `cpus` CPUs and
    `gpus` GPUs each (`connect` checked them); with GPUs each task checks that
    `device` is one Ray gave it. Returns their object refs."""
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=retries)
    if gpus:
        remote = task(_on_reserved_gpu)
        return [remote.remote(fn, device, *args) for args in calls]
    remote = task(fn)
    return [remote.remote(*args) for args in calls]


def worker_dir(out: Path, k: int) -> Path:
    return Path(out) / WORKERS / f"{k:03d}"


def shares(episodes: int, workers: int) -> list[list[int]]:
    """Episode indices of each worker: k, k + K, k + 2K, ..."""
    return [list(range(k, episodes, workers)) for k in range(workers)]


def _worker_indexes(out: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(directory, index) of every worker directory of `out` that has committed an index
    (one that has not yet is skipped; a damaged index is an error, never left out)."""
    for sub in sorted((out / WORKERS).glob("[0-9][0-9][0-9]")):
        if (sub / INDEX).exists():
            yield sub, read_index(sub)


def _existing(out: Path) -> set[int]:
    """Episodes already committed in any worker directory of `out` (a continued run)."""
    return {e for _, index in _worker_indexes(out) for s in index["shards"] for e in s["episodes"]}


def _record(cfg: CollectCfg, k: int, share: list[int], policy_fn=None) -> dict[str, float]:
    """One worker's part: its episodes into its own directory (resumed if present)."""
    out = worker_dir(cfg.out, k)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out.with_suffix(".pid"), str(os.getpid()).encode())  # who records it
    part = dataclasses.replace(
        cfg,
        out=out,
        ray=False,
        episode_ids=tuple(share),
        resume=(out / INDEX).exists(),
        progress=False,
    )
    return collect(part, policy_fn)


def merge_index(out: Path) -> dict[str, Any]:
    """Write `out/index.json` listing every worker directory's committed shards."""
    shards, env_args, seen = [], None, set()
    for sub, index in _worker_indexes(out):
        if env_args is None:
            env_args = index["env_args"]
        elif index["env_args"] != env_args:
            raise DatasetError(f"{sub}: recorded with other settings than the other workers")
        for shard in index["shards"]:
            twice = seen.intersection(shard["episodes"])
            if twice:
                raise DatasetError(f"{sub}: episodes {sorted(twice)} are recorded twice")
            seen.update(shard["episodes"])
            rel = (sub / shard["file"]).relative_to(out).as_posix()
            shards.append({**shard, "file": rel})
    if env_args is None:
        raise DatasetError(f"{out}: no worker committed anything")
    return write_index(out, env_args, shards, workers=WORKERS)


def _weighted(summaries: list[dict[str, float]], key: str) -> float:
    """`key` of the workers' summaries averaged over their recorded episodes."""
    rows = [(s[key], s["episodes_recorded"]) for s in summaries if s["episodes_recorded"]]
    return sum(v * n for v, n in rows) / sum(n for _, n in rows)


def collect_ray(cfg: CollectCfg, policy_fn=None) -> dict[str, float]:
    """Record `cfg.episodes` episodes with `cfg.workers` Ray tasks; returns a summary
    like `collect`'s. `policy_fn(env)`, as in `collect`, is shipped to the workers
    (it must pickle: capture the agent, not objects holding open files)."""
    if cfg.workers < 1:
        raise ValueError(f"workers must be >= 1, got {cfg.workers}")
    if cfg.episode_ids is not None:
        raise ValueError(
            "--ray splits all the run's episodes among its workers: "
            "episode_ids is for a single worker"
        )
    out = Path(cfg.out)
    if (out / INDEX).exists() and not cfg.resume:
        raise DatasetError(
            f"{out} already holds a dataset; resume it (--resume) or choose "
            "another output path (nothing was changed)"
        )
    if out.exists() and any(out.iterdir()) and not (out / WORKERS).exists():
        raise DatasetError(
            f"{out} exists and holds no Ray workers' data: refusing to write into it"
        )
    ray = connect(cfg.address, "collect --ray", cfg.device, cfg.worker_gpus)
    # each worker takes the missing episodes of its share: an episode committed in any
    # worker directory (also by an earlier run with other workers) is not recorded again
    done = _existing(out)
    groups = [[e for e in share if e not in done] for share in shares(cfg.episodes, cfg.workers)]
    start = time.perf_counter()
    pending = submit(
        ray,
        _record,
        [(cfg, k, g, policy_fn) for k, g in enumerate(groups) if g],
        cpus=cfg.worker_cpus,
        gpus=cfg.worker_gpus,
        device=cfg.device,
        retries=RETRIES,
    )
    bar = tqdm(
        total=cfg.episodes,
        initial=len(done),
        unit="ep",
        disable=not cfg.progress,
        dynamic_ncols=True,
    )
    summaries: list[dict[str, float]] = []
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            summaries += ray.get(ready)
            now = len(_existing(out))
            if now > bar.n:
                bar.update(now - bar.n)
    finally:
        bar.close()
    index = merge_index(out)
    elapsed = time.perf_counter() - start
    transitions = sum(s["transitions"] for s in summaries)
    recorded = sum(s["episodes_recorded"] for s in summaries)
    summary = {
        "episodes_recorded": recorded,
        "episodes_total": index["num_episodes"],
        "transitions": transitions,
        "transitions_per_s": transitions / elapsed if elapsed > 0 else 0.0,
        "seconds": elapsed,
        "workers": cfg.workers,
    }
    if recorded:
        summary["mean_return"] = _weighted(summaries, "mean_return")
        if any("success_rate" in s for s in summaries if s["episodes_recorded"]):
            summary["success_rate"] = _weighted(summaries, "success_rate")
    else:
        summary["mean_return"] = float("nan")
    return summary


def run_collect(cfg: CollectCfg) -> None:
    """Entry point of `python run.py collect`: collect in this process, or with --ray on
    Ray workers, then print the summary."""
    if cfg.worker_gpus and not cfg.ray:
        raise ValueError("--worker-gpus reserves GPUs for Ray workers: it needs --ray")
    summary = collect_ray(cfg) if cfg.ray else collect(cfg)
    print(
        f"{cfg.out}: recorded {summary['episodes_recorded']} episodes "
        f"({summary['transitions']:,} transitions, {summary['transitions_per_s']:,.0f}/s), "
        f"dataset holds {summary['episodes_total']}; mean return of the new episodes "
        f"{summary['mean_return']:.1f}"
        + (f", success rate {summary['success_rate']:.2f}" if "success_rate" in summary else "")
    )
