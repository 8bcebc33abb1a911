"""`python run.py bench data`: data generation, recording and loading, measured together.

(d) stepping only: the collection policy and `env.step`, nothing kept;
(e) `collect`: the same N envs, policy and episodes, recorded to HDF5 shards
    (buffers, episode hand-off, writes, fsync and commits included);
(f) `collect --pixels`: frames rendered and recorded per second;
(g) loaders over the dataset (e) wrote: transitions and masked windows sampled
    into training batches per second.
Rounds of (d) and (e) are interleaved and the median reported, since the ratio
e/d (what recording costs) is the figure that matters on a noisy machine.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import envs
from agents.bench.common import SuiteCfg, keep
from agents.jobs.collect import CollectCfg, collect
from agents.policies import make_policy
from sim.data.loader import EpisodeData

TARGET_RECORDING = 0.85  # e / d: recording costs at most 15% of throughput
TARGET_LOADER = 1e6  # transitions/s into training batches


@dataclass
class CollectionCfg(SuiteCfg):
    """The collection the data and ray suites time: random-policy episodes."""

    num_envs: int = 256
    """Parallel envs of each collector."""
    episode_length: int | None = None
    """Episode length [control steps] (None: the task's)."""
    batches: int = 4
    """Episodes per env in each round (steady state: writes overlap stepping)."""
    nthread: int = 0
    """Physics threads of each collector; 0 uses every CPU."""


@dataclass
class DataBenchCfg(CollectionCfg):
    """`bench data`: collection with and without recording, pixels, and the loaders."""

    pixel_envs: int = 16
    """Parallel envs of the pixel collection measurement (0 skips it)."""
    loader_batch: int = 1024
    """Transitions per sampled training batch (windows: batch / sequence_length)."""
    sequence_length: int = 64
    """Window length of the sequence loader measurement."""


def with_episode_length(cfg: CollectionCfg) -> CollectionCfg:
    """`cfg` with the task's episode length where it gives none (an unknown task is an
    error here, before any work)."""
    length = envs.make_cfg(cfg.task).episode_length
    return (
        cfg if cfg.episode_length is not None else dataclasses.replace(cfg, episode_length=length)
    )


def _stepping_only(cfg: CollectionCfg) -> float:
    """(d) transitions/s of policy + env.step over one batch of whole episodes."""
    env = envs.make(
        cfg.task,
        cfg.num_envs,
        seed=cfg.seed,
        nthread=cfg.nthread,
        episode_length=cfg.episode_length,
    )
    policy = make_policy("random", env)
    ids = torch.arange(env.num_envs)
    with torch.inference_mode():
        start = time.perf_counter()
        obs = env.reset()
        policy.reset(ids, env.episode_seed)
        for _ in range(cfg.batches * cfg.episode_length):
            obs, *_ = env.step(policy(obs))
        elapsed = time.perf_counter() - start
    env.close()
    return cfg.batches * cfg.num_envs * cfg.episode_length / elapsed


def collect_cfg(
    cfg: CollectionCfg, out: Path, envs_: int, pixels: int = 0, batches: int = 1
) -> CollectCfg:
    """The collection the benchmarks time: `batches` random-policy episodes per env."""
    return CollectCfg(
        task=cfg.task,
        num_envs=envs_,
        episodes=envs_ * batches,
        policy="random",
        out=out,
        pixels=pixels,
        seed=cfg.seed,
        nthread=cfg.nthread,
        episode_length=cfg.episode_length,
        progress=False,
    )


def _collect(cfg: CollectionCfg, out: Path, envs_: int, pixels: int = 0, batches: int = 1) -> dict:
    return collect(collect_cfg(cfg, out, envs_, pixels, batches))


def real_transitions(batch: dict) -> int:
    """Recorded transitions in a loader batch: every row of a transition batch, the
    valid steps of a window batch (the steps past an episode's end are padding)."""
    return int(batch["mask"].sum()) if "mask" in batch else len(batch["rewards"])


def _sampling_rate(data: EpisodeData, batch: int, seconds: float = 0.5) -> float:
    gen = torch.Generator().manual_seed(0)
    data.sample(batch, gen)  # warm up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += real_transitions(data.sample(batch, gen))
    return count / (time.perf_counter() - start)


def bench(cfg: DataBenchCfg) -> dict:
    """Measure (d) to (g) and print them with their ratios."""
    cfg = with_episode_length(cfg)
    print(
        f"bench data {cfg.task}: N={cfg.num_envs}, {cfg.batches} episodes of "
        f"{cfg.episode_length} steps per env, {cfg.rounds} interleaved rounds; "
        "median shown"
    )
    root = Path(tempfile.mkdtemp(prefix="wam-bench-"))
    try:
        rounds: dict[str, list[float]] = {"d": [], "e": []}
        for r in range(cfg.rounds + 1):  # round 0 is an untimed warm-up
            d = _stepping_only(cfg)
            out = root / f"round{r}"
            e = _collect(cfg, out, cfg.num_envs, batches=cfg.batches)["transitions_per_s"]
            if r > 0:
                rounds["d"].append(d)
                rounds["e"].append(e)
        stepping, recording = float(np.median(rounds["d"])), float(np.median(rounds["e"]))
        frames = None
        if cfg.pixel_envs:
            px = _collect(cfg, root / "pixels", cfg.pixel_envs, pixels=64)
            # frames rendered: one per transition plus each episode's first frame
            frames = (px["transitions"] + cfg.pixel_envs) / px["seconds"]
        dataset = root / f"round{cfg.rounds}"
        steps = EpisodeData(dataset)
        windows = EpisodeData(dataset, sequence_length=cfg.sequence_length)
        loader = {
            "transitions": _sampling_rate(steps, cfg.loader_batch),
            "windows": _sampling_rate(windows, max(1, cfg.loader_batch // cfg.sequence_length)),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "transitions_per_s": {"stepping_only": stepping, "collect_recording": recording},
        "rounds_transitions_per_s": rounds,
        "recording_over_stepping": recording / stepping,
        "pixel_frames_per_s": frames,
        "loader_transitions_per_s": loader,
        "targets": {"recording_over_stepping": TARGET_RECORDING, "loader": TARGET_LOADER},
    }
    rows = [
        ("(d) policy + env.step, nothing kept", stepping, "transitions/s"),
        ("(e) collect, recorded to HDF5", recording, "transitions/s"),
    ]
    if frames is not None:
        rows.append((f"(f) collect --pixels 64, N={cfg.pixel_envs}", frames, "frames/s"))
    rows += [
        (f"(g) loader, transitions x{cfg.loader_batch}", loader["transitions"], "transitions/s"),
        (f"(g) loader, windows of {cfg.sequence_length}", loader["windows"], "transitions/s"),
    ]
    for label, value, unit in rows:
        print(f"  {label:<44} {value:>12,.0f} {unit}")
    ratio = result["recording_over_stepping"]
    print(
        f"  e/d = {ratio:5.2f}   (target >= {TARGET_RECORDING}: "
        f"{'met' if ratio >= TARGET_RECORDING else 'NOT met'})"
    )
    verdict = "met" if min(loader.values()) >= TARGET_LOADER else "NOT met"
    print(f"  loader >= {TARGET_LOADER:,.0f} transitions/s: {verdict}")
    return keep(result, cfg.json)
