"""One shard file: the episodes of a dataset written as one robomimic-layout HDF5 file.

`Episode` is a finished episode as numpy arrays; `write_shard` writes a list of them
as `data/demo_<index>` groups (the layout `sim.data.dataset` describes) and fsyncs
the file. The dataset writer calls it in process or through its writer process
(`sim.data.shard_writer`); it imports no more of the project than `sim.data.atomic`.

Every byte that holds data is checksummed, so a damaged file reads as an error,
never as wrong numbers: every array is chunked with HDF5's Fletcher-32 filter (a
step array is one chunk, frames one chunk each; empty and scalar arrays, which
cannot be chunked, are stored compactly in their object header), the file is in
the HDF5 1.10 format (`libver="v110"`), whose superblock, object headers
(attributes included) and indexes carry checksums, and the `env_args` attribute
is a fixed-length string, kept in its object header (a variable-length string
would lie in the unchecked global heap). HDF5 1.10 or newer reads these files.

HDF5 cannot fail a write cleanly (on a full disk it crashed), so a shard is built
in memory and written to disk by Python, whose failed write is an OSError naming
the file.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sim.data.atomic import write_error


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
    at_goal: np.ndarray | None = None  # bool [T], a goal task's: at its goal after step t
    attrs: dict[str, Any] = field(default_factory=dict)  # randomization, policy parameters

    def __len__(self) -> int:
        return len(self.actions)


# ---------------------------------------------------------------------- writing


def write_shard(
    path: Path, episodes: list[Episode], env_args: dict[str, Any], compression: str
) -> None:
    """Write `episodes` as one robomimic-layout file at `path` and fsync it. A failed
    write (a full disk) removes what it wrote and raises an OSError naming `path`."""
    image = shard_image(episodes, env_args, compression)
    try:
        with open(path, "wb") as f:
            f.write(image)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        Path(path).unlink(missing_ok=True)
        raise write_error(path, err) from err


def shard_image(episodes: list[Episode], env_args: dict[str, Any], compression: str) -> memoryview:
    """The bytes of the shard file of `episodes`, built in memory (HDF5 never writes
    to disk itself); the file's compressed bytes are held once, beside the episodes."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver=LIBVER) as f:
        data = f.create_group("data")
        for episode in episodes:
            _write_episode(data, episode, compression)
        data.attrs["total"] = sum(len(e) for e in episodes)
        # fixed length: stored (and checksummed) in the object header; json.loads
        # reads the bytes h5py returns as it reads a str
        data.attrs["env_args"] = np.bytes_(json.dumps(env_args).encode())
    return buffer.getbuffer()


LIBVER = ("v110", "v110")
"""HDF5 file format of the shards: 1.10's checksummed metadata, readable by HDF5 1.10+."""


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
    if ep.at_goal is not None:
        _put(demo, "at_goal", ep.at_goal)
    if ep.pixels is not None:
        chunks = (1, *ep.pixels.shape[1:])  # one frame per chunk: cheap random access
        for group, frames in ((obs, ep.pixels[:-1]), (next_obs, ep.pixels[1:])):
            if not frames.size:
                _put(group, "pixels", frames)
                continue
            group.create_dataset(
                "pixels", data=frames, chunks=chunks, compression=compression, fletcher32=True
            )


def _put(group: h5py.Group, name: str, array: np.ndarray) -> None:
    """A dataset through h5py's low-level API, with the dataspace, type and creation
    properties of each (shape, dtype) made once: the same file contents as
    `create_dataset(name, data=array, chunks=array.shape, fletcher32=True)` at
    half its cost per call, which matters at eight datasets per episode. The array
    is one checksummed chunk; an empty or scalar one (which HDF5 cannot chunk) is
    stored in the dataset's object header, whose checksum covers it."""
    array = np.asarray(array, order="C")  # (ascontiguousarray makes scalars 1-d)
    key = (array.shape, array.dtype.str)
    if key not in _SPACES:
        if len(_SPACES) > 256:
            _SPACES.clear()
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_obj_track_times(False)  # as h5py's create_dataset: same data, same bytes
        if array.size and array.ndim:  # one chunk, checksummed
            dcpl.set_chunk(array.shape)
            dcpl.set_fletcher32()
        else:  # empty or scalar: kept in the (checksummed) object header
            dcpl.set_layout(h5py.h5d.COMPACT)
        _SPACES[key] = (
            h5py.h5s.create_simple(array.shape) if array.ndim else h5py.h5s.create(h5py.h5s.SCALAR),
            h5py.h5t.py_create(array.dtype, logical=True),
            dcpl,
        )
    space, dtype, dcpl = _SPACES[key]
    dataset = h5py.h5d.create(group.id, name.encode(), dtype, space, dcpl=dcpl)
    if array.size:
        dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, array)


_SPACES: dict[tuple, tuple] = {}
