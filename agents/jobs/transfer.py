"""Sim-to-sim transfer: agents' returns across physics engines and perturbed physics.

`python run.py transfer --agents A.pt [B.pt ...] [--backends mujoco warp]` scores
every agent on a matrix of cells, each N episodes from the same start states
(`env.reset(seed)`, deterministic actions), exactly as `run.py eval` scores one:

- **nominal**: the task as the agent was trained on it (its recorded settings and
  action repeat), on the task's nominal physics whatever randomization the agent
  trained with; this cell of the first backend is `eval`'s number, to the digit;
- **engines**: the nominal task on every backend of `--backends` (mujoco, warp);
- **perturbations**: one physical or sensing parameter moved by a fixed amount for
  every episode and nothing else (`sim.randomization` with a range of one value):
  `mass`, `friction`, `damping`, `actuator_gain`, `gravity` scaled by `1 + level`
  for each level of `--scales`; `action_delay` by each of `--delays` agent steps;
  `obs_noise` and `action_noise`, Gaussian of each std of `--noise` (observation
  units; action units of [-1, 1]).

Each cell reports the mean return with its 95% confidence interval (Student t
over the episodes), the success rate of a task with a goal, and `kept`: its mean
over the agent's nominal mean on its own engine (1.0: nothing lost; the backend
it was trained on where it is among `--backends`, else the first), and
whether its returns equal the nominal ones to the bit (`identical`: the task has
nothing the perturbation moves, as a model without contacts has no friction). Written
to `--out`: `matrix.json` (every cell, atomically after each one), `table.md`
(the cells as rows, the agents as columns; then the least return each agent kept
under each perturbation, over the levels within +-30% and over all) and `heatmap.png` (`kept` per
perturbation and level, one panel per agent). A run that stops is resumed by
running it again: cells already in `matrix.json` are kept if the agents
(checkpoint digests), task, episodes and seed are the same; other perturbations,
levels or backends may be added the same way. That is also how a matrix spans
engines that live in separate Python environments (Isaac Lab's, `docs/isaaclab.md`):
cells whose engine cannot be imported here are left for a run in the other
environment, with the same `--out`, and the command says so.

Across engine families a task is evaluated as its twin there
(`envs.registry.engine_task`): an agent of `isaac_cartpole` on `isaaclab` meets
`Isaac-Cartpole-Direct`, and one trained on `Isaac-Cartpole-Direct` meets
`isaac_cartpole` on `mujoco`. Perturbations apply on the backends of `PERTURBABLE`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from agents.base import checkpoint_file, from_checkpoint, read_checkpoint
from agents.expert_agent import ExpertAgent
from agents.jobs.evaluate import agent_env, make_eval_env, run_episodes
from agents.jobs.seeds import mean_ci
from sim.data.atomic import read_json, write_bytes_atomic, write_json_atomic
from sim.randomization import RandomizationCfg
from world_models import pictures

SCHEMA = "wam-sandbox/transfer-v1"
PERTURBABLE = ("mujoco", "warp")
"""Backends whose physics a cell can perturb (an Isaac Lab task randomizes through its
own event config: it gets the nominal cell only)."""


@dataclass(frozen=True)
class Perturbation:
    """One parameter of `RandomizationCfg` held at a level for every episode."""

    field: str
    """The `RandomizationCfg` field it sets."""
    unit: str
    """scale (a relative change: level -0.3 is x0.7), steps or std."""

    def randomization(self, level: float) -> RandomizationCfg:
        if self.unit == "scale":
            return RandomizationCfg(**{self.field: (1.0 + level, 1.0 + level)})
        if self.unit == "steps":
            return RandomizationCfg(**{self.field: (int(level), int(level))})
        return RandomizationCfg(**{self.field: float(level)})

    def label(self, level: float) -> str:
        if self.unit == "scale":
            return f"{level * 100:+.0f}%"
        if self.unit == "steps":
            return f"{int(level)} step{'s' if int(level) != 1 else ''}"
        return f"std {level:g}"


PERTURBATIONS = {
    "mass": Perturbation("mass_scale", "scale"),
    "friction": Perturbation("friction_scale", "scale"),
    "damping": Perturbation("damping_scale", "scale"),
    "actuator_gain": Perturbation("actuator_gain_scale", "scale"),
    "gravity": Perturbation("gravity_scale", "scale"),
    "action_delay": Perturbation("action_delay", "steps"),
    "obs_noise": Perturbation("obs_noise_std", "std"),
    "action_noise": Perturbation("action_noise_std", "std"),
}


@dataclass
class TransferCfg:
    """Agents' returns across physics engines and perturbed physics, as a matrix."""

    agents: tuple[str, ...]
    """Agent checkpoints (anything `run.py eval` takes), all of one task; `expert`: the
    task's scripted expert (`envs.experts`), built on the task's nominal model."""
    names: tuple[str, ...] = ()
    """A name for each agent in the table and the heatmap (default: its directory's)."""
    task: str | None = None
    """Task (default: the one the agents were trained on, with its settings)."""
    backends: tuple[str, ...] = ("mujoco",)
    """Physics engines (an agent's `kept` is against its nominal return on the engine it
    was trained on where that is one of these, else on the first)."""
    perturb: tuple[str, ...] = (
        "mass",
        "friction",
        "damping",
        "actuator_gain",
        "action_delay",
        "obs_noise",
    )
    """Perturbations (`PERTURBATIONS`): mass, friction, damping, actuator_gain, gravity,
    action_delay, obs_noise, action_noise."""
    scales: tuple[float, ...] = (-0.5, -0.3, -0.1, 0.1, 0.3, 0.5)
    """Levels of the physical parameters: relative changes (-0.3: x0.7), each > -1."""
    delays: tuple[int, ...] = (1, 2, 4)
    """Levels of action_delay [agent steps]."""
    noise: tuple[float, ...] = (0.01, 0.03, 0.1)
    """Levels of obs_noise and action_noise: Gaussian std."""
    episodes: int = 16
    """Episodes of every cell (all in parallel)."""
    seed: int = 1000
    """Seed of the start states (and of the noise and delays drawn per episode)."""
    out: Path | None = None
    """Directory of matrix.json, table.md, heatmap.png (default:
    runs/transfer/<task>-<date>-<time>); a run there with the same agents resumes."""
    device: str = "cpu"
    """Torch device of the agents."""
    progress: bool = True
    """Show progress."""

    def check(self) -> TransferCfg:
        """This config with every agent named, or a ValueError naming what is wrong."""
        if not self.agents:
            raise ValueError("--agents: name at least one agent checkpoint")
        if self.names and len(self.names) != len(self.agents):
            raise ValueError(f"--names gives {len(self.names)} names for {len(self.agents)} agents")
        names = self.names or tuple(_default_name(a) for a in self.agents)
        if len(set(names)) != len(names):
            raise ValueError(f"agent names must differ, got {list(names)}: pass --names")
        unknown = [p for p in self.perturb if p not in PERTURBATIONS]
        if unknown:
            raise ValueError(
                f"unknown perturbation(s) {', '.join(unknown)}; valid: {', '.join(PERTURBATIONS)}"
            )
        if not self.backends:
            raise ValueError("--backends: name at least one backend")
        if any(s <= -1.0 for s in self.scales):
            raise ValueError(
                f"--scales are relative changes > -1 (x0 is no body), got {self.scales}"
            )
        if any(d < 0 for d in self.delays):
            raise ValueError(f"--delays must be >= 0 agent steps, got {self.delays}")
        if any(s < 0 for s in self.noise):
            raise ValueError(f"--noise stds must be >= 0, got {self.noise}")
        if self.episodes < 2:
            raise ValueError(
                f"--episodes must be >= 2 for a confidence interval, got {self.episodes}"
            )
        return dataclasses.replace(self, names=names)

    def levels(self, perturbation: str) -> tuple[float, ...]:
        """The levels of `perturbation` (`--scales`, `--delays` or `--noise`)."""
        unit = PERTURBATIONS[perturbation].unit
        return tuple({"scale": self.scales, "steps": self.delays, "std": self.noise}[unit])


EXPERT = "expert"


def _default_name(spec: str) -> str:
    if spec == EXPERT:
        return EXPERT
    path = Path(spec)
    return path.name if path.is_dir() else path.parent.name or path.stem


def _digest(spec: str) -> str:
    if spec == EXPERT:
        return EXPERT
    return "sha256:" + hashlib.sha256(checkpoint_file(Path(spec)).read_bytes()).hexdigest()


def load_agents(cfg: TransferCfg) -> list[tuple[Path, dict]]:
    """(path, checkpoint) of every agent; the scripted expert's checkpoint is built on
    its task (`--task`, else the first checkpoint's)."""
    ckpts = {a: read_checkpoint(a) for a in cfg.agents if a != EXPERT}
    loaded = []
    for spec in cfg.agents:
        if spec != EXPERT:
            loaded.append((Path(spec), ckpts[spec]))
            continue
        recorded = next((c.get("env_args") for c in ckpts.values() if c.get("env_args")), None)
        env = make_eval_env(recorded, cfg.task, 1)
        try:
            agent = ExpertAgent.for_env(env, noise_std=0.0)
        finally:
            env.close()
        loaded.append((Path(EXPERT), agent.checkpoint(env_args=agent.config["env_args"])))
    return loaded


@dataclass(frozen=True)
class Cell:
    """One entry of the matrix for every agent: a backend and a perturbation at a level
    (perturbation "nominal", level 0: the task itself)."""

    backend: str
    perturbation: str
    level: float

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.perturbation}/{self.level:g}"

    @property
    def label(self) -> str:
        if self.perturbation == "nominal":
            return "nominal"
        return PERTURBATIONS[self.perturbation].label(self.level)

    def randomization(self) -> RandomizationCfg:
        if self.perturbation == "nominal":
            return RandomizationCfg()
        return PERTURBATIONS[self.perturbation].randomization(self.level)


def cells(cfg: TransferCfg) -> list[Cell]:
    """The matrix's cells in order: each backend's nominal cell, then its perturbations
    (on the backends that take them)."""
    out = [Cell(b, "nominal", 0.0) for b in cfg.backends]
    for backend in cfg.backends:
        if backend not in PERTURBABLE:
            continue
        out += [Cell(backend, p, float(lv)) for p in cfg.perturb for lv in cfg.levels(p)]
    return out


def cell_env(cfg: TransferCfg, agent, ckpt: dict, cell: Cell):
    """The env of `cell` for `agent` (its checkpoint `ckpt`): `run.py eval`'s env on
    the cell's backend with the cell's one perturbation."""
    return agent_env(
        agent,
        ckpt,
        cfg.task,
        cfg.episodes,
        seed=cfg.seed,
        backend=cell.backend,
        randomization=cell.randomization(),
    )


def score(cfg: TransferCfg, ckpt: dict, path: Path, cell: Cell) -> dict[str, Any]:
    """One agent's returns in one cell: a fresh agent from its checkpoint, on an env of
    the cell, `cfg.episodes` episodes from the starts of `cfg.seed`."""
    agent = from_checkpoint(ckpt, path).to(cfg.device)
    env = cell_env(cfg, agent, ckpt, cell)
    try:
        returns, success, _ = run_episodes(agent, env, env.reset(seed=cfg.seed))
        task = env.name
    finally:
        env.close()
    stats = mean_ci(returns.tolist())
    row = {
        "task": task,
        "backend": cell.backend,
        "perturbation": cell.perturbation,
        "level": cell.level,
        "label": cell.label,
        "returns": stats["values"],
        "mean": stats["mean"],
        "std": stats["std"],
        "ci95": stats["ci95"],
    }
    if success is not None:
        row["success_rate"] = float(success.float().mean())
    return row


def settings(cfg: TransferCfg) -> dict[str, Any]:
    """What the cells of a matrix depend on: a resumed run must share it."""
    return {
        "task": cfg.task,
        "episodes": cfg.episodes,
        "seed": cfg.seed,
        "agents": [
            {"name": n, "path": str(p), "digest": _digest(p)}
            for n, p in zip(cfg.names, cfg.agents, strict=True)
        ],
    }


def _resumed(path: Path, wanted: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The finished cells of the matrix at `path` (agent name -> cell key -> row), if
    it was measured with the same settings; none if there is no matrix yet."""
    if not path.exists():
        return {a["name"]: {} for a in wanted["agents"]}
    matrix = read_json(path)
    if matrix.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a transfer matrix (schema {matrix.get('schema')!r})")
    if matrix["settings"] != wanted:
        theirs, mine = matrix["settings"], wanted
        diff = [k for k in mine if theirs.get(k) != mine[k]]
        raise ValueError(
            f"{path.parent} holds a transfer matrix of other settings ({', '.join(diff)} "
            "differ): pass another --out"
        )
    return {name: dict(rows) for name, rows in matrix["cells"].items()}


def home(cfg: TransferCfg, ckpt: dict) -> str:
    """The key of an agent's reference cell: the nominal task on the engine it was
    trained on, where that is one of `--backends`, else on the first of them."""
    trained = (ckpt.get("env_args") or {}).get("backend")
    backend = trained if trained in cfg.backends else cfg.backends[0]
    return Cell(backend, "nominal", 0.0).key


def kept(rows: dict[str, dict[str, Any]], reference: str) -> None:
    """Each row's `kept`: its mean over the mean of the `reference` cell (the agent's
    nominal cell on its own engine), None where that mean is not positive; and whether its
    returns are the reference's to the last bit (`identical`: a perturbation of
    something the task does not have, such as friction without contacts)."""
    base = rows.get(reference, {}).get("mean")
    returns = rows.get(reference, {}).get("returns")
    for key, row in rows.items():
        row["kept"] = row["mean"] / base if base is not None and base > 0 else None
        row["identical"] = key != reference and row["returns"] == returns  # changed nothing


def run_transfer(cfg: TransferCfg) -> dict[str, Any]:
    """Entry point of `python run.py transfer`."""
    cfg = cfg.check()
    loaded = load_agents(cfg)
    wanted = settings(cfg)
    out = Path(cfg.out) if cfg.out is not None else None
    if out is None:
        task = cfg.task or (loaded[0][1].get("env_args") or {}).get("env_name", "task")
        out = Path("runs/transfer") / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    matrix = {"schema": SCHEMA, "settings": wanted, "cells": _resumed(out / "matrix.json", wanted)}
    elsewhere = measure(cfg, loaded, matrix, out / "matrix.json")
    report(cfg, loaded, matrix, out)
    for backend, why in elsewhere.items():
        print(
            f"not measured here: the {backend} cells ({why}); run the same command in the "
            "environment where that engine runs, with the same --out: the matrix resumes"
        )
    return matrix


def measure(
    cfg: TransferCfg, loaded: list[tuple[Path, dict]], matrix: dict[str, Any], path: Path
) -> dict[str, str]:
    """Score every cell the matrix lacks, writing it to `path` after each; returns the
    backends that do not run in this environment, with why."""
    done = matrix["cells"]
    todo = [
        (i, c) for c in cells(cfg) for i in range(len(loaded)) if c.key not in done[cfg.names[i]]
    ]
    bar = tqdm(total=len(todo), disable=not cfg.progress, desc="transfer", unit="cell")
    elsewhere: dict[str, str] = {}
    for i, cell in todo:
        name = cfg.names[i]
        bar.update()
        if cell.backend in elsewhere:
            continue
        bar.set_description(f"{name}: {cell.backend} {cell.perturbation} {cell.label}")
        try:
            row = score(cfg, loaded[i][1], loaded[i][0], cell)
        except ImportError as err:  # an engine of another Python environment
            elsewhere[cell.backend] = " ".join(str(err).split())
            continue
        _check_one_task(done, row)
        done[name][cell.key] = row
        write_json_atomic(path, matrix)
        if cfg.progress:
            lo, hi = row["ci95"]
            tqdm.write(
                f"{name}: {cell.backend} {cell.perturbation} {cell.label}: return "
                f"{row['mean']:.1f} (95% CI {lo:.1f} to {hi:.1f})"
            )
    bar.close()
    return elsewhere


def report(
    cfg: TransferCfg, loaded: list[tuple[Path, dict]], matrix: dict[str, Any], out: Path
) -> None:
    """Each row's `kept` against its agent's own engine, then `matrix.json`,
    `table.md` and `heatmap.png` of the cells `cfg` names, and the table printed."""
    done = matrix["cells"]
    homes = {name: home(cfg, ckpt) for name, (_, ckpt) in zip(cfg.names, loaded, strict=True)}
    for name, rows in done.items():
        kept(rows, homes[name])
    write_json_atomic(out / "matrix.json", matrix)
    text = table(done, [c.key for c in cells(cfg)]) + "\n" + worst_table(done, cfg)
    write_bytes_atomic(out / "table.md", text.encode())
    heatmap(out / "heatmap.png", done, cfg, homes)
    print(text)
    print(
        f"matrix: {out / 'matrix.json'}, table: {out / 'table.md'}, heatmap: {out / 'heatmap.png'}"
    )


def _check_one_task(done: dict[str, dict[str, Any]], row: dict[str, Any]) -> None:
    """A new `row` must be of the task the agents' other rows on its backend are of
    (the agents act on one task; on another engine, its twin there)."""
    for rows in done.values():
        for other in rows.values():
            if other["backend"] == row["backend"] and other["task"] != row["task"]:
                raise ValueError(
                    f"the agents act on different tasks ({other['task']}, {row['task']})"
                )


def table(done: dict[str, dict[str, Any]], keys: list[str]) -> str:
    """A Markdown table: a row per cell, a column per agent (mean, 95% CI, kept)."""
    names = list(done)
    lines = [
        "| engine | perturbation | level | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for key in keys:
        first = next((rows[key] for rows in done.values() if key in rows), None)
        if first is None:  # not measured (yet): an engine of another environment
            continue
        entries = []
        for name in names:
            row = done[name].get(key)
            if row is None:
                entries.append("")
                continue
            lo, hi = row["ci95"]
            text = f"{row['mean']:.1f} [{lo:.1f}, {hi:.1f}]"
            if row.get("kept") is not None:
                text += f" ({row['kept']:.0%})"
            if "success_rate" in row:
                text += f", {row['success_rate']:.0%} success"
            if row.get("identical"):
                text += ", identical"
            entries.append(text)
        lines.append(
            f"| {first['backend']} | {first['perturbation']} | {first['label']} | "
            + " | ".join(entries)
            + " |"
        )
    return "\n".join(lines) + "\n"


def worst_table(done: dict[str, dict[str, Any]], cfg: TransferCfg, within: float = 0.3) -> str:
    """A Markdown table of the least return kept per perturbation, per agent: over the
    levels of at most `within` (a physical parameter's +-30%) and over all of them."""
    names = list(done)
    lines = [
        f"| engine | perturbation | least kept, levels within +-{within:.0%} | least kept, all |",
        "|---|---|---|---|",
    ]
    for backend in cfg.backends:
        for p in cfg.perturb if backend in PERTURBABLE else ():
            kind = PERTURBATIONS[p]
            columns = []
            for bound in (within, math.inf):
                levels = [lv for lv in cfg.levels(p) if kind.unit != "scale" or abs(lv) <= bound]
                parts = []
                for name in names:
                    kept = [
                        done[name].get(Cell(backend, p, float(lv)).key, {}).get("kept")
                        for lv in levels
                    ]
                    kept = [k for k in kept if k is not None]
                    parts.append(f"{name} {min(kept):.0%}" if kept else f"{name} -")
                columns.append(", ".join(parts))
            lines.append(f"| {backend} | {p} | {columns[0]} | {columns[1]} |")
    return "\n".join(lines) + "\n"


def heatmap(
    path: Path, done: dict[str, dict[str, Any]], cfg: TransferCfg, homes: dict[str, str]
) -> None:
    """`kept` per perturbation (rows; a row of engines first where there are several)
    and level (columns), one panel per agent (stacked), each cell labelled with its level and
    the share of the nominal return it kept."""
    rows: list[tuple[str, list[Cell]]] = []
    if len(cfg.backends) > 1:
        rows.append(("engine", [Cell(b, "nominal", 0.0) for b in cfg.backends]))
    for backend in cfg.backends:
        if backend not in PERTURBABLE:
            continue
        for p in cfg.perturb:
            name = p if len(cfg.backends) == 1 else f"{p} ({backend})"
            rows.append((name, [Cell(backend, p, float(lv)) for lv in cfg.levels(p)]))
    width = max(len(r) for _, r in rows)
    fig = pictures.figure(2.5 + 0.95 * width, len(done) * (0.7 + 0.5 * len(rows)))
    axes = fig.subplots(len(done), 1, squeeze=False)[:, 0]
    for ax, (agent, results) in zip(axes, done.items(), strict=True):
        grid = np.full((len(rows), width), np.nan)
        for r, (_, row_cells) in enumerate(rows):
            for c, cell in enumerate(row_cells):
                value = results.get(cell.key, {}).get("kept")
                if value is not None:
                    grid[r, c] = value
                    text = cell.backend if cell.perturbation == "nominal" else cell.label
                    ax.text(c, r, f"{text}\n{value:.0%}", ha="center", va="center", fontsize=7)
        image = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.1, aspect="auto")
        ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
        ax.set_xticks([])
        nominal = results.get(homes[agent], {}).get("mean", math.nan)
        engine = homes[agent].split("/")[0]
        ax.set_title(f"{agent}\nnominal return {nominal:.1f} ({engine})", fontsize=9)
    fig.colorbar(image, ax=list(axes), label="return kept (of nominal)", shrink=0.8)
    pictures.write_figure(path, fig)
