"""Episode datasets on disk: HDF5 shards in the robomimic layout, plus an index.

A dataset is a directory::

    index.json                  committed shards, their episodes, env_args
    shard_000000.hdf5           data/demo_<e>/{obs/state, next_obs/state, actions, rewards,
    shard_000001.hdf5             dones, terminated, truncated, states[, at_goal,
    ...                           obs/pixels, next_obs/pixels]}; data attrs total, env_args

`at_goal` (a task with a goal, recorded since it was added): per step, whether the
episode is at its goal after that step (the env's `info["at_goal"]`; the episode's
success so far is its running any).

Every shard is a complete robomimic / Isaac Lab-style file: their readers (and
plain h5py) open it as is. `demo_<e>` numbers are global episode indices, unique
across shards, so shards can be concatenated without renaming.

Why shards and an index instead of one growing file: HDF5 is not crash safe (a
process killed while a file is open can leave it unreadable), and SWMR cannot add
groups. Here a shard is written whole to `*.tmp`, fsynced, renamed into place, and
only then listed in the index, itself replaced atomically. A killed writer
therefore leaves every committed episode readable and no partial episode visible;
an unlisted shard (killed between the two renames) is ignored and overwritten on
resume. A write that fails (a full disk) raises an OSError naming the file and
stops the writer, leaving the committed shards and the index as they were.

Damage is detected, never read as data: the shards checksum every byte that
holds data (see `sim.data.shards`) and the index carries the SHA-256 of its
content (`sim.data.atomic.read_json`). Any damaged, truncated or foreign file
reads as a `DatasetError` naming the file (and the episode).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sim.data.atomic import fsync_dir, read_json, write_json_atomic
from sim.data.shards import Episode, write_shard

FORMAT = "wam-sandbox/episodes"
VERSION = 1
INDEX = "index.json"
_SHARD = re.compile(r"shard_(\d{6})\.hdf5")
_STEP_FIELDS = ("actions", "rewards", "dones", "terminated", "truncated", "states")
_LEGACY_FIELDS = {"format", "version", "env_args", "total", "num_episodes", "shards", "workers"}
"""The fields of an index written before indexes had a checksum."""
_HDF5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError)
"""What h5py raises when a file's structure is damaged."""


class DatasetError(ValueError):
    """A dataset path that is missing, corrupt, truncated or not one of ours."""


class DatasetWriter:
    """Append episodes to a dataset directory, one atomically committed shard per flush.

    Args:
        path: the dataset directory (created if missing).
        env_args: JSON-able description of the run (task, backend, seed, config,
            randomization); stored in the index and in every shard.
        resume: continue a dataset that exists; its env_args must match.
        compression: HDF5 filter of pixel datasets ("lzf" for speed, "gzip" for archives).
        background: write shard files in a separate process (`sim.data.shard_writer`),
            overlapping HDF5's per-dataset cost with collection; this process still
            commits them (rename, then index) in order once they are complete.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        env_args: dict[str, Any],
        *,
        resume: bool = False,
        compression: str = "lzf",
        background: bool = False,
    ):
        self.path = Path(path)
        self.env_args = json.loads(json.dumps(env_args))  # JSON-able, and a private copy
        self.compression = compression
        self._pending: list[Episode] = []
        self._in_flight: list[tuple[str, list[Episode]]] = []  # with the background writer
        self._failed = False  # a write failed: commit nothing more
        if (self.path / INDEX).exists():
            if not resume:
                raise DatasetError(
                    f"{self.path} already holds a dataset; resume it (--resume) or "
                    "choose another output path (nothing was changed)"
                )
            index = read_index(self.path)
            if index["env_args"] != self.env_args:
                raise DatasetError(
                    f"{self.path}: cannot resume, it was collected with different settings:"
                    f" {_diff(index['env_args'], self.env_args)}"
                )
            self._shards: list[dict[str, Any]] = index["shards"]
            self._remove_uncommitted()
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise DatasetError(
                    f"{self.path} exists, is not empty and has no {INDEX}: refusing to "
                    "write a dataset into it"
                )
            self.path.mkdir(parents=True, exist_ok=True)
            self._shards = []
            self._write_index()
        self.committed: set[int] = {e for s in self._shards for e in s["episodes"]}
        if any(_SHARD.fullmatch(s["file"]) is None for s in self._shards):
            raise DatasetError(
                f"{self.path}: its shards lie in Ray workers' directories "
                "(collect --ray): continue it with --ray --resume"
            )
        numbers = [int(_SHARD.fullmatch(s["file"])[1]) for s in self._shards]
        self._next_shard = 1 + max(numbers, default=-1)
        self._worker = None
        if background:
            from sim.data.shard_writer import ShardWriterProcess

            self._worker = ShardWriterProcess()

    def _remove_uncommitted(self) -> None:
        """Delete temporaries and shards the index does not list (a killed writer's)."""
        listed = {s["file"] for s in self._shards}
        for entry in self.path.iterdir():
            if entry.name.endswith(".tmp") or (
                _SHARD.fullmatch(entry.name) and entry.name not in listed
            ):
                entry.unlink()

    @property
    def num_pending(self) -> int:
        return len(self._pending)

    def add(self, episode: Episode) -> None:
        """Queue a finished episode; it is on disk after the next `flush`."""
        queued = {e.index for e in self._pending}
        queued.update(e.index for _, batch in self._in_flight for e in batch)
        if episode.index in self.committed or episode.index in queued:
            raise DatasetError(f"{self.path}: episode {episode.index} is already recorded")
        self._pending.append(episode)

    def flush(self, wait: bool = False) -> None:
        """Turn every queued episode into one new shard. With the background writer the
        shard is committed once written (see `poll`); `wait` blocks until then."""
        self._check_usable()
        try:
            if self._pending:
                name = f"shard_{self._next_shard:06d}.hdf5"
                self._next_shard += 1
                episodes = sorted(self._pending, key=lambda e: e.index)
                self._pending = []
                tmp = self.path / (name + ".tmp")
                if self._worker is None:
                    write_shard(tmp, episodes, self.env_args, self.compression)
                    self._commit(name, episodes)
                    return
                try:
                    self._worker.submit(tmp, episodes, self.env_args, self.compression)
                except RuntimeError:  # the writer stopped: its answers say why
                    self._receive(keep=0)  # commits what it finished, raises its error
                    raise
                self._in_flight.append((name, episodes))
            # wait for all (`wait`), else bound what is held in flight to two shards
            self._receive(keep=0 if wait else 2)
        except Exception:  # a failed write (not Ctrl-C: `close` still commits then)
            self._failed = True
            raise

    def poll(self, keep: int | None = None) -> None:
        """Commit the shards the background writer has finished. With `keep`, first
        wait until at most `keep` shards are still being written."""
        self._check_usable()
        try:
            self._receive(keep)
        except Exception:
            self._failed = True
            raise

    def _check_usable(self) -> None:
        if self._failed:
            raise DatasetError(f"{self.path}: a write failed before; the writer has stopped")

    def _receive(self, keep: int | None) -> None:
        while self._in_flight:
            must_wait = keep is not None and len(self._in_flight) > keep
            if not must_wait and not self._worker.ready():
                return
            written = self._worker.result()  # raises if the worker failed
            name, episodes = self._in_flight.pop(0)
            if written != str(self.path / (name + ".tmp")):
                raise DatasetError(f"{self.path}: the shard writer wrote {written}, not {name}")
            self._commit(name, episodes)

    def _commit(self, name: str, episodes: list[Episode]) -> None:
        """Rename a complete, fsynced temporary shard into place, then list it."""
        os.replace(self.path / (name + ".tmp"), self.path / name)
        fsync_dir(self.path)
        self._shards.append(
            {
                "file": name,
                "episodes": [e.index for e in episodes],
                "samples": int(sum(len(e) for e in episodes)),
            }
        )
        self._write_index()
        self.committed.update(e.index for e in episodes)

    def _write_index(self) -> None:
        write_index(self.path, self.env_args, self._shards)

    def close(self) -> None:
        """Commit everything queued or in flight, then stop the background writer. After
        a failed write (whose error was raised) it commits nothing more."""
        try:
            if not self._failed:
                self.flush(wait=True)
        finally:
            if self._worker is not None:
                self._worker.close()
                self._worker = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(changed)


# ---------------------------------------------------------------------- reading
def write_index(
    path: str | os.PathLike, env_args: dict[str, Any], shards: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """Replace the index of the dataset directory `path` atomically: `shards` (file,
    episodes, samples each) with their totals, and `extra` fields; returns it."""
    index = {
        "format": FORMAT,
        "version": VERSION,
        "env_args": env_args,
        "total": int(sum(s["samples"] for s in shards)),
        "num_episodes": int(sum(len(s["episodes"]) for s in shards)),
        "shards": shards,
        **extra,
    }
    write_json_atomic(Path(path) / INDEX, index, checksum=True, indent=1)
    return index


def read_index(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed, checked index of a dataset directory (its checksum verified)."""
    path = Path(path)
    file = path / INDEX
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset")
    if not file.exists():
        raise DatasetError(f"{path}: not a wam-sandbox dataset (no {INDEX})")
    try:
        index = read_json(file, legacy=_LEGACY_FIELDS)
    except ValueError as err:
        problem = str(err).removeprefix(f"{file}: ").removeprefix("corrupt: ")
        raise DatasetError(f"{file}: corrupt index ({problem})") from err
    if index.get("format") != FORMAT:
        raise DatasetError(f"{file}: not a wam-sandbox dataset index (format is not {FORMAT!r})")
    if index.get("version") != VERSION:
        raise DatasetError(
            f"{file}: dataset version {index.get('version')!r}, this release reads {VERSION}"
        )
    return index


class Dataset:
    """Read access to a dataset directory (or a single robomimic-layout HDF5 file).

    `episodes` lists global episode indices in order; `episode(e)` loads one whole.
    Files are opened lazily and per process, so the object can be handed to
    DataLoader workers. A damaged, truncated or foreign file raises `DatasetError`
    naming it (and the episode), whatever h5py raised.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._handles: dict[str, h5py.File] = {}
        self._pid = os.getpid()
        if self.path.is_file():
            files = {self.path.name: None}
            self.env_args = self._single_file_args()
            self.total = 0
        else:
            index = read_index(self.path)
            try:
                self.env_args = index["env_args"]
                self.total = int(index["total"])
                files = {s["file"]: [int(e) for e in s["episodes"]] for s in index["shards"]}
            except (KeyError, TypeError, ValueError) as err:
                raise DatasetError(
                    f"{self.path / INDEX}: corrupt index ({type(err).__name__}: {err})"
                ) from err
        self._where: dict[int, str] = {}
        for name, listed in files.items():
            for e in listed if listed is not None else self._demos(name):
                self._where[e] = name
        if self.path.is_file():
            self.total = sum(self.length(e) for e in self._where)
        self.episodes = sorted(self._where)

    def _file(self, name: str) -> Path:
        return self.path / name if self.path.is_dir() else self.path

    @contextmanager
    def reading(self, e: int | None = None, name: str | None = None) -> Iterator[None]:
        """Inside, what h5py raises for a damaged file (of episode `e`, or named
        `name`) is a `DatasetError` naming the file and the episode."""
        try:
            yield
        except DatasetError:
            raise
        except _HDF5_ERRORS as err:
            name = name if e is None else self._where[e]
            what = "damaged" if e is None else f"demo_{e} is damaged"
            raise DatasetError(f"{self._file(name)}: {what} ({type(err).__name__}: {err})") from err

    def _single_file_args(self) -> dict[str, Any]:
        with self.reading(name=self.path.name):
            f = self._open(self.path.name)
            raw = f["data"].attrs.get("env_args", "{}")
        try:
            return json.loads(raw)
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{self.path}: corrupt env_args attribute ({err})") from err

    def _demos(self, name: str) -> list[int]:
        demos = []
        with self.reading(name=name):
            keys = list(self._open(name)["data"])
        for key in keys:
            if not key.startswith("demo_") or not key[5:].isdigit():
                raise DatasetError(f"{self._file(name)}: unexpected group data/{key}")
            demos.append(int(key[5:]))
        return demos

    def _open(self, name: str) -> h5py.File:
        if self._pid != os.getpid():  # a forked worker: never share HDF5 handles
            self._handles, self._pid = {}, os.getpid()
        if name not in self._handles:
            file = self._file(name)
            if not file.exists():
                raise DatasetError(f"{file}: shard listed in the index is missing")
            try:
                handle = h5py.File(file, "r")
            except _HDF5_ERRORS as err:
                raise DatasetError(f"{file}: corrupt or truncated HDF5 file ({err})") from err
            try:
                has_data = isinstance(handle.get("data"), h5py.Group)
            except _HDF5_ERRORS as err:
                handle.close()
                raise DatasetError(f"{file}: damaged ({type(err).__name__}: {err})") from err
            if not has_data:
                handle.close()
                raise DatasetError(f"{file}: not in the robomimic layout (no 'data' group)")
            self._handles[name] = handle
        return self._handles[name]

    def _group(self, e: int) -> h5py.Group:
        if e not in self._where:
            raise KeyError(f"{self.path}: no episode {e}")
        with self.reading(e):
            group = self._open(self._where[e])["data"].get(f"demo_{e}")
        if group is None:
            raise DatasetError(f"{self._file(self._where[e])}: demo_{e} listed but missing")
        return group

    def __len__(self) -> int:
        return len(self.episodes)

    def length(self, e: int) -> int:
        group = self._group(e)
        with self.reading(e):
            return int(group.attrs["num_samples"])

    def attrs(self, e: int) -> dict[str, Any]:
        group = self._group(e)
        with self.reading(e):
            return {k: _plain(v) for k, v in group.attrs.items()}

    def has_pixels(self) -> bool:
        if not self.episodes:
            return False
        group = self._group(self.episodes[0])
        with self.reading(self.episodes[0]):
            return "pixels" in group["obs"]

    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the recorded frames."""
        if not self.has_pixels():
            raise ValueError(f"{self.path}: the dataset has no pixels")
        group = self._group(self.episodes[0])
        with self.reading(self.episodes[0]):
            return tuple(group["obs/pixels"].shape[1:])

    def episode(self, e: int, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Arrays of episode `e`: obs, next_obs, the step fields, and at_goal and pixels
        if recorded (`keys` selects; pixels are `[T + 1, H, W, 3]`, frame t showing obs t)."""
        group = self._group(e)
        want = keys or ("obs", "next_obs", *_STEP_FIELDS, "at_goal", "pixels")
        out: dict[str, np.ndarray] = {}
        with self.reading(e):
            length = int(group.attrs["num_samples"])
            for key in want:
                if key in ("obs", "next_obs"):
                    out[key] = group[f"{key}/state"][()]
                elif key == "pixels":
                    if "pixels" in group["obs"]:
                        frames = group["obs/pixels"]
                        last = group["next_obs/pixels"][-1:]
                        out[key] = np.concatenate((frames[()], last))
                elif key == "at_goal":
                    if "at_goal" in group:
                        out[key] = group[key][()]
                else:
                    out[key] = group[key][()]
        for key, value in out.items():  # a cheap check of the episode's structure
            steps = value.shape[0] if value.ndim else None
            if steps != length + (key == "pixels"):
                raise DatasetError(
                    f"{self._file(self._where[e])}: demo_{e} is damaged ({key} holds "
                    f"{steps} steps, num_samples says {length})"
                )
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self.episodes)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
