"""The data bench counts what the loaders deliver: recorded transitions, not the
padding of windows that run past an episode's end."""

from __future__ import annotations

import torch

from agents.bench.data import real_transitions
from agents.jobs.collect import CollectCfg, collect
from sim.data.loader import EpisodeData


def test_windows_count_their_valid_steps_only(tmp_path):
    collect(
        CollectCfg(
            task="pendulum_swingup",
            num_envs=2,
            episodes=4,
            episode_length=20,
            out=tmp_path / "ds",
            progress=False,
        )
    )
    windows = EpisodeData(tmp_path / "ds", sequence_length=16)
    batch = windows.sample(64, torch.Generator().manual_seed(0))
    valid = int(batch["mask"].sum())
    assert 0 < valid < batch["rewards"].numel()  # 16-step windows in 20-step episodes
    assert real_transitions(batch) == valid
    steps = EpisodeData(tmp_path / "ds").sample(64, torch.Generator().manual_seed(0))
    assert real_transitions(steps) == 64
