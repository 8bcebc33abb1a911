"""Imagined env throughput beside the real simulator's, in one run.

(h) the real batched env of the task, random actions, N rows;
(i) `ImaginedEnv` over a world model of the same task, the same N and actions.
Without `--wm` a small dataset is collected and a model with the default
architecture trained on the spot (a few seconds): this measures speed, not fidelity.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import envs
import world_models
from agents.collect import CollectCfg, collect
from world_models.imagined_env import ImaginedEnv, ImaginedEnvCfg
from world_models.train import TrainWMCfg, train_world_model


def _rate(env, actions: list[torch.Tensor]) -> float:
    env.step(actions[0])
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    return env.num_envs * len(actions) / (time.perf_counter() - start)


def run_wm_bench(task: str, num_envs: int, steps: int, rounds: int, wm: Path | None, seed: int):
    """Steps/s of (h) and (i); prints them with the ratio i/h."""
    tmp = None
    if wm is None:
        tmp = Path(tempfile.mkdtemp(prefix="wam-bench-wm-"))
        collect(CollectCfg(task=task, num_envs=8, episodes=8, episode_length=200, policy="noise",
                           out=tmp / "data", progress=False, seed=seed))  # fmt: skip
        train_world_model(TrainWMCfg(data=tmp / "data", out=tmp / "wm", epochs=2,
                                     progress=False, seed=seed))  # fmt: skip
        wm = tmp / "wm" / "model.pt"
    model = world_models.load(wm)
    real = envs.make(task, num_envs=num_envs, seed=seed)
    if model.obs_dim != real.observation_dim or model.action_dim != real.action_dim:
        raise ValueError(f"{wm}: the model's dimensions do not match task {task!r}")
    cfg = ImaginedEnvCfg(num_envs=num_envs, seed=seed, termination="never")
    imagined = ImaginedEnv(model, real.reset()[:1].clone(), cfg)
    gen = torch.Generator().manual_seed(seed)
    rates: dict[str, list[float]] = {"real": [], "imagined": []}
    with torch.inference_mode():
        for _ in range(rounds):
            actions = [torch.rand(num_envs, real.action_dim, generator=gen) * 2 - 1
                       for _ in range(steps)]  # fmt: skip
            rates["real"].append(_rate(real, actions))
            rates["imagined"].append(_rate(imagined, actions))
    real.close()
    result = {k: float(np.median(v)) for k, v in rates.items()}
    result["imagined_over_real"] = result["imagined"] / result["real"]
    print(f"bench wm {task}: N={num_envs}, {rounds} interleaved rounds of {steps} steps; median")
    print(f"  (h) real batched env                             {result['real']:>12,.0f} steps/s")
    print(f"  (i) ImaginedEnv, {model.kind} ({model.config['members']} members)"
          f"{'':<10}{result['imagined']:>12,.0f} steps/s")  # fmt: skip
    print(f"  i/h = {result['imagined_over_real']:.2f}")
    return result
