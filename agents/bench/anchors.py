"""Published DMC learning curves to plot our agents beside: a small table and its loader.

`anchors.csv`, next to this module, holds episode returns (out of 1000) of published
runs on 20 DeepMind Control Suite tasks, per method, task, env step and seed:

- `tdmpc2`, `dreamerv3` and `sac`: the curves the TD-MPC2 authors released with their
  paper (Hansen et al. 2024), github.com/nicklashansen/tdmpc2, `results/<method>/<task>.csv`
  (3 seeds each; `dreamerv3` there is the TD-MPC2 authors' run of DreamerV3);
- `dreamerv3_paper`: the scores the DreamerV3 authors released with their paper (Hafner
  et al.), github.com/danijar/dreamerv3, `scores/dmc_proprio-dreamerv3.json.gz` (5 seeds;
  15 of our tasks: no quadruped and no humanoid).

The commit each was read at is in `SOURCES` and in the table's header. Only numbers are
copied; this module is our own.

Units, as in the rest of the project: an env step is a control step of the simulator
(an agent step is `action_repeat` of them). Both sources count the same way, with an
action repeat of 2: TD-MPC2's trainer counts agent steps, and its authors multiplied them
by the repeat before writing `results/` (nicklashansen/tdmpc2 issue #45); DreamerV3's
scores count env frames (its Atari 100k curves run to 400k; danijar/dreamerv3 issue
#125). An episode is 1000 control steps, so a return is out of 1000.

The table keeps the published points whose step lies on `grid(...)` (every 10k env steps
up to 100k, every 50k up to 1M, every 500k beyond) or is the last step of the curve (so
that the table covers the published range): every published step of both sources is a
multiple of 10k, so nothing is interpolated, and points between grid steps are left
out. The TD-MPC2 repository publishes every 100k (from 0; to 4M, humanoid to 14M;
its DreamerV3 to 3.9M and 13.9M), DreamerV3's scores every 10k (10k to 490k). Returns
are rounded to 0.1 (the TD-MPC2 files already are). Some of the TD-MPC2 authors'
DreamerV3 runs miss steps (humanoid most, where a step often has one seed or none), so
a step may have fewer seeds than others.

Rebuild the table from checkouts of both repositories (at the commits in `SOURCES`):
`python -m agents.bench.anchors --tdmpc2 DIR --dreamerv3 DIR [--out PATH]`.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

TABLE = Path(__file__).with_name("anchors.csv")

TASKS = (
    "acrobot_swingup",
    "ball_in_cup_catch",
    "cartpole_swingup",
    "cheetah_run",
    "finger_spin",
    "finger_turn_easy",
    "finger_turn_hard",
    "hopper_hop",
    "hopper_stand",
    "pendulum_swingup",
    "quadruped_walk",
    "quadruped_run",
    "reacher_easy",
    "reacher_hard",
    "walker_stand",
    "walker_walk",
    "walker_run",
    "humanoid_stand",
    "humanoid_walk",
    "humanoid_run",
)
"""Our names (`<domain>_<task>`) of the tasks the table covers."""

COLUMNS = ("method", "task", "env_step", "seed", "return")


@dataclass(frozen=True)
class Source:
    """Where one method's numbers come from."""

    repo: str
    """GitHub repository, owner/name."""
    commit: str
    """Commit the files were read at."""
    path: str
    """File in the repository; `{task}` stands for the source's name of a task."""

    def line(self, method: str) -> str:
        """The header line of the table naming this source."""
        return f"# source {method}: {self.repo} {self.commit} {self.path}"


_TDMPC2 = ("nicklashansen/tdmpc2", "e9f59321933cbc8e11a002b842adc7d4ffae8ff1")
_DREAMERV3 = ("danijar/dreamerv3", "e3f02248693a79dc8b0ebd62c93683888ddaccfe")

SOURCES = {
    "tdmpc2": Source(*_TDMPC2, "results/tdmpc2/{task}.csv"),
    "dreamerv3": Source(*_TDMPC2, "results/dreamerv3/{task}.csv"),
    "sac": Source(*_TDMPC2, "results/sac/{task}.csv"),
    "dreamerv3_paper": Source(*_DREAMERV3, "scores/dmc_proprio-dreamerv3.json.gz"),
}
"""Each method of the table and where its numbers come from."""


def _tdmpc2_name(task: str) -> str:
    """The TD-MPC2 repository's name of one of our tasks (`cup-catch`, `walker-walk`)."""
    return "cup-catch" if task == "ball_in_cup_catch" else task.replace("_", "-")


# --- the table ----------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One method's published curve on one task, every seed."""

    method: str
    task: str
    steps: np.ndarray
    """Env steps, increasing, shape (n,)."""
    seeds: tuple[int, ...]
    """The published seeds (their own numbering)."""
    returns: np.ndarray
    """Episode return per step and seed, shape (n, len(seeds)); NaN where a seed has no
    point at that step."""


@lru_cache(maxsize=4)
def load_anchors(path: Path = TABLE) -> dict[tuple[str, str], Curve]:
    """The table as curves keyed by (method, task); its arrays are read-only."""
    cells: dict[tuple[str, str], dict[tuple[int, int], float]] = defaultdict(dict)
    for row in read_rows(path):
        key = (row["method"], row["task"])
        point = (int(row["env_step"]), int(row["seed"]))
        if point in cells[key]:
            raise ValueError(f"{path}: {key} has two returns at (env_step, seed) {point}")
        cells[key][point] = float(row["return"])
    curves = {}
    for (method, task), points in cells.items():
        steps = np.array(sorted({s for s, _ in points}), dtype=np.int64)
        seeds = tuple(sorted({seed for _, seed in points}))
        returns = np.full((len(steps), len(seeds)), np.nan)
        row_of = {int(s): i for i, s in enumerate(steps)}
        for (s, seed), value in points.items():
            returns[row_of[s], seeds.index(seed)] = value
        steps.setflags(write=False)
        returns.setflags(write=False)
        curves[method, task] = Curve(method, task, steps, seeds, returns)
    return curves


def read_rows(path: Path = TABLE) -> list[dict[str, str]]:
    """The table's rows as they are written (strings), without its header comments."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    if rows and tuple(rows[0]) != COLUMNS:
        raise ValueError(f"{path}: columns {tuple(rows[0])}, expected {COLUMNS}")
    return rows


def read_sources(path: Path = TABLE) -> dict[str, Source]:
    """The sources the table's header names, by method."""
    sources = {}
    with open(path) as f:
        for line in f:
            if line.startswith("# source "):
                method, rest = line.removeprefix("# source ").split(":", 1)
                sources[method] = Source(*rest.split())
    return sources


# --- a step of a curve --------------------------------------------------------------

# two-sided 95% quantiles of Student's t with 1..30 degrees of freedom
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
    2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
    2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
    2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip


def t975(dof: int) -> float:
    """The 0.975 quantile of Student's t with `dof` degrees of freedom (a table up to 30,
    then the Cornish-Fisher expansion in 1/dof, within 2e-6 of it from 31 on)."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {dof}")
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = 1.959963984540054
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3


class Anchor(NamedTuple):
    """The mean over seeds of a curve at one step, with its 95% confidence interval."""

    mean: float
    ci95: float
    """Half-width of the t-interval over seeds; NaN with one seed (undefined)."""
    n_seeds: int

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95


def mean_ci95(values) -> Anchor:
    """Mean and t-interval half-width (95%) of per-seed values; NaN ones are left out."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise ValueError("no values")
    if x.size == 1:
        return Anchor(float(x[0]), math.nan, 1)
    half = t975(x.size - 1) * float(np.std(x, ddof=1)) / math.sqrt(x.size)
    return Anchor(float(np.mean(x)), half, int(x.size))


def anchor_at(
    method: str, task: str, env_step: int, *, interpolate: bool = False, path: Path = TABLE
) -> Anchor:
    """Mean return over seeds of `method` on `task` at `env_step`, with its 95% CI.

    By default `env_step` must be a step the table holds for that curve. With
    `interpolate`, each seed is interpolated linearly between its two nearest steps
    (steps outside the published range are still refused)."""
    curves = load_anchors(path)
    if (method, task) not in curves:
        have = sorted(t for m, t in curves if m == method)
        raise KeyError(f"no anchor for {method!r} on {task!r}; {method!r} has {have}")
    c = curves[method, task]
    hit = np.flatnonzero(c.steps == env_step)
    if hit.size:
        return mean_ci95(c.returns[hit[0]])
    if not interpolate:
        i = int(np.searchsorted(c.steps, env_step))
        near = [int(s) for s in c.steps[max(i - 1, 0) : i + 1]]
        raise KeyError(
            f"{method} on {task} has no point at env step {env_step} (nearest: {near}); "
            "pass interpolate=True to interpolate"
        )
    per_seed = []
    for j in range(len(c.seeds)):
        have = ~np.isnan(c.returns[:, j])
        steps, values = c.steps[have], c.returns[have, j]
        if steps.size and steps[0] <= env_step <= steps[-1]:
            per_seed.append(float(np.interp(env_step, steps, values)))
    if not per_seed:
        raise KeyError(
            f"env step {env_step} is outside {method}'s published range on {task} "
            f"({int(c.steps[0])}..{int(c.steps[-1])})"
        )
    return mean_ci95(per_seed)


# --- building the table from the sources ----------------------------------------------


def grid(last: int) -> list[int]:
    """The env steps the table keeps, up to `last`: every 10k to 100k, every 50k to 1M,
    every 500k beyond."""
    steps = list(range(0, 100_000, 10_000))
    steps += list(range(100_000, 1_000_000, 50_000))
    steps += list(range(1_000_000, last + 1, 500_000))
    return [s for s in steps if s <= last]


def _keep_on_grid(method, task, points, rows) -> None:
    """Append the (step, seed, return) points on the grid or at the curve's last step to
    `rows`, checking that the source has one return per step and seed."""
    seen = set()
    for step, seed, _ in points:
        if (step, seed) in seen:
            raise ValueError(f"{method} {task}: two returns at step {step}, seed {seed}")
        seen.add((step, seed))
    last = max(step for step, _, _ in points)
    on = {*grid(last), last}
    for step, seed, value in sorted(points):
        if step in on:
            rows.append((method, task, step, seed, round(value, 1)))


def _read_tdmpc2(root: Path, method: str, task: str) -> list[tuple[int, int, float]]:
    path = root / SOURCES[method].path.format(task=_tdmpc2_name(task))
    with open(path, newline="") as f:
        return [(int(r["step"]), int(r["seed"]), float(r["reward"])) for r in csv.DictReader(f)]


def _read_dreamerv3(root: Path) -> dict[str, list[tuple[int, int, float]]]:
    with gzip.open(root / SOURCES["dreamerv3_paper"].path, "rt") as f:
        runs = json.load(f)
    points = defaultdict(list)
    for run in runs:
        task = run["task"].removeprefix("dmc_")
        for x, y in zip(run["xs"], run["ys"], strict=True):
            if x != int(x):
                raise ValueError(f"{run['task']}: env step {x} is not whole")
            points[task].append((int(x), int(run["seed"]), float(y)))
    return points


def build_table(tdmpc2_dir: Path, dreamerv3_dir: Path, out: Path = TABLE) -> int:
    """Write the table from checkouts of the two repositories; return its row count."""
    rows: list[tuple] = []
    for method in ("tdmpc2", "dreamerv3", "sac"):
        for task in TASKS:
            _keep_on_grid(method, task, _read_tdmpc2(Path(tdmpc2_dir), method, task), rows)
    paper = _read_dreamerv3(Path(dreamerv3_dir))
    for task in TASKS:
        if task in paper:
            _keep_on_grid("dreamerv3_paper", task, paper[task], rows)
    header = [
        "# Published DMC learning curves: episode return (out of 1000) of each method on",
        "# each task at env steps (control steps; action repeat 2 in both sources), per",
        "# seed. Published points on the grid of agents/bench/anchors.py `grid` (every 10k",
        "# env steps to 100k, 50k to 1M, 500k beyond) and each curve's last one, none",
        "# interpolated; returns rounded to 0.1. Built by `python -m agents.bench.anchors`",
        "# from the sources below; see that module.",
        *(src.line(method) for method, src in SOURCES.items()),
    ]
    with open(out, "w", newline="") as f:
        f.write("\n".join(header) + "\n")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(rows)
    load_anchors.cache_clear()
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=build_table.__doc__)
    p.add_argument("--tdmpc2", type=Path, required=True, help="checkout of nicklashansen/tdmpc2")
    p.add_argument("--dreamerv3", type=Path, required=True, help="checkout of danijar/dreamerv3")
    p.add_argument("--out", type=Path, default=TABLE)
    args = p.parse_args(argv)
    n = build_table(args.tdmpc2, args.dreamerv3, args.out)
    print(f"wrote {args.out}: {n} rows")


if __name__ == "__main__":
    main()
