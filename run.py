"""wam-sandbox command line.

python run.py            the closed loop (arrives with a later release)
python run.py collect    record episodes of a policy into an HDF5 dataset
python run.py inspect    summarise a dataset
python run.py export     write a dataset in the LeRobot v3.0 layout
python run.py train-wm   fit a world model to a dataset
python run.py eval-wm    a world model's fidelity in the real simulator: errors, video, plots
python run.py bench      env and data-generation throughput beside their peers
"""

from __future__ import annotations

import sys

import tyro

from agents.bench_data import run_all
from agents.collect import CollectCfg, run_collect
from envs.bench import BenchCfg
from sim.export import ExportCfg, run_export
from sim.summary import InspectCfg, run_inspect
from world_models.evaluate import EvalWMCfg, run_eval_wm
from world_models.train import TrainWMCfg, run_train_wm

SUBCOMMANDS = {
    "collect": (CollectCfg, run_collect),
    "inspect": (InspectCfg, run_inspect),
    "export": (ExportCfg, run_export),
    "train-wm": (TrainWMCfg, run_train_wm),
    "eval-wm": (EvalWMCfg, run_eval_wm),
    "bench": (BenchCfg, run_all),
}


def main(argv: list[str]) -> int:
    if not argv:
        print(
            "wam-sandbox: the closed loop (collect -> train the world model -> improve the\n"
            "policy in imagination -> evaluate in the real simulator) arrives with a later\n"
            "release. Available subcommands:"
        )
        for name, (cfg_cls, _) in SUBCOMMANDS.items():
            print(f"  python run.py {name:<8} {(cfg_cls.__doc__ or '').strip()}")
        print("Use `python run.py <subcommand> --help` for its options.")
        return 0
    cfg = tyro.extras.subcommand_cli_from_dict(
        {name: cfg_cls for name, (cfg_cls, _) in SUBCOMMANDS.items()}, args=argv
    )
    for cfg_cls, func in SUBCOMMANDS.values():
        if isinstance(cfg, cfg_cls):
            try:
                func(cfg)
            except (ValueError, ImportError) as err:  # bad input or a missing extra
                print(f"error: {err}", file=sys.stderr)
                return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
