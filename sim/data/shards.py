"""One shard file: the episodes of a dataset written as one robomimic-layout HDF5 file.

`Episode` is a finished episode as numpy arrays; `write_shard` writes a list of them
as `data/demo_<index>` groups (the layout `sim.data.dataset` describes) and fsyncs
the file. The dataset writer calls it in process or through its writer process
(`sim.data.shard_writer`), which imports nothing else of the project.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np


@dataclass
class Episode:
    """One finished episode, T agent steps; arrays are numpy, batch-free."""

    index: int  # global episode number: stored as data/demo_<index>
    seed: int  # the episode seed: the env's reset_envs replays it
    obs: np.ndarray  # float32 [T, obs_dim], observation before each action
    next_obs: np.ndarray  # float32 [T, obs_dim], after it; the true final one at the end
    actions: np.ndarray  # float32 [T, act_dim], in [-1, 1]
    rewards: np.ndarray  # float32 [T]
    terminated: np.ndarray  # bool [T]
    truncated: np.ndarray  # bool [T]
    states: np.ndarray  # float64 [T, nq + nv], physics state (qpos, qvel) at each obs
    pixels: np.ndarray | None = None  # uint8 [T + 1, H, W, 3], frame of obs 0..T
    attrs: dict[str, Any] = field(default_factory=dict)  # randomization, policy parameters

    def __len__(self) -> int:
        return len(self.actions)


# ---------------------------------------------------------------------- writing


def write_shard(
    path: Path, episodes: list[Episode], env_args: dict[str, Any], compression: str
) -> None:
    """Write `episodes` as one robomimic-layout file at `path` and fsync it."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for episode in episodes:
            _write_episode(data, episode, compression)
        data.attrs["total"] = sum(len(e) for e in episodes)
        data.attrs["env_args"] = json.dumps(env_args)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _write_episode(data: h5py.Group, ep: Episode, compression: str) -> None:
    demo = data.create_group(f"demo_{ep.index}")
    demo.attrs["num_samples"] = len(ep)
    demo.attrs["seed"] = ep.seed
    for key, value in ep.attrs.items():
        demo.attrs[key] = value
    obs, next_obs = demo.create_group("obs"), demo.create_group("next_obs")
    _put(obs, "state", ep.obs)
    _put(next_obs, "state", ep.next_obs)
    _put(demo, "actions", ep.actions)
    _put(demo, "rewards", ep.rewards)
    _put(demo, "dones", (ep.terminated | ep.truncated).astype(np.uint8))
    _put(demo, "terminated", ep.terminated)
    _put(demo, "truncated", ep.truncated)
    _put(demo, "states", ep.states)
    if ep.pixels is not None:
        chunks = (1, *ep.pixels.shape[1:])  # one frame per chunk: cheap random access
        for group, frames in ((obs, ep.pixels[:-1]), (next_obs, ep.pixels[1:])):
            group.create_dataset("pixels", data=frames, chunks=chunks, compression=compression)


def _put(group: h5py.Group, name: str, array: np.ndarray) -> None:
    """A contiguous dataset through h5py's low-level API, with the dataspace and type
    of each (shape, dtype) made once: the same file contents as
    `create_dataset(name, data=array)` at half its cost per call, which matters at
    eight datasets per episode."""
    array = np.ascontiguousarray(array)
    key = (array.shape, array.dtype.str)
    if key not in _SPACES:
        if len(_SPACES) > 256:
            _SPACES.clear()
        _SPACES[key] = (
            h5py.h5s.create_simple(array.shape),
            h5py.h5t.py_create(array.dtype, logical=True),
        )
    space, dtype = _SPACES[key]
    dataset = h5py.h5d.create(group.id, name.encode(), dtype, space)
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, array)


_SPACES: dict[tuple, tuple] = {}
