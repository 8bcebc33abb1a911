"""Data shared by the world-model tests: real swing-up episodes of the scripted
expert with noise, collected once per session."""

from __future__ import annotations

import pytest
import torch

from agents.jobs.collect import CollectCfg, collect


@pytest.fixture(scope="session")
def swingup_data(tmp_path_factory):
    """12 episodes of 500 steps of `cartpole_swingup` (expert + noise std 0.3)."""
    out = tmp_path_factory.mktemp("swingup") / "data"
    collect(
        CollectCfg(
            task="cartpole_swingup",
            num_envs=6,
            episodes=12,
            episode_length=500,
            policy="expert+noise",
            noise_std=0.3,
            seed=1,
            out=out,
            progress=False,
        )
    )
    return out


def away_from_data(obs: torch.Tensor) -> torch.Tensor:
    """Cart-pole observations `[..., 5]` moved where no swing-up episode went: the cart
    5 units off the rail, the velocities six times over."""
    away = obs.clone()
    away[..., 0] += 5.0
    away[..., 3:] *= 6.0
    return away
