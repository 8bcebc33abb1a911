"""`python run.py bench wm`: imagined env throughput beside the real simulator's, in one run.

(h) the real batched env of the task, random actions, N rows;
(i) `ImaginedEnv` over each world model of the same task (an ensemble and an
    RSSM), the same N and actions, mean predictions.
Without `--wm` a small dataset is collected and one model of each kind, with the
default architecture, trained for a few steps on the spot: this measures speed,
not fidelity. With `--wm` the given checkpoints are measured.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import envs
import world_models
from agents.bench.common import SuiteCfg, keep
from agents.jobs.collect import CollectCfg, collect
from world_models.imagined_env import ImaginedEnv, ImaginedEnvCfg
from world_models.train import TrainWMCfg, train_world_model


@dataclass
class WmBenchCfg(SuiteCfg):
    """`bench wm`: the imagined env of each world model beside the real env."""

    num_envs: int = 1024
    """Parallel rows N of the real and the imagined envs."""
    steps: int = 400
    """Timed steps per round."""
    wm: tuple[Path, ...] = ()
    """World model checkpoints or directories for the imagined envs (none: train a small
    ensemble and RSSM on the spot)."""


def bench(cfg: WmBenchCfg) -> dict:
    """Measure (h) and (i) and print them with their ratios."""
    envs.spec(cfg.task)
    result = run_wm_bench(cfg.task, cfg.num_envs, cfg.steps, cfg.rounds, cfg.wm, cfg.seed)
    return keep(result, cfg.json)


def _rate(env, actions: list[torch.Tensor]) -> float:
    env.step(actions[0])
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    return env.num_envs * len(actions) / (time.perf_counter() - start)


def _quick_models(task: str, seed: int, tmp: Path) -> list[Path]:
    """An ensemble and an RSSM of default size, trained a few steps under `tmp`."""
    collect(
        CollectCfg(
            task=task,
            num_envs=8,
            episodes=8,
            episode_length=200,
            policy="noise",
            out=tmp / "data",
            progress=False,
            seed=seed,
        )
    )
    paths = []
    for kind in ("ensemble", "rssm"):
        train_world_model(
            TrainWMCfg(
                data=tmp / "data",
                model=kind,
                out=tmp / kind,
                epochs=1,
                steps_per_epoch=5,
                progress=False,
                seed=seed,
            )
        )
        paths.append(tmp / kind / "model.pt")
    return paths


def run_wm_bench(
    task: str, num_envs: int, steps: int, rounds: int, wm: list[Path] | None, seed: int
) -> dict:
    """Steps/s of (h) and of (i) for each model; prints them with the ratios i/h."""
    with tempfile.TemporaryDirectory(prefix="wam-bench-wm-") as tmp:
        paths = list(wm) if wm else _quick_models(task, seed, Path(tmp))
        models = [world_models.load(path) for path in paths]
    real = envs.make(task, num_envs=num_envs, seed=seed)
    imagined = {}
    for path, model in zip(paths, models, strict=True):  # from_env checks the dimensions
        name = model.kind + (" (pixels)" if model.sees_pixels else "")
        if name in imagined:  # two models of one kind: tell them apart by their paths
            name = f"{name} {path}"
        cfg = ImaginedEnvCfg(num_envs=num_envs, seed=seed, termination="never", sample=False)
        imagined[name] = ImaginedEnv.from_env(model, real, cfg)
    gen = torch.Generator().manual_seed(seed)
    rates: dict[str, list[float]] = {"real": [], **{k: [] for k in imagined}}
    with torch.inference_mode():
        for _ in range(rounds):
            actions = [
                torch.rand(num_envs, real.action_dim, generator=gen) * 2 - 1 for _ in range(steps)
            ]
            rates["real"].append(_rate(real, actions))
            for name, env in imagined.items():
                rates[name].append(_rate(env, actions))
    real.close()
    median = {k: float(np.median(v)) for k, v in rates.items()}
    result = {"real": median["real"], "imagined": {k: median[k] for k in imagined}}
    result["imagined_over_real"] = {k: median[k] / median["real"] for k in imagined}
    print(f"bench wm {task}: N={num_envs}, {rounds} interleaved rounds of {steps} steps; median")
    print(f"  (h) real batched env{'':<22}{median['real']:>12,.0f} steps/s")
    for name in imagined:
        label = f"(i) ImaginedEnv, {name}"
        print(
            f"  {label:<42}{median[name]:>12,.0f} steps/s   "
            f"i/h = {result['imagined_over_real'][name]:.2f}"
        )
    return result
