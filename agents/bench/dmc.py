"""`python run.py bench dmc`: methods x tasks x seeds on the DeepMind Control Suite at a
budget of env steps, beside the published curves of TD-MPC2, DreamerV3 and SAC.

Conventions (those of DreamerV3 and TD-MPC2): an env step is a control step of the
simulator, 1000 to an episode; agents act every `action_repeat` = 2 env steps, so the
default budget of 100k env steps is 50k agent steps. Every method is measured by the
same evaluation (`agents.jobs.evaluate.evaluate`): every `eval_every` (10k) env steps,
the deterministic policy on `eval_episodes` (10) episodes from fixed starts
(`eval_seed`), the same starts for every method, seed and step.

Methods:
- `loop` (the closed loop with `python run.py`'s settings: ensemble world model,
  Dreamer actor-critic in imagination) and `loop-<model>-<agent>` for each world-model
  kind and agent the loop serves (`loop-rssm-dreamer`, `loop-ensemble-mppi`, ...); its
  imagined return from the same starts is kept beside the real one;
- `sac`: Stable-Baselines3 SAC with its defaults on the real env (one env, one
  gradient step per agent step, the same action repeat).

Each run is one process (spawned, so a crash or a kill takes only that run) writing one
small JSON result file, `<out>/results/<task>/<method>/seed<k>.json`: its settings,
its curve (env steps, mean and std of the real return, the imagined return where there
is one, wall time) and its wall time. Finished runs are skipped, so the command
resumes; a killed closed loop resumes from its last committed iteration (its folder
under `<out>/work/`), a killed SAC run is redone. Result files are small enough to
commit (`docs/results/dmc/`), so the table accumulates across machines and sessions.

`--report-only` (also run after every invocation) redraws from the result files: a
table of the mean and 95% confidence interval (Student t over seeds) at 100k and 500k
env steps where runs reached them, beside the published means, and the mean over tasks
of return / 1000; and one plot per task, ours with a 95% band, the published curves
as dashed lines through their points (`<out>/report/`).
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agents.bench import anchors
from agents.jobs.loop import AGENT_KINDS, MODELS, SB3_AGENTS, LoopCfg, identity, plain_config
from sim.data.atomic import read_json, write_bytes_atomic, write_json_atomic
from world_models import pictures

DEFAULT_TASKS = (
    "cartpole_swingup",
    "pendulum_swingup",
    "reacher_easy",
    "reacher_hard",
    "walker_walk",
    "cheetah_run",
)
ANCHOR_METHODS = ("tdmpc2", "dreamerv3", "sac")  # TD-MPC2's released runs of each
MILESTONES = (100_000, 500_000)
SCHEMA = 1


@dataclass
class DmcBenchCfg:
    """`bench dmc`: methods x tasks x seeds at a budget of env steps, beside the
    published curves."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    """Control Suite tasks (the 20 of `agents.bench.anchors.TASKS` have published curves)."""
    methods: tuple[str, ...] = ("loop", "sac")
    """`loop`, `loop-<model>-<agent>` (e.g. loop-rssm-dreamer) and `sac`."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds: one run of each method per task and seed."""
    budget: int = 100_000
    """Env steps [control steps] of each run."""
    eval_every: int = 10_000
    """Env steps between evaluations (a multiple of the loop's 5 episodes per iteration)."""
    eval_episodes: int = 10
    """Episodes of each evaluation, from the same fixed starts."""
    eval_seed: int = 1000
    """Seed of the evaluation starts."""
    action_repeat: int = 2
    """Env steps per agent step (DMC's convention: 2)."""
    out: Path = Path("runs/bench_dmc")
    """Folder of `results/` (one small JSON per run), `work/` (the runs' own files) and
    `report/` (table and plots)."""
    jobs: int = 1
    """Runs at once, each in its own process."""
    report_only: bool = False
    """Only redraw the table and plots from the result files under --out."""
    device: str = "cpu"
    """Torch device of the models."""
    episode_length: int | None = None
    """Override the tasks' 1000-step episodes [control steps] (quick checks only: the
    published curves are of 1000-step episodes)."""
    loop: LoopCfg = field(default_factory=LoopCfg)
    """Settings of the closed loop (`python run.py`'s by default); its task, budget,
    seed, output, model, agent, action repeat and evaluation are the benchmark's."""


@dataclass(frozen=True)
class Run:
    """One run: a method on a task with a seed, and where its files go."""

    method: str
    task: str
    seed: int
    result: Path
    work: Path
    settings: dict[str, Any] = field(default_factory=dict, compare=False)
    loop: LoopCfg = field(default_factory=LoopCfg, compare=False)


def bench(cfg: DmcBenchCfg) -> dict[str, Any]:
    if not cfg.report_only:
        _check(cfg)
        runs = plan(cfg)
        for run in runs:
            check_settings(run)
        todo = unfinished(runs)
        print(
            f"bench dmc: {len(runs)} runs ({len(runs) - len(todo)} finished), "
            f"{cfg.budget:,} env steps each (action repeat {cfg.action_repeat}: "
            f"{cfg.budget // cfg.action_repeat:,} agent steps), evaluation every "
            f"{cfg.eval_every:,} env steps on {cfg.eval_episodes} fixed starts",
            flush=True,
        )
        failed = execute(todo, cfg.jobs)
        if failed:
            print(f"{len(failed)} runs failed: " + ", ".join(failed), flush=True)
    return report(cfg.out)


# ---------------------------------------------------------------------- planning
def parse_method(method: str) -> dict[str, str]:
    """{"kind": "sac"} or {"kind": "loop", "model": ..., "agent": ...} of a method name."""
    if method == "sac":
        return {"kind": "sac"}
    if method == "loop":
        return {"kind": "loop", "model": "ensemble", "agent": "dreamer"}
    parts = method.split("-")
    if len(parts) == 3 and parts[0] == "loop" and parts[1] in MODELS and parts[2] in AGENT_KINDS:
        return {"kind": "loop", "model": parts[1], "agent": parts[2]}
    raise ValueError(
        f"unknown method {method!r}: use sac, loop or loop-<model>-<agent> with a model in "
        f"{', '.join(MODELS)} and an agent in {', '.join(AGENT_KINDS)}"
    )


def _check(cfg: DmcBenchCfg) -> None:
    import envs

    for task in cfg.tasks:
        envs.spec(task)  # an unknown task is one clear error
    for method in cfg.methods:
        parse_method(method)
    if cfg.budget < cfg.eval_every or cfg.eval_every < 1:
        raise ValueError(f"--budget {cfg.budget} must be at least --eval-every {cfg.eval_every}")
    if cfg.eval_episodes < 1 or cfg.jobs < 1 or cfg.action_repeat < 1:
        raise ValueError("--eval-episodes, --jobs and --action-repeat must be positive")
    if not cfg.seeds:
        raise ValueError("--seeds names no seed")
    for task in cfg.tasks:
        iteration = _loop_iteration(task, cfg)
        if any(parse_method(m)["kind"] == "loop" for m in cfg.methods) and (
            cfg.eval_every % iteration or cfg.budget % iteration
        ):
            raise ValueError(
                f"{task}: the loop collects {iteration:,} env steps an iteration; "
                f"--eval-every {cfg.eval_every} and --budget {cfg.budget} must be multiples"
            )


def _loop_iteration(task: str, cfg: DmcBenchCfg) -> int:
    import envs

    length = cfg.episode_length or envs.make_cfg(task).episode_length
    return cfg.loop.episodes_per_iter * length


def plan(cfg: DmcBenchCfg) -> list[Run]:
    """Every run of the benchmark, in the order they are run (seed-major, so that a
    partial benchmark has every task and method)."""
    settings = {
        "budget": cfg.budget,
        "eval_every": cfg.eval_every,
        "eval_episodes": cfg.eval_episodes,
        "eval_seed": cfg.eval_seed,
        "action_repeat": cfg.action_repeat,
        "device": cfg.device,
        "episode_length": cfg.episode_length,
    }
    return [
        Run(
            method,
            task,
            seed,
            result_path(cfg.out, task, method, seed),
            cfg.out / "work" / task / method / f"seed{seed}",
            settings,
            cfg.loop,
        )
        for seed in cfg.seeds
        for task in cfg.tasks
        for method in cfg.methods
    ]


def unfinished(runs: list[Run]) -> list[Run]:
    """The runs without a result file (never started, killed or failed)."""
    return [r for r in runs if not r.result.exists()]


def result_path(out: Path, task: str, method: str, seed: int) -> Path:
    return Path(out) / "results" / task / method / f"seed{seed}.json"


def flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level of dotted names (`dreamer.entropy`)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings_diff(recorded: dict[str, Any], planned: dict[str, Any]) -> list[str]:
    """`name (old -> new)` for every setting of the loop's `identity` that differs
    (absent: a setting the recorded run predates)."""
    old, new = flat_settings(identity(recorded)), flat_settings(identity(planned))
    return [
        f"{k} ({old.get(k, 'absent')} -> {new.get(k, 'absent')})"
        for k in sorted(old.keys() | new.keys())
        if old.get(k, "absent") != new.get(k, "absent")
    ]


def check_settings(run: Run) -> None:
    """A finished closed-loop run must have run with the settings this invocation would
    run it with: a result of other settings (older defaults, other --loop.* flags) is
    refused, by name, rather than skipped as done or pooled with new seeds."""
    if parse_method(run.method)["kind"] != "loop" or not run.result.exists():
        return
    recorded = read_json(run.result).get("method_settings", {}).get("loop", {})
    diff = settings_diff(recorded, loop_settings(run))
    if diff:
        raise ValueError(
            f"{run.result} was run with other loop settings: {', '.join(diff[:6])}"
            + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")
            + "; move it out of --out, or pass the --loop.* flags it ran with"
        )


# --------------------------------------------------------------------- executing
def execute(runs: list[Run], jobs: int) -> list[str]:
    """Run each in its own spawned process, `jobs` at once (a slot is refilled as soon as
    any run ends); the names of failed runs."""
    context = multiprocessing.get_context("spawn")
    pending, active, failed = list(runs), [], []
    while pending or active:
        while pending and len(active) < jobs:
            run = pending.pop(0)
            print(f"[{run.task} {run.method} seed {run.seed}] start", flush=True)
            process = context.Process(target=_child, args=(run,), name=run.method)
            process.start()
            active.append((run, process))
        ended = multiprocessing.connection.wait([p.sentinel for _, p in active])
        for run, process in [(r, p) for r, p in active if p.sentinel in ended]:
            active.remove((run, process))
            process.join()
            if process.exitcode != 0 or not run.result.exists():
                failed.append(f"{run.task}/{run.method}/seed{run.seed}")
    return failed


def _child(run: Run) -> None:
    """A run's process: the run, then its result file (atomically)."""
    import torch

    torch.set_num_threads(1)  # runs side by side share the machine's cores
    try:
        started = time.perf_counter()
        kind = parse_method(run.method)
        body = _run_loop(run) if kind["kind"] == "loop" else _run_sac(run)
        result = {
            "schema": SCHEMA,
            "method": run.method,
            "task": run.task,
            "seed": run.seed,
            "env_step_unit": "control step (1000 per episode)",
            **run.settings,
            **body,
            "run_wall_s": time.perf_counter() - started,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_json_atomic(run.result, result)
        final = result["curve"][-1]
        print(
            f"[{run.task} {run.method} seed {run.seed}] return {final['return_mean']:.1f} "
            f"at {final['env_steps']:,} env steps, {result['wall_s']:.0f} s",
            flush=True,
        )
    except BaseException:
        traceback.print_exc()
        raise SystemExit(1) from None


def loop_config(run: Run) -> LoopCfg:
    """The closed loop's config of a run: the bench's settings over `--loop.*`."""
    s, kind = run.settings, parse_method(run.method)
    return replace(
        run.loop,
        task=run.task,
        budget=s["budget"],
        model=kind["model"],
        agent=kind["agent"],
        reset_every=0 if kind["agent"] in SB3_AGENTS else run.loop.reset_every,
        seed=run.seed,
        out=run.work,
        resume=run.work.exists(),  # a killed run continues from its last iteration
        action_repeat=s["action_repeat"],
        eval_episodes=s["eval_episodes"],
        eval_seed=s["eval_seed"],
        episode_length=s["episode_length"],
        video_steps=0,
        device=s["device"],
        progress=False,
        seeds=(),
    )


def loop_settings(run: Run) -> dict[str, Any]:
    """A run's loop config as its result file records it (JSON values)."""
    return plain_config(loop_config(run))


def _run_loop(run: Run) -> dict[str, Any]:
    from agents.jobs.loop import run_loop

    s = run.settings
    summary = run_loop(loop_config(run))
    curve = [
        {
            "env_steps": r["env_steps"],
            "return_mean": r["real_return"],
            "return_std": r["real_return_std"],
            "imagined_return": r["imagined_return"],
            "wall_s": r["wall_s"],
        }
        for r in summary["curve"]
        if r["env_steps"] % s["eval_every"] == 0
    ]
    return {
        "curve": curve,
        "wall_s": summary["wall_s"],
        "method_settings": {"loop": loop_settings(run)},
    }


def _run_sac(run: Run) -> dict[str, Any]:
    from agents.bench.loop import sac_curve

    s = run.settings
    cfg = LoopCfg(
        task=run.task,
        episode_length=s["episode_length"],
        action_repeat=s["action_repeat"],
        eval_episodes=s["eval_episodes"],
        eval_seed=s["eval_seed"],
    )
    sac = sac_curve(run.task, s["budget"], run.seed, cfg, s["eval_every"], run.work)
    curve = [
        {
            "env_steps": r["env_steps"],
            "return_mean": r["real_return"],
            "return_std": r["real_return_std"],
            "wall_s": r["wall_s"],
        }
        for r in sac["curve"]
    ]
    return {"curve": curve, "wall_s": sac["wall_s"], "method_settings": {"sb3": "SAC defaults"}}


# ---------------------------------------------------------------------- reporting
def load_results(out: Path) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """Result files under `<out>/results`, keyed by (task, method), then seed."""
    results: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for path in sorted((Path(out) / "results").glob("*/*/seed*.json")):
        r = read_json(path)
        if r.get("schema") != SCHEMA:
            raise ValueError(f"{path}: not a bench dmc result (schema {r.get('schema')})")
        results.setdefault((r["task"], r["method"]), {})[int(r["seed"])] = r
    for (task, method), runs in results.items():
        _check_poolable(task, method, runs)
    return results


def _check_poolable(task: str, method: str, runs: dict[int, dict[str, Any]]) -> None:
    """Seeds pooled into one mean must differ in their seed only."""
    settings = {
        seed: {k: v for k, v in r.get("method_settings", {}).get("loop", {}).items() if k != "seed"}
        for seed, r in runs.items()
    }
    first = min(settings)
    for seed, other in settings.items():
        if diff := settings_diff(settings[first], other):
            raise ValueError(
                f"{task}/{method}: seeds {first} and {seed} ran with other settings "
                f"({', '.join(diff[:6])}): their returns are not one method's"
            )


def at_step(runs: dict[int, dict[str, Any]], step: int) -> anchors.Anchor | None:
    """Mean and 95% CI over seeds of the return evaluated at exactly `step` env steps
    (None where no run reached it)."""
    values = [
        point["return_mean"]
        for r in runs.values()
        for point in r["curve"]
        if point["env_steps"] == step
    ]
    return anchors.mean_ci95(values) if values else None


def _cell(a: anchors.Anchor | None) -> str:
    if a is None:
        return "-"
    if math.isnan(a.ci95):
        return f"{a.mean:.0f} (1 seed)"
    return f"{a.mean:.0f} ± {a.ci95:.0f} ({a.n_seeds})"


def _published(method: str, task: str, step: int) -> anchors.Anchor | None:
    try:
        return anchors.anchor_at(method, task, step)
    except KeyError:
        return None


def report(out: Path) -> dict[str, Any]:
    """The table (printed, and `<out>/report/table.md`) and one plot per task
    (`<out>/report/<task>.png`) from the result files under `out`."""
    results = load_results(out)
    if not results:
        print(f"no results under {Path(out) / 'results'} yet")
        return {"table": [], "mean_over_tasks": {}}
    tasks = sorted({t for t, _ in results})
    methods = sorted({m for _, m in results})
    rows, lines = [], []
    heads = [f"{s // 1000}k" for s in MILESTONES]
    lines.append(
        "| task | method | "
        + " | ".join(heads)
        + " | published at 100k: "
        + " / ".join(ANCHOR_METHODS)
        + " |"
    )
    lines.append("|---|---|" + "---|" * len(heads) + "---|")
    normalized: dict[str, dict[str, float]] = {m: {} for m in methods}  # task -> return/1000
    for task in tasks:
        published = " / ".join(
            f"{a.mean:.0f}" if (a := _published(m, task, MILESTONES[0])) else "-"
            for m in ANCHOR_METHODS
        )
        for method in methods:
            runs = results.get((task, method))
            if not runs:
                continue
            cells = {s: at_step(runs, s) for s in MILESTONES}
            first = cells[MILESTONES[0]]
            if first is not None:
                normalized[method][task] = first.mean / 1000
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "seeds": sorted(runs),
                    **{f"at_{s}": None if c is None else c._asdict() for s, c in cells.items()},
                }
            )
            lines.append(
                f"| {task} | {method} | "
                + " | ".join(_cell(cells[s]) for s in MILESTONES)
                + f" | {published} |"
            )
    # one task set for every mean: the tasks that every method has reached 100k on
    common = sorted(set.intersection(*(set(v) for v in normalized.values())))
    mean_over = {m: float(np.mean([v[t] for t in common])) for m, v in normalized.items() if common}
    published_mean = {}
    for m in ANCHOR_METHODS:
        values = [a.mean / 1000 for t in common if (a := _published(m, t, MILESTONES[0]))]
        if values and len(values) == len(common):
            published_mean[m] = float(np.mean(values))
    lines.append("")
    lines.append(
        f"Mean of return / 1000 at 100k env steps over the {len(common)} tasks every "
        f"method has reached it on ({', '.join(common) or 'none'}): "
        + ", ".join(f"{m} {v:.3f}" for m, v in mean_over.items())
        + "; published: "
        + ", ".join(f"{m} {v:.3f}" for m, v in published_mean.items())
    )
    lines.append(
        "(mean ± 95% CI half-width (seeds) of the deterministic policy's return on "
        "fixed starts; env steps are control steps, action repeat 2)"
    )
    text = "\n".join(lines)
    print(text)
    folder = Path(out) / "report"
    write_bytes_atomic(folder / "table.md", (text + "\n").encode())
    for task in tasks:
        _plot(folder / f"{task}.png", task, {m: results[t, m] for t, m in results if t == task})
    summary = {
        "table": rows,
        "mean_over_tasks": mean_over,
        "mean_tasks": common,
        "published_mean": published_mean,
    }
    write_json_atomic(folder / "table.json", summary)
    print(f"wrote {folder}/table.md, table.json and {len(tasks)} plots")
    return summary


def _plot(path: Path, task: str, by_method: dict[str, dict[int, dict[str, Any]]]) -> None:
    """Ours: mean over seeds with a 95% band; the published curves as lines, up to
    the longest of our runs."""
    fig = pictures.figure(6, 4)
    ax = fig.subplots()
    longest = 0
    for method, runs in sorted(by_method.items()):
        steps = sorted({p["env_steps"] for r in runs.values() for p in r["curve"]})
        stats = [at_step(runs, s) for s in steps]
        mean = np.array([a.mean for a in stats])
        half = np.array([0.0 if math.isnan(a.ci95) else a.ci95 for a in stats])
        (line,) = ax.plot(steps, mean, "o-", label=f"{method} ({len(runs)} seeds)")
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2, color=line.get_color())
        longest = max(longest, steps[-1])
    curves = anchors.load_anchors()
    # markers at the published points: the TD-MPC2 files have one every 100k env steps,
    # DreamerV3's own scores (dreamerv3_paper) one every 10k
    for method in (*ANCHOR_METHODS, "dreamerv3_paper"):
        c = curves.get((method, task))
        if c is None:
            continue
        keep = c.steps <= max(longest, MILESTONES[0])
        mean = np.nanmean(c.returns[keep], axis=1)
        ax.plot(c.steps[keep], mean, "x--", alpha=0.8, label=f"{method} (published)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_ylim(0, 1000)
    ax.set_title(task)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    pictures.write_figure(path, fig)
