"""A full disk: a write that fails raises an error naming the file and the problem,
leaves every committed file (shards, index, checkpoints) as it was, and a collection
stopped by it completes with `--resume` to the dataset of an uninterrupted run.

The file system fills up through `RLIMIT_FSIZE` in a subprocess: writes past the
limit fail with EFBIG ("File too large"; Python ignores SIGXFSZ), as ENOSPC would
on a full disk. Unit tests make a write fail with ENOSPC in process."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sim.data.atomic
import world_models.base
from agents.jobs.collect import CollectCfg, collect
from sim.data.dataset import INDEX, Dataset, DatasetWriter
from tests.sim.data.test_dataset import ARGS, _episode

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = {
    "task": "test_cartpole_falls",  # episodes of different lengths: shards of different sizes
    "num_envs": 3,
    "episodes": 8,
    "policy": "noise",
    "seed": 1,
    "flush_episodes": 1,
}


def _run(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _same_episodes(ds: Dataset, ref: Dataset, episodes: list[int]) -> None:
    for e in episodes:
        got, want = ds.episode(e), ref.episode(e)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"episode {e} {key}")
            assert got[key].dtype == want[key].dtype
        assert ds.attrs(e) == ref.attrs(e)


class _FullDisk:
    """`open` for `sim.data.atomic` whose files reject writes with ENOSPC once armed
    (for names ending in `suffix`)."""

    def __init__(self, suffix: str):
        self.suffix, self.armed = suffix, False

    def __call__(self, path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)  # noqa: SIM115 - returned
        if self.armed and "w" in mode and str(path).endswith(self.suffix):
            return _Full(file)
        return file


class _Full:
    """A file opened for writing on a full disk."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_a_failed_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    first = {"format": world_models.base.FORMAT, "w": torch.arange(4.0)}
    world_models.base.save_atomic(first, path)
    before = path.read_bytes()
    full = _FullDisk(".tmp")
    monkeypatch.setattr(sim.data.atomic, "open", full, raising=False)
    full.armed = True
    second = {"format": world_models.base.FORMAT, "w": torch.arange(1000.0)}
    with pytest.raises(OSError, match=r"model\.pt: could not be written: No space left") as err:
        world_models.base.save_atomic(second, path)
    assert err.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]
    got = world_models.base.read_file(path, world_models.base.FORMAT, "world model")
    assert torch.equal(got["w"], first["w"])


def test_a_failed_index_write_keeps_the_committed_index(tmp_path, monkeypatch):
    """The index is the commit: a shard renamed into place whose index write then
    fails is not in the dataset, and a resumed writer removes it."""
    path = tmp_path / "ds"
    full = _FullDisk(INDEX + ".tmp")
    monkeypatch.setattr(sim.data.atomic, "open", full, raising=False)
    writer = DatasetWriter(path, ARGS)
    for e in (0, 1):
        writer.add(_episode(e, 3))
    writer.flush()
    index = (path / INDEX).read_bytes()
    full.armed = True
    writer.add(_episode(2, 3))
    with pytest.raises(OSError, match=r"index\.json: could not be written: No space left on"):
        writer.flush()
    writer.close()  # commits nothing more, raises nothing more
    assert (path / INDEX).read_bytes() == index
    assert sorted(p.name for p in path.iterdir()) == [
        INDEX,
        "shard_000000.hdf5",
        "shard_000001.hdf5",  # renamed, never listed
    ]
    assert Dataset(path).episodes == [0, 1]
    full.armed = False
    with DatasetWriter(path, ARGS, resume=True) as writer:
        assert sorted(p.name for p in path.iterdir()) == [INDEX, "shard_000000.hdf5"]
        writer.add(_episode(2, 3))
    assert Dataset(path).episodes == [0, 1, 2]


_WRITE_SHARDS = """
import resource, signal, sys
from pathlib import Path
from sim.data.dataset import DatasetWriter
from tests.sim.data.test_dataset import ARGS, _episode
assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN  # Python ignores it: EFBIG instead
path, limit, background = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # the writer process's too
writer = DatasetWriter(path, ARGS, background=background)
try:
    for e, length in enumerate((5, 5, 400, 5)):
        writer.add(_episode(e, length, pixels=True))
        writer.flush(wait=True)
except OSError as err:
    print(f"{type(err).__name__} {err.errno}: {err}")
finally:
    writer.close()
"""


@pytest.mark.parametrize("background", [False, True])
def test_a_shard_that_does_not_fit_is_a_clear_error(tmp_path, background):
    """HDF5 itself cannot fail a write cleanly (it crashed, SIGSEGV); the shard is built
    in memory and written by Python, which raises OSError (in the writer process too,
    whose error the collecting process raises)."""
    path = tmp_path / "ds"
    run = _run(_WRITE_SHARDS, str(path), "40000", str(int(background)))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"OSError {errno.EFBIG}: ")
    assert f"{path / 'shard_000002.hdf5.tmp'}: could not be written: File too large" in run.stdout
    assert sorted(p.name for p in path.iterdir()) == [
        INDEX,
        "shard_000000.hdf5",
        "shard_000001.hdf5",
    ]
    ds = Dataset(path)
    assert ds.episodes == [0, 1]
    _same_episodes(ds, _Episodes([_episode(e, 5, pixels=True) for e in (0, 1)]), [0, 1])


class _Episodes:
    """The `episode` / `attrs` of in-memory episodes, as `Dataset` reads them."""

    def __init__(self, episodes):
        self.by_index = {e.index: e for e in episodes}

    def episode(self, e):
        ep = self.by_index[e]
        return {
            "obs": ep.obs,
            "next_obs": ep.next_obs,
            "actions": ep.actions,
            "rewards": ep.rewards,
            "dones": (ep.terminated | ep.truncated).astype(np.uint8),
            "terminated": ep.terminated,
            "truncated": ep.truncated,
            "states": ep.states,
            "pixels": ep.pixels,
        }

    def attrs(self, e):
        ep = self.by_index[e]
        plain = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in ep.attrs.items()}
        return {"num_samples": len(ep), "seed": ep.seed, **plain}


_COLLECT = """
import json, resource, signal, sys
import tests.conftest  # registers the test tasks
import run
settings, out, limit = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
argv = ["collect", "--out", out, "--no-progress"]
for key, value in settings.items():
    argv += [f"--{key.replace('_', '-')}", str(value)]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as Python sets it: writes fail, EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # inherited by the shard writer
sys.exit(run.main(argv))
"""


def test_collection_on_a_disk_that_fills_up(tmp_path):
    clean = CollectCfg(out=tmp_path / "clean", progress=False, **SETTINGS)
    collect(clean)
    ref = Dataset(clean.out)
    shards = json.loads((clean.out / INDEX).read_text())["shards"]
    sizes = [(clean.out / s["file"]).stat().st_size for s in shards]
    # the first shard larger than all before it, after two that fit: it fills the disk
    k = next(i for i in range(2, len(sizes)) if sizes[i] > max(sizes[:i]))
    limit = max(sizes[:k]) + 1

    out = tmp_path / "full"
    run = _run(_COLLECT, json.dumps(SETTINGS), str(out), str(limit))
    assert run.returncode == 2, run.stderr  # run.py's one `error:` line, not a crash
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "Traceback" not in run.stderr, run.stderr
    assert f"{out / shards[k]['file']}.tmp: could not be written: File too large" in error
    # what was committed is intact and equal to the clean run's
    index = json.loads((out / INDEX).read_text())
    assert index["shards"] == shards[:k]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [INDEX, *(s["file"] for s in shards[:k])]
    )
    committed = sorted(e for s in shards[:k] for e in s["episodes"])
    ds = Dataset(out)
    assert ds.episodes == committed and ds.env_args == ref.env_args
    _same_episodes(ds, ref, committed)

    # room again: --resume completes it to the clean run's dataset
    collect(CollectCfg(out=out, progress=False, resume=True, **SETTINGS))
    ds = Dataset(out)
    assert ds.episodes == ref.episodes and ds.total == ref.total
    _same_episodes(ds, ref, ref.episodes)


_SAVE = """
import resource, sys, torch
from pathlib import Path
from world_models.base import FORMAT, save_atomic
path = Path(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 1,) * 2)
try:
    save_atomic({"format": FORMAT, "w": torch.arange(10_000.0)}, path)
except OSError as err:
    print(err)
"""


def test_a_checkpoint_too_large_for_the_disk_keeps_the_previous_one(tmp_path):
    """What train-wm's `save_atomic` does when the disk fills up under it."""
    path = tmp_path / "model.pt"
    world_models.base.save_atomic({"format": world_models.base.FORMAT, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    run = _run(_SAVE, str(path))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        f"[Errno {errno.EFBIG}] {path}: could not be written: File too large "
        "(disk full, or over a disk quota or file size limit)"
    )
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]
