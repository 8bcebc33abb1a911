# Importing `sim` first selects headless rendering (MUJOCO_GL=egl) before any test
# module imports mujoco or dm_control.
import os
import subprocess

import pytest
import torch

import sim  # noqa: F401
from envs.registry import list_tasks, register
from envs.tasks.cartpole import CartpoleCfg, CartpoleEnv

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per pytest-xdist worker (`-n auto` starts one per core), and in the
    # processes its tests start: more threads than cores makes OpenMP spin for nothing
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


class FallingCartpole(CartpoleEnv):
    """Cart-pole balance that terminates when the pole leans past 25 degrees: a task
    whose episodes end at different steps, for the recorder and loader tests."""

    def _get_dones(self):
        _, time_out = super()._get_dones()
        return self.sim.qpos[:, 1].abs() > 0.44, time_out


if "test_cartpole_falls" not in list_tasks():
    register("test_cartpole_falls", FallingCartpole, CartpoleCfg, episode_length=300)


@pytest.fixture
def cli(capsys):
    """`python run.py ARGS` in this process (its imports paid once, for tests where the
    process itself is not under test): `cli(*args)` gives its exit status, stdout and
    stderr."""
    import run

    def call(*args: str) -> subprocess.CompletedProcess:
        try:
            code = run.main(list(args))
        except SystemExit as exit_:  # the argument parser's own exit
            code = exit_.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return call


def _seconds(item) -> float:
    """The duration a slow test declares (`@pytest.mark.slow(seconds=...)`), else 0."""
    mark = item.get_closest_marker("slow")
    return float(mark.kwargs.get("seconds", 0)) if mark is not None else 0.0


def pytest_collection_modifyitems(config, items):
    """Longest slow tests first: with pytest-xdist handing out one test at a time
    (`--maxschedchunk 1`, the CI's slow step) that is longest-first list scheduling,
    so no worker is left running a long test alone at the end. Tests marked `gpu` need
    a CUDA device: skipped without one (`.ci/gpu` runs them on a CUDA machine and fails
    on any skip)."""
    items.sort(key=_seconds, reverse=True)  # stable: tests without a duration keep their order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (bash .ci/gpu on a CUDA machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
