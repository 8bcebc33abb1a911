"""The Isaac Lab environment builder and backend errors, without Isaac Lab."""

from __future__ import annotations

import sys

import pytest

import envs
from sim import isaaclab_setup


def test_requirements_come_from_pyproject(tmp_path):
    reqs = isaaclab_setup.requirements()
    assert "isaaclab==3.0.0" in reqs and any(r.startswith("ray") for r in reqs)
    assert any(r.startswith("mujoco") for r in reqs) and any(r.startswith("pytest") for r in reqs)
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project]\nname = "x"\ndependencies = []\n')
    with pytest.raises(ValueError, match="no 'isaac' extra"):
        isaaclab_setup.requirements(bad)


def test_environment_is_keyed_by_interpreter_and_requirements(tmp_path, monkeypatch):
    monkeypatch.setenv("WAM_ISAACLAB_HOME", str(tmp_path))
    python = sys.executable
    a = isaaclab_setup.env_dir(python, ["isaaclab==3.0.0", "numpy"])
    assert a.parent == tmp_path and a.name.startswith("isaaclab-")
    assert isaaclab_setup.env_dir(python, ["numpy", "isaaclab==3.0.0"]) == a  # order-free
    assert isaaclab_setup.env_dir(python, ["isaaclab==3.0.0", "numpy>=2"]) != a
    # a complete environment is reused as it is: nothing is built
    (a / "bin").mkdir(parents=True)
    (a / isaaclab_setup.MARKER).write_text("{}")
    assert isaaclab_setup.build(python, ["numpy"], a) == a / "bin" / "python"


def test_a_python_that_is_not_3_12_is_refused(monkeypatch):
    monkeypatch.setenv("PYENV_ROOT", "/nonexistent")
    monkeypatch.setattr(isaaclab_setup.shutil, "which", lambda name: None)
    monkeypatch.delenv("WAM_ISAACLAB_PYTHON", raising=False)
    if not sys.version.startswith("3.12"):
        with pytest.raises(FileNotFoundError, match="Isaac Lab needs Python 3.12"):
            isaaclab_setup.find_python(sys.executable)


def test_backend_errors_name_the_problem():
    with pytest.raises(ValueError, match="'cartpole_swingup' is a wam-sandbox task"):
        envs.make("cartpole_swingup", backend="isaaclab")
    with pytest.raises(ValueError, match="unknown backend 'physx'"):
        envs.make("cartpole_swingup", backend="physx")


def test_without_isaac_lab_the_error_says_how_to_get_it():
    try:
        import isaaclab_tasks  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("Isaac Lab is installed here")
    with pytest.raises(ImportError, match="python -m sim.isaaclab_setup"):
        envs.make("Isaac-Cartpole-Direct", backend="isaaclab")
