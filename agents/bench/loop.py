"""`python run.py bench loop`: the closed loop beside model-free SAC.

For each task and seed, with the same env-step budget:

- the closed loop (`LoopCfg` defaults: ensemble world model, Dreamer actor-
  critic in imagination), whose real return is measured after every iteration;
- Stable-Baselines3 SAC on the real env (one env, SB3's defaults, one gradient
  step per agent step, the same action repeat), its policy measured at the same
  env steps.

Both are measured by the same evaluation (`agents.jobs.evaluate.evaluate`: the
deterministic policy from the same fixed start states), and both count env
steps as simulator control steps. The table gives the real return at 10k, 25k
and 50k env steps (the last evaluation at or before each) and the wall time.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import envs
from agents.jobs.loop import LoopCfg, run_loop
from agents.jobs.train_rl import TrainRLCfg, run_train_rl
from sim.data.atomic import write_json_atomic

MILESTONES = (10_000, 25_000, 50_000)


@dataclass
class LoopBenchCfg:
    """`bench loop`: the closed loop (`python run.py`'s settings) beside SAC."""

    tasks: tuple[str, ...] = ("cartpole_swingup", "pendulum_swingup", "reacher_easy")
    """Tasks to run both methods on."""
    budget: int = 50_000
    """Env steps [control steps] of each run."""
    seeds: tuple[int, ...] = (0,)
    """Seeds (one run of each method per task and seed)."""
    out: Path | None = None
    """Directory of the runs and of `bench_loop.json` (None: a temporary directory)."""


def bench(cfg: LoopBenchCfg) -> dict[str, Any]:
    return run_loop_bench(cfg.tasks, cfg.budget, cfg.seeds, cfg.out)


def sac_curve(
    task: str, budget: int, seed: int, loop: LoopCfg, every: int, out: Path
) -> dict[str, Any]:
    """SAC on the real env (`run.py train-rl`: SB3's defaults, one env, the loop's
    action repeat), its files in `out`: the real return on the loop's evaluation
    starts every `every` env steps."""
    summary = run_train_rl(
        TrainRLCfg(
            task=task,
            backend=loop.backend,
            steps=budget,
            action_repeat=loop.action_repeat,
            episode_length=loop.episode_length,
            eval_every=every,
            eval_episodes=loop.eval_episodes,
            eval_seed=loop.eval_seed,
            seed=seed,
            out=out,
        )
    )
    return {"curve": summary["curve"], "wall_s": summary["curve"][-1]["wall_s"]}


def _at(curve: list[dict[str, Any]], steps: int) -> float | None:
    """The return of the last evaluation at or before `steps` env steps."""
    done = [r for r in curve if r["env_steps"] <= steps]
    return done[-1]["real_return"] if done else None


def run_loop_bench(
    tasks: tuple[str, ...],
    budget: int,
    seeds: tuple[int, ...],
    out: Path | None,
    base: LoopCfg | None = None,
) -> dict[str, Any]:
    """One closed loop with the settings of `base` (default: `python run.py`'s) and one
    SAC run for each task and seed; prints the table, writes `<out>/bench_loop.json`."""
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="wam-bench-loop-"))
    results: dict[str, Any] = {}
    for task in tasks:
        envs.spec(task)
        for seed in seeds:
            cfg = replace(
                base or LoopCfg(),
                task=task,
                budget=budget,
                seed=seed,
                out=out / f"{task}-seed{seed}" / "loop",
            )
            print(f"closed loop: {task}, seed {seed}, {budget:,} env steps", flush=True)
            started = time.perf_counter()
            summary = run_loop(cfg)
            loop_result = {"curve": summary["curve"], "wall_s": time.perf_counter() - started}
            length = cfg.episode_length or envs.make_cfg(task).episode_length
            every = cfg.episodes_per_iter * length
            print(f"SAC: {task}, seed {seed}", flush=True)
            sac = sac_curve(task, budget, seed, cfg, every, out / f"{task}-seed{seed}" / "sac")
            results[f"{task}/seed{seed}"] = {
                "task": task,
                "seed": seed,
                "loop": loop_result,
                "sac": sac,
            }
    _print_table(results)
    write_json_atomic(out / "bench_loop.json", results)
    print(f"wrote {out / 'bench_loop.json'}")
    return results


def _print_table(results: dict[str, Any]) -> None:
    heads = [f"{m // 1000}k" for m in MILESTONES]
    print(
        f"\n{'task':<20} {'seed':>4} {'method':<12} "
        + " ".join(f"{h:>7}" for h in heads)
        + f" {'wall [s]':>9}"
    )
    for r in results.values():
        for name, key in (("closed loop", "loop"), ("SAC", "sac")):
            cells = [_at(r[key]["curve"], m) for m in MILESTONES]
            text = " ".join(f"{c:7.1f}" if c is not None else f"{'-':>7}" for c in cells)
            print(f"{r['task']:<20} {r['seed']:>4} {name:<12} {text} {r[key]['wall_s']:9.0f}")
