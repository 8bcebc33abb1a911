"""Dataset shards: round trip, the robomimic layout read by plain h5py, atomic
commits, and clear errors for anything that is not a dataset of ours."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from sim.data.dataset import INDEX, Dataset, DatasetError, DatasetWriter, Episode

ARGS = {"env_name": "pendulum_swingup", "type": "wam-sandbox", "seed": 0}


def _episode(index: int, length: int, pixels: bool = False) -> Episode:
    g = np.random.default_rng(index)
    done = np.zeros(length, dtype=bool)
    done[-1] = True
    return Episode(
        index=index,
        seed=int(g.integers(-(2**63), 2**63 - 1)),
        obs=g.normal(size=(length, 3)).astype(np.float32),
        next_obs=g.normal(size=(length, 3)).astype(np.float32),
        actions=g.uniform(-1, 1, (length, 1)).astype(np.float32),
        rewards=g.uniform(size=length).astype(np.float32),
        terminated=np.zeros(length, dtype=bool),
        truncated=done,
        states=g.normal(size=(length, 2)),
        pixels=g.integers(0, 255, (length + 1, 8, 8, 3), dtype=np.uint8) if pixels else None,
        attrs={"episode_return": 1.5, "mass_scale": np.array([0.9, 1.1])},
    )


def _write(path, episodes, per_shard=2):
    with DatasetWriter(path, ARGS) as writer:
        for k, ep in enumerate(episodes):
            writer.add(ep)
            if (k + 1) % per_shard == 0:
                writer.flush()


@pytest.mark.parametrize("pixels", [False, True])
def test_round_trip(tmp_path, pixels):
    episodes = [_episode(i, 5 + i, pixels) for i in (3, 0, 7, 1, 2)]
    _write(tmp_path / "ds", episodes)
    ds = Dataset(tmp_path / "ds")
    assert ds.episodes == [0, 1, 2, 3, 7] and ds.env_args == ARGS
    assert ds.total == sum(len(e) for e in episodes)
    assert ds.has_pixels() == pixels
    for ep in episodes:
        got = ds.episode(ep.index)
        for key in ("obs", "next_obs", "actions", "rewards", "terminated", "truncated", "states"):
            np.testing.assert_array_equal(got[key], getattr(ep, key), err_msg=key)
            assert got[key].dtype == getattr(ep, key).dtype
        np.testing.assert_array_equal(got["dones"], ep.truncated)
        if pixels:
            np.testing.assert_array_equal(got["pixels"], ep.pixels)
        attrs = ds.attrs(ep.index)
        assert attrs["seed"] == ep.seed and attrs["num_samples"] == len(ep)
        assert attrs["mass_scale"] == [0.9, 1.1]


def test_shards_are_robomimic_files_for_plain_h5py(tmp_path):
    """What a robomimic-style reader does: data attrs, demo_N groups sorted as
    integers, obs/next_obs groups of keys, actions/rewards/dones, num_samples."""
    episodes = [_episode(i, 4, pixels=True) for i in range(4)]
    _write(tmp_path / "ds", episodes, per_shard=4)
    with h5py.File(tmp_path / "ds" / "shard_000000.hdf5", "r") as f:
        demos = sorted(f["data"].keys(), key=lambda k: int(k[5:]))
        assert demos == [f"demo_{i}" for i in range(4)]
        assert f["data"].attrs["total"] == 16
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == "pendulum_swingup"
        for i, name in enumerate(demos):
            demo = f["data"][name]
            assert demo.attrs["num_samples"] == len(demo["actions"]) == 4
            assert set(demo["obs"].keys()) == set(demo["next_obs"].keys()) == {"state", "pixels"}
            np.testing.assert_array_equal(demo["obs/pixels"][1:], demo["next_obs/pixels"][:-1])
            np.testing.assert_array_equal(demo["rewards"][()], episodes[i].rewards)
            assert demo["dones"][-1] == 1 and demo["dones"][:-1].sum() == 0
            assert demo["obs/pixels"].compression == "lzf"


def test_uncommitted_work_is_invisible_and_removed_on_resume(tmp_path):
    path = tmp_path / "ds"
    _write(path, [_episode(i, 3) for i in range(2)])
    # what a writer killed mid-commit leaves: a temporary and an unlisted shard
    (path / "shard_000001.hdf5.tmp").write_bytes(b"partial")
    (path / "shard_000001.hdf5").write_bytes(b"renamed, not yet indexed")
    assert Dataset(path).episodes == [0, 1]
    writer = DatasetWriter(path, ARGS, resume=True)
    assert writer.committed == {0, 1}
    assert sorted(p.name for p in path.iterdir()) == [INDEX, "shard_000000.hdf5"]
    writer.add(_episode(2, 3))
    writer.close()
    assert Dataset(path).episodes == [0, 1, 2]
    with pytest.raises(DatasetError, match="episode 1 is already recorded"):
        DatasetWriter(path, ARGS, resume=True).add(_episode(1, 3))


def test_existing_data_is_never_overwritten(tmp_path):
    path = tmp_path / "ds"
    _write(path, [_episode(0, 3)])
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(DatasetError, match="already holds a dataset; resume it"):
        DatasetWriter(path, ARGS)
    with pytest.raises(DatasetError, match=r"different settings: seed: 0 -> 1"):
        DatasetWriter(path, {**ARGS, "seed": 1}, resume=True)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty and has no index.json"):
        DatasetWriter(other, ARGS)


def test_bad_paths_name_the_problem(tmp_path):
    path = tmp_path / "ds"
    _write(path, [_episode(i, 3) for i in range(4)])
    with pytest.raises(DatasetError, match="no such dataset"):
        Dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no index.json"):
        Dataset(tmp_path)
    # a truncated shard
    shard = path / "shard_000001.hdf5"
    shard.write_bytes(shard.read_bytes()[:1000])
    ds = Dataset(path)
    ds.episode(0)  # the intact shard still reads
    with pytest.raises(DatasetError, match=r"shard_000001.hdf5: corrupt or truncated HDF5"):
        ds.episode(2)
    shard.unlink()
    with pytest.raises(DatasetError, match="shard listed in the index is missing"):
        Dataset(path).episode(3)
    # a corrupt and a foreign index
    (path / INDEX).write_text('{"format": "wam-sandbox/episodes", "vers')
    with pytest.raises(DatasetError, match=r"index.json: corrupt index"):
        Dataset(path)
    (path / INDEX).write_text('{"format": "something else"}')
    with pytest.raises(DatasetError, match="not a wam-sandbox dataset index"):
        Dataset(path)
    # a foreign HDF5 file
    foreign = tmp_path / "foreign.hdf5"
    with h5py.File(foreign, "w") as f:
        f["weights"] = np.zeros(3)
    with pytest.raises(DatasetError, match="foreign.hdf5: not in the robomimic layout"):
        Dataset(foreign)


def test_a_single_robomimic_file_reads(tmp_path):
    _write(tmp_path / "ds", [_episode(i, 3) for i in range(3)], per_shard=3)
    ds = Dataset(tmp_path / "ds" / "shard_000000.hdf5")
    assert ds.episodes == [0, 1, 2] and ds.total == 9 and ds.env_args == ARGS
