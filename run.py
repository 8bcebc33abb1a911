"""wam-sandbox command line.

python run.py            the closed loop (arrives with a later release)
python run.py collect    record episodes of a policy into an HDF5 dataset
python run.py inspect    summarise a dataset
python run.py bench      env throughput beside raw MuJoCo and Gymnasium
"""

from __future__ import annotations

import sys

import tyro

from agents.collect import CollectCfg, run_collect
from envs.bench import BenchCfg, run_bench
from sim.summary import InspectCfg, run_inspect

SUBCOMMANDS = {
    "collect": (CollectCfg, run_collect),
    "inspect": (InspectCfg, run_inspect),
    "bench": (BenchCfg, run_bench),
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
            except ValueError as err:  # bad input: say what is wrong, no traceback
                print(f"error: {err}", file=sys.stderr)
                return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
