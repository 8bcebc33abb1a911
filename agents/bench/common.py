"""What the benchmark suites share: their common settings and how a result is kept."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.data.atomic import write_json_atomic


@dataclass
class SuiteCfg:
    """Settings every suite has."""

    task: str = "cartpole_swingup"
    """Registered task to measure (see `envs.list_tasks()`)."""
    seed: int = 0
    """Seed of the envs, the random actions and anything trained."""
    rounds: int = 3
    """Timed rounds of each measurement, interleaved with its peers' (after an untimed
    warm-up); the median round is reported."""
    json: Path | None = None
    """Also write the result here as JSON (atomically)."""


def keep(result: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """Write `result` to `path` as JSON (atomically) if a path is given; return it."""
    if path is not None:
        write_json_atomic(path, json.loads(json.dumps(result, default=str)))
        print(f"wrote {path}")
    return result
