"""Crash safety: `run.py collect` killed with SIGKILL at random moments keeps every
committed episode intact and bit-identical to an uninterrupted run, shows no
partial episode, and `--resume` completes the dataset without duplicates."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from agents.jobs.collect import CollectCfg, collect
from sim.data.dataset import INDEX, Dataset

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = {
    "task": "pendulum_swingup",
    "num_envs": 3,
    "episodes": 900,
    "episode_length": 40,
    "policy": "noise",
    "seed": 5,
    "flush_episodes": 2,
}
KILLS = 12


def _argv(out: Path, resume: bool) -> list[str]:
    argv = [sys.executable, str(ROOT / "run.py"), "collect", "--out", str(out), "--no-progress"]
    for key, value in SETTINGS.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv + (["--resume"] if resume else [])


def _committed(out: Path) -> int:
    try:
        return json.loads((out / INDEX).read_text())["num_episodes"]
    except (OSError, ValueError, KeyError):
        return -1


def _check_against(out: Path, ref: Dataset) -> list[int]:
    ds = Dataset(out)
    index = json.loads((out / INDEX).read_text())
    listed = [e for shard in index["shards"] for e in shard["episodes"]]
    assert len(listed) == len(set(listed)), "an episode is listed twice"
    assert sorted(listed) == ds.episodes
    for shard in index["shards"]:  # plain h5py opens every committed shard
        with h5py.File(out / shard["file"], "r") as f:
            assert sorted(int(k[5:]) for k in f["data"]) == sorted(shard["episodes"])
    for e in ds.episodes:
        got, want = ds.episode(e), ref.episode(e)
        assert ds.length(e) == len(got["actions"]) == len(want["actions"])  # no partial episode
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"episode {e} {key}")
        assert ds.attrs(e) == ref.attrs(e)
    return ds.episodes


@pytest.mark.slow(seconds=185)
def test_sigkill_at_random_moments(tmp_path):
    ref_cfg = CollectCfg(out=tmp_path / "ref", progress=False, **SETTINGS)
    collect(ref_cfg)
    ref = Dataset(ref_cfg.out)
    out = tmp_path / "killed"
    chooser = random.Random(int.from_bytes(os.urandom(4), "little"))
    kills = 0
    while kills < KILLS:
        before = _committed(out)
        proc = subprocess.Popen(_argv(out, resume=before >= 0), cwd=ROOT)
        # let it commit something, then kill it at a random moment of its work
        deadline = time.monotonic() + 60
        while _committed(out) <= max(before, 0) and proc.poll() is None:
            assert time.monotonic() < deadline, "collect made no progress"
            time.sleep(0.005)
        time.sleep(chooser.uniform(0.0, 0.25))
        if proc.poll() is not None:
            break  # it finished: no more moments to kill it at
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        episodes = _check_against(out, ref)
        assert len(episodes) > max(before, 0)
    assert kills >= 10, f"collection finished after {kills} kills: make it longer"
    subprocess.run(_argv(out, resume=True), cwd=ROOT, check=True)
    assert _check_against(out, ref) == list(range(SETTINGS["episodes"]))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
