"""wam-sandbox command line.

python run.py            the closed loop: collect -> fit the world model -> improve the
                         policy in imagination -> evaluate in the real simulator
python run.py --help     the closed loop's options
python run.py eval       an agent's return in the real simulator and in imagination
python run.py train-bc   behaviour cloning from a dataset
python run.py finetune   BC -> RL: PPO or GRPO on a cloned policy inside a world model,
                         checked in the real simulator beside the same in the real simulator
python run.py train-rl   SB3 SAC or PPO in the real simulator, with --randomize.* for
                         domain randomization
python run.py transfer   agents' returns across physics engines and perturbed physics
                         (mass, friction, damping, gain, delay, noise): matrix, table,
                         heatmap
python run.py collect    record episodes of a policy into an HDF5 dataset
python run.py inspect    summarise a dataset
python run.py export     write a dataset in the LeRobot v3.0 layout
python run.py train-wm   fit a world model to a dataset
python run.py eval-wm    a world model's fidelity in the real simulator: errors, video, plots;
                         with --policies, how well it ranks policies (imagined vs real return)
python run.py bench SUITE  a benchmark beside its peers, measured in one run: env, data,
                         wm, ray, loop (the closed loop beside SAC), dmc (methods x
                         tasks x seeds beside published curves) or isaaclab
"""

from __future__ import annotations

import os
import sys

import tyro

from agents.bc import TrainBCCfg, run_train_bc
from agents.bench import data as bench_data
from agents.bench import dmc as bench_dmc
from agents.bench import env as bench_env
from agents.bench import isaaclab as bench_isaaclab
from agents.bench import loop as bench_loop
from agents.bench import ray as bench_ray
from agents.bench import wm as bench_wm
from agents.jobs.collect import CollectCfg
from agents.jobs.evaluate import EvalCfg, run_eval
from agents.jobs.finetune import FinetuneCfg, run_finetune
from agents.jobs.loop import LoopCfg, run_loop
from agents.jobs.rank import run_rank_policies
from agents.jobs.ray_collect import run_collect
from agents.jobs.seeds import run_seeds
from agents.jobs.train_rl import TrainRLCfg, run_train_rl
from agents.jobs.transfer import TransferCfg, run_transfer
from sim.data.export import ExportCfg, run_export
from sim.data.summary import InspectCfg, run_inspect
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
    "train-rl": (TrainRLCfg, run_train_rl),
    "transfer": (TransferCfg, run_transfer),
}
BENCH_SUITES = {
    "env": (bench_env.EnvBenchCfg, bench_env.bench),
    "data": (bench_data.DataBenchCfg, bench_data.bench),
    "wm": (bench_wm.WmBenchCfg, bench_wm.bench),
    "ray": (bench_ray.RayBenchCfg, bench_ray.bench),
    "loop": (bench_loop.LoopBenchCfg, bench_loop.bench),
    "dmc": (bench_dmc.DmcBenchCfg, bench_dmc.bench),
    "isaaclab": (bench_isaaclab.IsaacLabBenchCfg, bench_isaaclab.bench),
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


def _parse(commands: dict, argv: list[str], prog: str):
    """(config, function) of the subcommand that `argv` names among `commands`."""
    cfg = tyro.extras.subcommand_cli_from_dict(
        {name: cfg_cls for name, (cfg_cls, _) in commands.items()}, args=argv, prog=prog
    )
    return cfg, next(f for c, f in commands.values() if type(cfg) is c)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        tyro.cli(LoopCfg, args=argv)
        return 0
    if argv and argv[0] == "bench":
        cfg, func = _parse(BENCH_SUITES, argv[1:], "run.py bench")
    elif argv and argv[0] in SUBCOMMANDS:
        cfg, func = _parse(SUBCOMMANDS, argv, "run.py")
    else:
        cfg, func = tyro.cli(LoopCfg, args=argv), closed_loop
    try:
        func(cfg)
    except USER_ERRORS as err:
        if os.environ.get("WAM_SANDBOX_TRACEBACK"):
            raise
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2
    return 0


USER_ERRORS = (ValueError, ImportError, RuntimeError, KeyError, OSError)
"""What a command raises for bad input, a missing extra, a corrupt or missing file, a
full disk or a refused resource: one `error:` line and exit status 2
(`WAM_SANDBOX_TRACEBACK=1` shows the traceback instead)."""


def error_line(err: BaseException) -> str:
    """The message of `err` on one line: a KeyError's without its quotes, an OSError's
    with the path it names."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return " ".join(text.split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
