"""Corruption is detected, never read: shards checksum every byte of data, the index,
reports and checkpoints carry a checksum, and a seeded fuzz that flips bytes in and
truncates each kind of file ends every case in a ValueError (`DatasetError` for
datasets) naming the damaged file, or in data exactly equal to the original."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

import agents.base
import world_models.base
from agents.bc import BcAgent
from sim.data.atomic import read_json, write_json_atomic
from sim.data.dataset import INDEX, Dataset, DatasetError, Episode
from sim.data.shards import _put
from tests.sim.data.test_dataset import ARGS, _episode, _write
from world_models.models.ensemble import EnsembleDynamics

CASES = {"shard": 160, "shard_file": 60, "index": 60, "world_model": 50, "agent": 50, "report": 60}
"""Fuzz cases per kind of file (each a truncation or 1 to 3 flipped bytes)."""
_STEP_ARRAYS = ("obs", "next_obs", "actions", "rewards", "terminated", "truncated", "states")


def _damage(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    """`data` truncated (a quarter of the cases) or with 1 to 3 bytes flipped."""
    if rnd.random() < 0.25:
        cut = rnd.randrange(len(data))
        return data[:cut], f"cut to {cut} of {len(data)} bytes"
    damaged, flips = bytearray(data), []
    for _ in range(rnd.randint(1, 3)):
        at, mask = rnd.randrange(len(data)), rnd.randint(1, 255)
        damaged[at] ^= mask
        flips.append(f"{at}^{mask:#04x}")
    return bytes(damaged), f"flipped byte(s) {', '.join(flips)}"


def _fuzz(
    file: Path, read: Callable[[], Any], same: Callable[[Any], bool], cases: int, seed: int
) -> Counter:
    """Damage `file` `cases` times (restoring it in between) and `read` it: every case
    must raise a ValueError naming `file` or give data that is `same` as the original.
    Returns the count of each outcome."""
    original = file.read_bytes()
    rnd = random.Random(seed)
    outcomes: Counter = Counter()
    for case in range(cases):
        damaged, how = _damage(original, rnd)
        file.write_bytes(damaged)
        where = f"{file.name} case {case}: {how}"
        try:
            got = read()
        except ValueError as err:  # DatasetError is one
            assert str(file) in str(err), f"{where}: the error does not name the file: {err}"
            outcomes[type(err).__name__] += 1
            continue
        except Exception as err:
            pytest.fail(f"{where}: raised {type(err).__name__}: {err}")
        assert same(got), f"{where}: read data that differs from the original"
        outcomes["same data"] += 1
    file.write_bytes(original)
    assert outcomes["same data"] + sum(v for k, v in outcomes.items() if k != "same data") == cases
    return outcomes


def _equal(a: Any, b: Any) -> bool:
    """Exact equality of nested dicts, lists, tensors and arrays (dtype included)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return type(a) is type(b) and a == b


def _everything(path: Path) -> dict[str, Any]:
    """All a dataset (directory or single file) holds, read through `Dataset`."""
    ds = Dataset(path)
    try:
        return {
            "episodes": ds.episodes,
            "total": ds.total,
            "env_args": ds.env_args,
            "pixels": ds.has_pixels(),
            "data": {e: (ds.episode(e), ds.attrs(e), ds.length(e)) for e in ds.episodes},
        }
    finally:
        ds.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two shards: episodes of different lengths, with frames and without."""
    path = tmp_path_factory.mktemp("corrupt") / "ds"
    _write(path, [_episode(i, 4 + i, pixels=i < 3) for i in range(6)], per_shard=3)
    return path


def test_every_array_is_checksummed(dataset):
    """Fletcher-32 on every chunked dataset, checksummed (1.10 format) metadata, and
    env_args kept in an object header, not the unchecked global heap."""
    with h5py.File(dataset / "shard_000000.hdf5", "r") as f:
        superblock = f.id.get_create_plist().get_version()[0]
        assert superblock >= 2  # checksummed superblock, hence object headers too
        arrays = []
        f.visititems(
            lambda name, obj: arrays.append(obj) if isinstance(obj, h5py.Dataset) else None
        )
        assert len(arrays) == 3 * 10
        for array in arrays:
            assert array.fletcher32, array.name
            assert array.chunks is not None, array.name
        env_args = f["data"].attrs["env_args"]
        assert isinstance(env_args, bytes) and json.loads(env_args) == ARGS


def test_empty_and_scalar_arrays_are_stored(tmp_path):
    """Arrays HDF5 cannot chunk (empty, scalar) are stored compactly, in their object
    header (whose checksum covers them); the others as one checksummed chunk."""
    arrays = {
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.float64(2.5),
        "flag": np.bool_(True),
        "steps": np.arange(12, dtype=np.float32).reshape(4, 3),
        "column": np.zeros((5, 0)),
    }
    with h5py.File(tmp_path / "f.hdf5", "w", libver=("v110", "v110")) as f:
        for name, array in arrays.items():
            _put(f, name, np.asarray(array))
    with h5py.File(tmp_path / "f.hdf5", "r") as f:
        for name, array in arrays.items():
            got = f[name][()]
            assert got.dtype == np.asarray(array).dtype and np.array_equal(got, array), name
            chunked = np.asarray(array).size > 0 and np.ndim(array) > 0
            assert f[name].fletcher32 == chunked, name
            layout = f[name].id.get_create_plist().get_layout()
            assert layout == (h5py.h5d.CHUNKED if chunked else h5py.h5d.COMPACT), name


def test_episodes_of_zero_steps_round_trip(tmp_path):
    one = _episode(0, 1)
    episode = Episode(**{**vars(one), **{k: getattr(one, k)[:0] for k in _STEP_ARRAYS}})
    _write(tmp_path / "ds", [episode], per_shard=1)
    got = Dataset(tmp_path / "ds").episode(0)
    for key in _STEP_ARRAYS:
        assert got[key].shape == getattr(one, key)[:0].shape, key
        assert got[key].dtype == getattr(one, key).dtype, key


def test_a_flipped_data_byte_is_an_error_naming_shard_and_episode(dataset, tmp_path):
    """The case today's HDF5 files miss: a flipped bit in an array's data."""
    path = tmp_path / "ds"
    shutil.copytree(dataset, path)
    shard = path / "shard_000001.hdf5"
    with h5py.File(shard, "r") as f:
        offset = f["data/demo_4/rewards"].id.get_offset()
        if offset is None:  # a chunked dataset: its one chunk
            offset = f["data/demo_4/rewards"].id.get_chunk_info(0).byte_offset
    data = bytearray(shard.read_bytes())
    data[offset + 2] ^= 0x01
    shard.write_bytes(bytes(data))
    ds = Dataset(path)
    ds.episode(0)  # the other shard reads
    ds.episode(3, ("obs",))  # and so do the intact arrays of this one
    with pytest.raises(DatasetError, match=r"shard_000001\.hdf5: demo_4 is damaged"):
        ds.episode(4)


def test_shards_fuzz(dataset, tmp_path):
    path = tmp_path / "ds"
    shutil.copytree(dataset, path)
    want = _everything(path)
    counts = Counter()
    for k, name in enumerate(("shard_000000.hdf5", "shard_000001.hdf5")):
        counts += _fuzz(
            path / name,
            lambda: _everything(path),
            lambda got: _equal(got, want),
            CASES["shard"] // 2,
            seed=k,
        )
    assert counts["DatasetError"] > CASES["shard"] // 2, counts
    # a shard read on its own: its env_args and episode list come from the file
    single = path / "shard_000001.hdf5"
    want = _everything(single)
    counts = _fuzz(
        single, lambda: _everything(single), lambda got: _equal(got, want), CASES["shard_file"], 2
    )
    assert counts["DatasetError"] > CASES["shard_file"] // 2, counts


def test_index_fuzz(dataset, tmp_path):
    path = tmp_path / "ds"
    shutil.copytree(dataset, path)
    want = _everything(path)
    counts = _fuzz(
        path / INDEX, lambda: _everything(path), lambda got: _equal(got, want), CASES["index"], 3
    )
    assert counts["DatasetError"] > CASES["index"] // 2, counts


def test_an_index_without_checksum_reads_unless_it_has_unknown_fields(dataset, tmp_path):
    """An index written before indexes had a checksum reads as it is; one whose
    checksum field's name was damaged does not."""
    path = tmp_path / "ds"
    shutil.copytree(dataset, path)
    index = json.loads((path / INDEX).read_text())
    assert index.pop("checksum").startswith("sha256:")
    (path / INDEX).write_text(json.dumps(index))
    assert Dataset(path).episodes == list(range(6))
    (path / INDEX).write_text(json.dumps({**index, "checksun": "sha256:00"}))
    with pytest.raises(DatasetError, match=r"index.json: corrupt index .*unknown fields"):
        Dataset(path)
    (path / INDEX).write_text(json.dumps({**index, "total": 1, "checksum": "sha256:00"}))
    with pytest.raises(DatasetError, match="does not match its checksum"):
        Dataset(path)


def _checkpoint_case(path: Path, ckpt: dict, read: Callable[[Path], dict], built: Callable):
    """(read, same) of a checkpoint file: read it (and rebuild its module), compare the
    dict and the module's weights with the original."""
    weights = {k: v.clone() for k, v in ckpt["state_dict"].items()}

    def load():
        got = read(path)
        return got, built(got, path).state_dict()

    def same(got) -> bool:
        got_ckpt, got_weights = got
        return _equal(got_ckpt, ckpt) and _equal(dict(got_weights), weights)

    return load, same


def test_world_model_checkpoint_fuzz(tmp_path):
    model = EnsembleDynamics(3, 1, {"hidden": 16, "layers": 2, "members": 2, "elites": 1})
    ckpt = model.checkpoint(env_args=ARGS, val_score=0.25)
    world_models.base.save_atomic(ckpt, tmp_path / "model.pt")
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)  # plain torch reads it
    load, same = _checkpoint_case(
        tmp_path / "model.pt",
        ckpt,
        world_models.base.read_checkpoint,
        world_models.base.from_checkpoint,
    )
    assert same(load())
    counts = _fuzz(tmp_path / "model.pt", load, same, CASES["world_model"], 4)
    assert counts["ValueError"] > CASES["world_model"] // 2, counts


def test_agent_checkpoint_fuzz(tmp_path):
    agent = BcAgent(3, 1, {"hidden": 16, "layers": 2})
    torch.nn.init.normal_(agent.log_std)
    agents.base.save(agent, tmp_path / "agent.pt", env_args=ARGS)
    ckpt = torch.load(tmp_path / "agent.pt", weights_only=True)
    load, same = _checkpoint_case(
        tmp_path / "agent.pt", ckpt, agents.base.read_checkpoint, agents.base.from_checkpoint
    )
    assert same(load())
    assert _equal(dict(agents.base.load(tmp_path / "agent.pt").state_dict()), ckpt["state_dict"])
    counts = _fuzz(tmp_path / "agent.pt", load, same, CASES["agent"], 5)
    assert counts["ValueError"] > CASES["agent"] // 2, counts


def test_flipped_weights_are_detected(tmp_path):
    """What torch misses by itself: its archive has no checksum it checks, and a
    flipped byte in a tensor loads as a wrong number."""
    weights = torch.arange(256, dtype=torch.float32)
    world_models.base.save_atomic(
        {"format": world_models.base.FORMAT, "w": weights}, tmp_path / "m.pt"
    )
    data = bytearray((tmp_path / "m.pt").read_bytes())
    at = bytes(data).index(np.float32(200.0).tobytes())
    data[at] ^= 0x10
    (tmp_path / "m.pt").write_bytes(bytes(data))
    assert torch.load(tmp_path / "m.pt", weights_only=True)["w"][200] != 200.0  # torch reads it
    with pytest.raises(ValueError, match=r"m\.pt: corrupt checkpoint: its bytes do not match"):
        world_models.base.read_file(tmp_path / "m.pt", world_models.base.FORMAT, "world model")


def test_report_fuzz(tmp_path):
    report = {
        "task": "cartpole_swingup",
        "return": {"mean": 812.25, "std": 13.5, "per_episode": [801.0, 823.5, 799.75]},
        "steps": 50_000,
        "success_rate": 0.875,
        "pixels": None,
        "tuple": (1, 2),
        "converged": True,
    }
    write_json_atomic(tmp_path / "report.json", report, checksum=True)
    want = json.loads(json.dumps(report))
    assert read_json(tmp_path / "report.json") == want
    counts = _fuzz(
        tmp_path / "report.json",
        lambda: read_json(tmp_path / "report.json"),
        lambda got: _equal(got, want),
        CASES["report"],
        6,
    )
    assert counts["ValueError"] > CASES["report"] // 2, counts


def test_a_damaged_checksum_name_is_not_read_as_an_unchecked_file(tmp_path):
    write_json_atomic(tmp_path / "report.json", {"return": 812.25}, checksum=True)
    text = (tmp_path / "report.json").read_text()
    for damaged in (text.replace('"checksum"', '"chec{sum"'), text.replace("sha256:", "sha2@6:")):
        (tmp_path / "report.json").write_text(damaged.replace("812.25", "812.75"))
        with pytest.raises(ValueError, match=r"report\.json: corrupt"):
            read_json(tmp_path / "report.json")
    (tmp_path / "plain.json").write_text('{"return": 812.25, "checkout": "today"}')
    assert read_json(tmp_path / "plain.json") == {"return": 812.25, "checkout": "today"}
