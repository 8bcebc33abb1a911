"""wam-sandbox command line.

python run.py            the closed loop: collect -> fit the world model -> improve the
                         policy in imagination -> evaluate in the real simulator
python run.py --help     the closed loop's options
python run.py eval       an agent's return in the real simulator and in imagination
python run.py train-bc   behaviour cloning from a dataset
python run.py finetune   BC -> RL: PPO or GRPO on a cloned policy inside a world model,
                         checked in the real simulator beside the same in the real simulator
python run.py collect    record episodes of a policy into an HDF5 dataset
python run.py inspect    summarise a dataset
python run.py export     write a dataset in the LeRobot v3.0 layout
python run.py train-wm   fit a world model to a dataset
python run.py eval-wm    a world model's fidelity in the real simulator: errors, video, plots;
                         with --policies, how well it ranks policies (imagined vs real return)
python run.py bench      env and data-generation throughput beside their peers
"""

from __future__ import annotations

import sys

import tyro

from agents.bc import TrainBCCfg, run_train_bc
from agents.bench_data import run_all
from agents.bench_loop import run_loop_bench
from agents.collect import CollectCfg, run_collect
from agents.evaluate import EvalCfg, run_eval
from agents.finetune import FinetuneCfg, run_finetune
from agents.loop import LoopCfg, run_loop
from agents.rank import run_rank_policies
from agents.seeds import run_seeds
from envs.bench import BenchCfg, run_backend_bench
from sim.export import ExportCfg, run_export
from sim.summary import InspectCfg, run_inspect
from world_models.evaluate import EvalWMCfg, run_eval_wm
from world_models.train import TrainWMCfg, run_train_wm

SUBCOMMANDS = {
    "collect": (CollectCfg, run_collect),
    "inspect": (InspectCfg, run_inspect),
    "export": (ExportCfg, run_export),
    "train-wm": (TrainWMCfg, run_train_wm),
    "eval-wm": (EvalWMCfg, lambda cfg: eval_wm(cfg)),
    "eval": (EvalCfg, run_eval),
    "train-bc": (TrainBCCfg, run_train_bc),
    "finetune": (FinetuneCfg, run_finetune),
    "bench": (BenchCfg, lambda cfg: bench(cfg)),
}


def closed_loop(cfg: LoopCfg) -> dict:
    """Collect -> fit the world model -> improve in imagination -> evaluate, until the
    env-step budget; every finished iteration is committed (`--resume` continues).
    With --seeds, one run per seed (as Ray tasks with --ray) and a summary over them."""
    if not cfg.seeds:
        return run_loop(cfg)
    summary = run_seeds(cfg, run_loop)
    final = summary["final_real_return"]
    lo, hi = final["ci95"]
    print(
        f"seeds {', '.join(map(str, summary['seeds']))}: final real return "
        f"{final['mean']:.1f} (95% CI {lo:.1f} to {hi:.1f}) after {summary['env_steps']:,} "
        f"env steps; {summary['out']}/summary.json"
    )
    return summary


def eval_wm(cfg: EvalWMCfg) -> dict:
    """A world model's prediction errors in the real simulator, or with `--policies`
    how well its imagined returns rank policies."""
    return run_rank_policies(cfg) if cfg.policies else run_eval_wm(cfg)


def bench(cfg: BenchCfg) -> dict:
    """`--suite throughput`: env, data and world-model throughput; `--suite loop`: the
    closed loop beside model-free SAC; `--suite isaaclab`: our Isaac Lab adapter's
    overhead."""
    if cfg.suite == "loop":
        return run_loop_bench(
            cfg.loop_tasks, cfg.loop_budget, cfg.loop_seeds, cfg.loop_out, closed_loop
        )
    if cfg.suite == "isaaclab":
        from envs.isaaclab import bench as bench_isaaclab

        res = bench_isaaclab(cfg.isaaclab_task, cfg.num_envs, seed=cfg.seed, rounds=cfg.rounds)
        rate = res["steps_per_s"]
        print(
            f"{res['task']}, N = {res['num_envs']} on {res['device']}: Isaac Lab env "
            f"{rate['isaaclab']:,.0f} steps/s, through our adapter {rate['adapter']:,.0f} "
            f"steps/s (overhead {100 * res['adapter_overhead']:.1f}%)"
        )
        return res
    if cfg.suite != "throughput":
        raise ValueError(f"unknown bench suite {cfg.suite!r}; valid: throughput, loop, isaaclab")
    if cfg.backend != "mujoco":
        return run_backend_bench(cfg)
    return run_all(cfg)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        cfg, func = tyro.cli(LoopCfg, args=argv), closed_loop
    elif argv[0] in ("-h", "--help"):
        print(__doc__)
        tyro.cli(LoopCfg, args=argv)
        return 0
    else:
        cfg = tyro.extras.subcommand_cli_from_dict(
            {name: cfg_cls for name, (cfg_cls, _) in SUBCOMMANDS.items()}, args=argv
        )
        func = next(f for c, f in SUBCOMMANDS.values() if isinstance(cfg, c))
    try:
        func(cfg)
    except (ValueError, ImportError) as err:  # bad input or a missing extra
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
