"""Data shared by the world-model tests: real swing-up episodes of the scripted
expert with noise, collected once per session."""

from __future__ import annotations

import pytest

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
