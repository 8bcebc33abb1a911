"""`python run.py --seeds 0 1 2 3`: one closed-loop run per seed, one after the other
or as Ray tasks (`--ray`), and one summary over them (`<out>/summary.json`): mean,
sample std and Student-t 95% confidence interval of the final and best real
returns, the final gap, and the real return at every iteration all runs
finished."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

from agents.jobs.loop import LoopCfg
from sim.data.atomic import write_json_atomic

# Student t quantiles t_{0.975, df}: the half-width of a 95% confidence interval of a
# mean of n = df + 1 values is t * std / sqrt(n); 1.96 (the normal's) beyond df 30.
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    21: 2.080,
    22: 2.074,
    23: 2.069,
    24: 2.064,
    25: 2.060,
    26: 2.056,
    27: 2.052,
    28: 2.048,
    29: 2.045,
    30: 2.042,
}


def mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean, sample std and 95% confidence interval (Student t) of `values`."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {
            "mean": mean,
            "std": float("nan"),
            "ci95": [float("nan")] * 2,
            "n": n,
            "values": values,
        }
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = _T975.get(n - 1, 1.96) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n, "values": values}


def aggregate_seeds(summaries: dict[int, dict[str, Any]], out: Path) -> dict[str, Any]:
    """One summary of several seeds' runs: mean and 95% CI of their final and best real
    returns, final gap, and of the curve's real return at every iteration they all
    finished; written to `out/summary.json`."""
    seeds = sorted(summaries)
    runs = [summaries[s] for s in seeds]
    common = min(len(r["curve"]) for r in runs)
    curve = [
        {
            "env_steps": runs[0]["curve"][i]["env_steps"],
            "real_return": mean_ci([r["curve"][i]["real_return"] for r in runs]),
        }
        for i in range(common)
    ]
    summary = {
        "task": runs[0]["task"],
        "agent": runs[0]["agent"],
        "model": runs[0]["model"],
        "seeds": seeds,
        "finished": all(r["finished"] for r in runs),
        "env_steps": runs[0]["curve"][common - 1]["env_steps"],
        "final_real_return": mean_ci([r["final_real_return"] for r in runs]),
        "best_real_return": mean_ci([r["best_real_return"] for r in runs]),
        "final_gap": mean_ci([r["final_gap"] for r in runs]),
        "curve": curve,
        "runs": {str(s): str(out / f"seed_{s}") for s in seeds},
        "out": str(out),
    }
    write_json_atomic(out / "summary.json", summary)
    return summary


def seed_configs(cfg: LoopCfg) -> tuple[Path, dict[int, LoopCfg]]:
    """The base output directory and each seed's run settings (`<out>/seed_<s>/`)."""
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"--seeds repeats a seed: {cfg.seeds}")
    out = cfg.out
    if out is None and cfg.resume:
        raise ValueError("--resume needs the --out of the runs to continue")
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path("runs/loop") / f"{cfg.task}-{cfg.agent}-{cfg.model}-{stamp}-seeds"
    # with --ray the seeds are the Ray tasks, each collecting in its own process
    runs = {
        s: dataclasses.replace(
            cfg,
            seed=s,
            seeds=(),
            out=out / f"seed_{s}",
            ray=False,
            progress=cfg.progress and not cfg.ray,
        )
        for s in cfg.seeds
    }
    return out, runs


def run_seeds(cfg: LoopCfg, run_one) -> dict[str, Any]:
    """`run_one(cfg)` (the closed loop) for each of `cfg.seeds`, one after the other or
    with --ray as Ray tasks; then the summary over them (`aggregate_seeds`)."""
    out, runs = seed_configs(cfg)
    if cfg.ray:
        from agents.jobs.ray_collect import connect, submit

        ray = connect(cfg.ray_address, "--seeds --ray", cfg.device, cfg.worker_gpus)
        refs = submit(
            ray, run_one, [(c,) for c in runs.values()], gpus=cfg.worker_gpus, device=cfg.device
        )
        summaries = dict(zip(runs, ray.get(refs), strict=True))
    else:
        summaries = {s: run_one(c) for s, c in runs.items()}
    return aggregate_seeds(summaries, out)
