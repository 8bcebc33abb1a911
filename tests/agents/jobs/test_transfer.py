"""`run.py transfer`: the nominal cell is `run.py eval`'s number to the digit, each
perturbation changes the physics it names and nothing else, a stopped matrix
resumes without scoring its cells again, and the files are written."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import envs
from agents import base
from agents.bc import BcAgent
from agents.expert_agent import ExpertAgent
from agents.jobs import transfer
from agents.jobs.collect import CollectCfg, env_args
from agents.jobs.evaluate import EvalCfg, evaluate, run_eval
from agents.jobs.transfer import Cell, TransferCfg, cell_env, run_transfer
from sim.data.atomic import read_json
from sim.randomization import RandomizationCfg

ROOT = Path(__file__).resolve().parents[3]
FIELDS = ("body_mass", "body_inertia", "dof_damping", "geom_friction", "actuator_gear")


def _save(agent, env, path, **env_kwargs):
    """`agent` saved with the env_args of `env`'s task (and `env_kwargs` recorded)."""
    args = env_args(CollectCfg(task=env.name), env)
    args["env_kwargs"].update(json.loads(json.dumps(env_kwargs)))
    base.save(agent, path, env_args=args)
    return path


@pytest.fixture
def expert(tmp_path):
    """The cart-pole's scripted expert as a checkpoint, recorded as trained with mass
    randomization (which evaluation leaves out: the nominal cell is nominal)."""
    env = envs.make("cartpole_swingup", num_envs=1)
    agent = ExpertAgent.for_env(env, noise_std=0.0)
    dr = RandomizationCfg(mass_scale=(0.5, 1.5)).__dict__
    path = _save(agent, env, tmp_path / "expert" / "agent.pt", randomization=dr)
    env.close()
    return path


def test_the_nominal_cell_is_evals_number_and_a_perturbation_moves_it(expert, tmp_path):
    report = run_eval(EvalCfg(agent=expert, episodes=6, out=tmp_path / "eval"))
    cfg = TransferCfg(
        agents=(str(expert), "expert"),
        names=("saved", "expert"),
        perturb=("mass", "action_delay"),
        scales=(0.5,),
        delays=(3,),
        episodes=6,
        out=tmp_path / "m",
        progress=False,
    )
    matrix = run_transfer(cfg)
    rows = matrix["cells"]["saved"]
    # `expert`, the task's expert built on the first agent's task: the saved one's twin
    built = matrix["cells"]["expert"]
    assert {k: r["returns"] for k, r in built.items()} == {k: r["returns"] for k, r in rows.items()}
    nominal = rows["mujoco/nominal/0"]
    assert nominal["mean"] == report["real_return"]["mean"]
    assert nominal["std"] == report["real_return"]["std"]
    assert nominal["kept"] == 1.0
    # on the nominal physics, though the agent's data was randomized
    env = envs.make("cartpole_swingup", num_envs=6, seed=1000)
    plain = evaluate(base.load(expert), env, seed=1000)
    assert plain["real_return"]["mean"] == nominal["mean"]
    lo, hi = nominal["ci95"]
    assert lo < nominal["mean"] < hi
    heavy, late = rows["mujoco/mass/0.5"], rows["mujoco/action_delay/3"]
    assert heavy["mean"] != nominal["mean"] and late["mean"] != nominal["mean"]
    assert late["kept"] == pytest.approx(late["mean"] / nominal["mean"])
    assert heavy["kept"] < 0.95  # a heavier cart and pole: a slower swing-up
    for name in ("matrix.json", "table.md", "heatmap.png"):
        assert (tmp_path / "m" / name).stat().st_size > 0
    text = (tmp_path / "m" / "table.md").read_text()
    assert "| mujoco | mass | +50% |" in text and "3 steps" in text


def _walker(tmp_path):
    env = envs.make("walker_walk", num_envs=1)
    agent = BcAgent(env.observation_dim, env.action_dim)
    path = _save(agent, env, tmp_path / "bc.pt")
    env.close()
    return path


@pytest.mark.parametrize(
    "perturbation, fields",
    [
        ("mass", ("body_mass", "body_inertia")),
        ("friction", ("geom_friction",)),
        ("damping", ("dof_damping",)),
        ("actuator_gain", ("actuator_gear",)),
        ("gravity", ()),
        ("action_delay", ()),
        ("obs_noise", ()),
    ],
)
def test_a_perturbation_changes_what_it_names_and_nothing_else(perturbation, fields, tmp_path):
    path = _walker(tmp_path)
    ckpt = base.read_checkpoint(path)
    agent = base.from_checkpoint(ckpt, path)
    cfg = TransferCfg(agents=(path,), episodes=2, progress=False)
    nominal = cell_env(cfg, agent, ckpt, Cell("mujoco", "nominal", 0.0))
    kind = transfer.PERTURBATIONS[perturbation]
    level = {"scale": 0.3, "steps": 2, "std": 0.1}[kind.unit]
    moved = cell_env(cfg, agent, ckpt, Cell("mujoco", perturbation, level))
    nominal.reset(seed=1000)
    moved.reset(seed=1000)
    for name in FIELDS:
        before, after = nominal.sim.model_field(name), moved.sim.model_field(name)
        if name not in fields:
            assert torch.equal(before, after), name
        elif name in ("geom_friction", "actuator_gear"):  # the first column only
            torch.testing.assert_close(after[..., 0], before[..., 0] * 1.3)
            assert torch.equal(after[..., 1:], before[..., 1:])
        else:
            torch.testing.assert_close(after, before * 1.3)
    gravity = moved.sim.model_field("opt.gravity")
    scale = 1.3 if perturbation == "gravity" else 1.0
    torch.testing.assert_close(gravity, nominal.sim.model_field("opt.gravity") * scale)
    # the one field of the env's randomization config, the rest of its config as eval's
    nominal_dr, moved_dr = nominal.cfg.randomization, moved.cfg.randomization
    assert nominal_dr == RandomizationCfg()
    changed = [k for k in nominal_dr.__dict__ if getattr(nominal_dr, k) != getattr(moved_dr, k)]
    assert changed == [kind.field]
    assert getattr(moved_dr, kind.field) in ((1.3, 1.3), (2, 2), 0.1)
    assert {**nominal.cfg.__dict__, "randomization": None} == {
        **moved.cfg.__dict__,
        "randomization": None,
    }
    nominal.close()
    moved.close()


def test_a_stopped_matrix_resumes_and_other_agents_are_refused(expert, tmp_path, monkeypatch):
    cfg = dict(agents=(expert,), scales=(-0.3,), episodes=2, out=tmp_path / "m", progress=False)
    run_transfer(TransferCfg(perturb=("mass",), **cfg))
    first = read_json(tmp_path / "m" / "matrix.json")["cells"]["expert"]
    scored = []
    real_score = transfer.score
    monkeypatch.setattr(
        transfer,
        "score",
        lambda c, k, p, cell: scored.append(cell.key) or real_score(c, k, p, cell),
    )
    again = run_transfer(TransferCfg(perturb=("mass", "damping"), **cfg))
    assert scored == ["mujoco/damping/-0.3"]
    for key, row in first.items():
        assert again["cells"]["expert"][key]["returns"] == row["returns"]
    other = _walker(tmp_path)
    with pytest.raises(ValueError, match="other settings .*agents"):
        run_transfer(TransferCfg(**{**cfg, "agents": (other,)}))


def test_bad_settings_are_named(expert, tmp_path):
    with pytest.raises(ValueError, match="unknown perturbation"):
        run_transfer(TransferCfg(agents=(expert,), perturb=("wind",)))
    with pytest.raises(ValueError, match="names must differ"):
        run_transfer(TransferCfg(agents=(expert, expert)))
    with pytest.raises(ValueError, match="relative changes > -1"):
        run_transfer(TransferCfg(agents=(expert,), scales=(-1.0,)))
    proc = subprocess.run(
        [
            sys.executable,
            "run.py",
            "transfer",
            "--agents",
            "expert",
            "--perturb",
            "wind",
            "--out",
            str(tmp_path / "m"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown perturbation(s) wind")
    assert not (tmp_path / "m").exists()  # nothing written


def test_cells_of_an_engine_of_another_environment_are_left_for_it(tmp_path, capsys):
    """The twin of Isaac Lab's cart-pole on `--backends mujoco isaaclab`, where Isaac Lab
    is not installed: the mujoco cells are measured, the isaaclab ones left (and said
    so) for the same command in Isaac Lab's environment."""
    pytest.importorskip("mujoco.batch")  # the project's environment, not Isaac Lab's
    if importlib.util.find_spec("isaaclab_tasks") is not None:
        pytest.skip("Isaac Lab is installed here")
    env = envs.make("isaac_cartpole", num_envs=1)
    path = _save(BcAgent(env.observation_dim, env.action_dim), env, tmp_path / "bc.pt")
    env.close()
    cfg = TransferCfg(
        agents=(path,),
        backends=("mujoco", "isaaclab"),
        perturb=("mass",),
        scales=(0.3,),
        episodes=2,
        out=tmp_path / "m",
        progress=False,
    )
    matrix = run_transfer(cfg)
    (rows,) = matrix["cells"].values()
    assert sorted(rows) == ["mujoco/mass/0.3", "mujoco/nominal/0"]
    row = rows["mujoco/nominal/0"]
    assert row["task"] == "isaac_cartpole" and row["backend"] == "mujoco"
    assert "not measured here: the isaaclab cells" in capsys.readouterr().out
