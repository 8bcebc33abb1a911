"""`python run.py bench isaaclab`: our Isaac Lab adapter beside Isaac Lab's own env.

The same Isaac Lab task and actions are stepped through Isaac Lab's `DirectRLEnv`
(actions scaled to its units by hand) and through `envs.isaaclab.IsaacLabEnv`
(our batched protocol: actions in [-1, 1], `final_obs`, the episode bookkeeping),
in interleaved rounds; the ratio is the adapter's overhead. Runs in Isaac Lab's
own environment (`python -m sim.isaaclab_setup`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from agents.bench.common import SuiteCfg, keep


@dataclass
class IsaacLabBenchCfg(SuiteCfg):
    """`bench isaaclab`: steps/s of an Isaac Lab task through our adapter and bare."""

    task: str = "Isaac-Cartpole-Direct"
    """Isaac Lab task (its gym id)."""
    num_envs: int = 1024
    """Parallel envs of the task."""
    steps: int = 200
    """Timed steps per round."""
    warmup: int = 20
    """Untimed steps before each round."""
    device: str = "cpu"
    """Device of the Isaac Lab simulation."""


def bench(cfg: IsaacLabBenchCfg) -> dict[str, Any]:
    """Measure both and print the adapter's overhead."""
    res = measure(cfg)
    rate = res["steps_per_s"]
    print(
        f"{res['task']}, N = {res['num_envs']} on {res['device']}: Isaac Lab env "
        f"{rate['isaaclab']:,.0f} steps/s, through our adapter {rate['adapter']:,.0f} "
        f"steps/s (overhead {100 * res['adapter_overhead']:.1f}%)"
    )
    return keep(res, cfg.json)


def measure(cfg: IsaacLabBenchCfg) -> dict[str, Any]:
    """Steps/s of Isaac Lab's own env and of our adapter around the same env, on the
    same actions, in interleaved rounds (median reported): the adapter's overhead."""
    from envs.isaaclab import make

    env = make(cfg.task, cfg.num_envs, cfg.seed, device=cfg.device)
    raw = env.unwrapped
    try:
        gen = torch.Generator().manual_seed(cfg.seed)
        actions = torch.rand(cfg.steps, cfg.num_envs, env.action_dim, generator=gen) * 2 - 1
        actions = actions.to(cfg.device)
        peers = {
            "isaaclab": lambda a: raw.step(a * env._act_scale + env._act_offset),
            "adapter": env.step,
        }
        times: dict[str, list[float]] = {k: [] for k in peers}
        for _ in range(cfg.rounds):
            for name, step in peers.items():
                for k in range(cfg.warmup):
                    step(actions[k % cfg.steps])
                began = time.perf_counter()
                for k in range(cfg.steps):
                    step(actions[k])
                times[name].append(time.perf_counter() - began)
        rate = {k: cfg.num_envs * cfg.steps / statistics.median(v) for k, v in times.items()}
        return {
            "task": cfg.task,
            "num_envs": cfg.num_envs,
            "device": cfg.device,
            "steps_per_s": rate,
            "adapter_overhead": 1.0 - rate["adapter"] / rate["isaaclab"],
        }
    finally:
        env.close()
