"""The command line, run as a user runs it: subprocesses with tiny budgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def test_help_explains_the_loop_and_lists_subcommands(cli):
    out = run("--help")
    assert out.returncode == 0, out.stderr
    assert "closed loop" in out.stdout and "python run.py bench" in out.stdout
    assert "--budget" in out.stdout and "--resume" in out.stdout  # the loop's options
    bad = cli("--budget", "-5")
    assert bad.returncode == 2 and "budget" in bad.stderr
    bad = cli("--agent", "dqn")
    assert bad.returncode == 2 and "unknown agent 'dqn'" in bad.stderr


def test_bench_writes_json_with_every_peer(tmp_path):
    path = tmp_path / "nested" / "bench.json"
    out = run(
        "bench",
        "env",
        "--task",
        "pendulum_swingup",
        "--num-envs",
        "16",
        "--steps",
        "30",
        "--warmup",
        "5",
        "--rounds",
        "2",
        "--sync-envs",
        "4",
        "--sync-steps",
        "10",
        "--json",
        str(path),
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(path.read_text())
    speeds = result["steps_per_s"]
    for key in ("batched_env", "raw_rollout_one_call", "raw_rollout_per_step", "sync_vector_env"):
        assert speeds[key] > 0
    ratios = result["ratios"]
    assert (
        abs(ratios["batched_over_sync"] - speeds["batched_env"] / speeds["sync_vector_env"]) < 1e-9
    )
    assert "a/b" in out.stdout and "a/c" in out.stdout
    assert not list(path.parent.glob("*.tmp"))  # atomic write left no temp file
    assert "data" not in result


def test_wm_bench_trains_each_model_and_compares(tmp_path):
    """... in a temporary directory it removes afterwards."""
    path = tmp_path / "bench.json"
    (tmp_path / "tmp").mkdir()
    out = run(
        "bench",
        "wm",
        "--task",
        "pendulum_swingup",
        "--num-envs",
        "64",
        "--steps",
        "10",
        "--rounds",
        "1",
        "--json",
        str(path),
        TMPDIR=str(tmp_path / "tmp"),
    )
    assert out.returncode == 0, out.stderr
    assert not [p for p in (tmp_path / "tmp").iterdir() if p.name.startswith("wam-")]
    wm = json.loads(path.read_text())
    assert wm["real"] > 0 and set(wm["imagined"]) == {"ensemble", "rssm"}
    for kind, rate in wm["imagined"].items():
        assert rate > 0 and abs(wm["imagined_over_real"][kind] - rate / wm["real"]) < 1e-9
    assert out.stdout.count("i/h") == 2


def test_data_bench_measures_collection_and_loaders(tmp_path):
    path = tmp_path / "bench.json"
    out = run(
        "bench",
        "data",
        "--task",
        "pendulum_swingup",
        "--num-envs",
        "4",
        "--episode-length",
        "20",
        "--batches",
        "2",
        "--pixel-envs",
        "2",
        "--rounds",
        "1",
        "--loader-batch",
        "64",
        "--sequence-length",
        "8",
        "--json",
        str(path),
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(path.read_text())
    rates = data["transitions_per_s"]
    assert rates["stepping_only"] > 0 and rates["collect_recording"] > 0
    assert (
        abs(data["recording_over_stepping"] - rates["collect_recording"] / rates["stepping_only"])
        < 1e-9
    )
    assert data["pixel_frames_per_s"] > 0
    assert min(data["loader_transitions_per_s"].values()) > 0
    assert "e/d" in out.stdout and "frames/s" in out.stdout


def test_unknown_task_is_a_clear_error(cli):
    out = cli("bench", "env", "--task", "cartpole", "--num-envs", "4")
    assert out.returncode != 0
    assert "unknown task 'cartpole'" in out.stderr and "cartpole_swingup" in out.stderr


def test_collect_then_inspect(tmp_path, cli):
    out = tmp_path / "ds"
    done = run(
        "collect",
        "--task",
        "reacher_easy",
        "--episodes",
        "4",
        "--num-envs",
        "2",
        "--policy",
        "expert",
        "--episode-length",
        "200",
        "--out",
        str(out),
        "--randomize.mass-scale",
        "0.5",
        "1.5",
    )
    assert done.returncode == 0, done.stderr
    assert "recorded 4 episodes" in done.stdout
    assert "ep/s" in done.stderr and "transitions_per_s" in done.stderr  # the progress bar
    shown = cli("inspect", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "reacher_easy on mujoco, policy expert" in shown.stdout
    assert "transitions 800" in shown.stdout and "mass_scale" in shown.stdout
    again = cli("collect", "--task", "reacher_easy", "--episodes", "4", "--out", str(out))
    assert again.returncode == 2 and "already holds a dataset" in again.stderr
    bad = cli("inspect", str(tmp_path / "missing"))
    assert bad.returncode == 2 and "no such dataset" in bad.stderr


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The `error:` line of a failed command, checked to be its only one and no traceback."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and proc.stderr.rstrip().endswith(lines[0]), proc.stderr
    return lines[0]


def test_an_unwritable_out_is_one_error_line_naming_it(tmp_path):
    """An OSError (here: --out below a file) reaches the user as one line, and the file
    in the way is left as it was."""
    (tmp_path / "notes.txt").write_text("keep me")
    out = tmp_path / "notes.txt" / "ds"
    proc = run("collect", "--task", "pendulum_swingup", "--episodes", "2", "--out", str(out))
    assert str(out) in _one_error_line(proc) and "Not a directory" in proc.stderr
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_a_dataset_without_num_samples_names_the_file_and_the_attribute(tmp_path):
    """A robomimic-layout file whose episode lacks `num_samples` (a KeyError inside)."""
    import h5py
    import numpy as np

    path = tmp_path / "demo.hdf5"
    with h5py.File(path, "w") as f:
        demo = f.create_group("data/demo_0")
        demo["obs/state"] = np.zeros((5, 3), np.float32)
        demo["actions"] = np.zeros((5, 1), np.float32)
    line = _one_error_line(run("inspect", str(path)))
    assert str(path) in line and "num_samples" in line


def test_runtime_and_key_errors_become_one_line(monkeypatch, capsys):
    """What the shard writer, HDF5 or Ray raise as RuntimeError, and any KeyError, end
    in one `error:` line with exit status 2 (the message on one line)."""
    import run as cli

    for err in (RuntimeError("shard writer exited with\nstatus 1"), KeyError("num_samples")):

        def fails(cfg, err=err):
            raise err

        monkeypatch.setitem(cli.SUBCOMMANDS, "inspect", (cli.InspectCfg, fails))
        assert cli.main(["inspect", "somewhere"]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines in (
            ["error: shard writer exited with status 1"],
            ["error: num_samples"],
        ), lines


@pytest.mark.render
def test_the_command_line_renders_headless_whatever_it_imports_first():
    # `python run.py` imports the task modules (which import mujoco) through many
    # paths; whichever comes first, headless GL must be chosen before mujoco loads.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")
    }
    code = (
        "import run, envs, mujoco\n"
        "e = envs.make('cartpole_swingup', num_envs=1, seed=0); e.reset()\n"
        "f = e.render(width=32, height=24)\n"
        "print(mujoco.GLContext.__module__, tuple(f.shape), int(f.float().std() > 0))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mujoco.egl", "(1,", "24,", "32,", "3)", "1"]
