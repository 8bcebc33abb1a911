"""`python run.py inspect PATH`: what a dataset holds, at a glance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tyro

from sim.data.dataset import Dataset


@dataclass
class InspectCfg:
    """Print a dataset summary: episodes, transitions, returns, randomization ranges."""

    path: tyro.conf.Positional[Path]
    """Dataset directory (or a robomimic-layout HDF5 file)."""


def summarize(path: str | Path) -> dict[str, Any]:
    """Summary statistics of the dataset at `path` (reads attrs, not step data)."""
    ds = Dataset(path)
    returns, lengths, params = [], [], {}
    for e in ds.episodes:
        attrs = ds.attrs(e)
        lengths.append(attrs["num_samples"])
        if "episode_return" in attrs:
            returns.append(attrs["episode_return"])
        for key, value in attrs.items():
            if key.startswith("rand_"):
                params.setdefault(key[5:], []).append(np.ravel(value))
    # dimensions from the first episode's dataset shapes, without reading its data
    first = ds._group(ds.episodes[0]) if ds.episodes else {}
    summary = {
        "path": str(ds.path),
        "task": ds.env_args.get("env_name"),
        "backend": ds.env_args.get("backend"),
        "policy": ds.env_args.get("policy"),
        "seed": ds.env_args.get("seed"),
        "episodes": len(ds),
        "transitions": ds.total,
        "length": _stats(lengths),
        "return": _stats(returns),
        "obs_dim": int(first["obs/state"].shape[1]) if first else None,
        "action_dim": int(first["actions"].shape[1]) if first else None,
        "pixels": list(first["obs/pixels"].shape[1:]) if ds.has_pixels() else None,
        "randomization": {
            k: {"min": float(np.min(v)), "max": float(np.max(v))} for k, v in params.items()
        },
    }
    ds.close()
    return summary


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    v = np.asarray(values, dtype=np.float64)
    return {"mean": v.mean(), "std": v.std(), "min": v.min(), "max": v.max()}


def run_inspect(cfg: InspectCfg) -> None:
    s = summarize(cfg.path)
    print(f"{s['path']}: {s['task']} on {s['backend']}, policy {s['policy']}, seed {s['seed']}")
    print(f"  episodes     {s['episodes']:,}   transitions {s['transitions']:,}")
    for label in ("length", "return"):
        st = s[label]
        if st is not None:
            print(
                f"  {label:<12} mean {st['mean']:.1f}  std {st['std']:.1f}  "
                f"min {st['min']:.1f}  max {st['max']:.1f}"
            )
    print(f"  obs dim      {s['obs_dim']}   action dim {s['action_dim']}   pixels {s['pixels']}")
    for name, r in s["randomization"].items():
        print(f"  randomized   {name:<22} [{r['min']:.3f}, {r['max']:.3f}]")
