"""Build (once) the Python 3.12 environment that runs Isaac Lab, and print its python.

    py=$(python -m sim.isaaclab_setup)          # build or reuse; progress on stderr
    PYTHONPATH=$PWD $py -m pytest -m isaac      # the Isaac Lab tests
    PYTHONPATH=$PWD $py run.py collect --backend isaaclab --task Isaac-Cartpole-Direct ...

Isaac Lab 3.0 installs on Python 3.12 only and pins its own torch, warp and
newton (which pins mujoco 3.12), so it gets its own virtual environment, outside
any clone: `~/.cache/wam-sandbox/isaaclab-<key>` (`$WAM_ISAACLAB_HOME` moves the
parent). The key hashes the interpreter's version and the requirements (the
project's dependencies, its `isaac` and `dist` extras and pytest, read from
`pyproject.toml`), so a changed requirement builds a new environment and an
unchanged one is reused as it is; about 8 GB and 5-10 minutes to build. The
project itself is not installed there: run it from a checkout with PYTHONPATH.

The interpreter is `--python PATH`, else `$WAM_ISAACLAB_PYTHON`, else `python3.12`
on PATH, else the newest pyenv 3.12. Standard library only.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "wam-sandbox-requirements.json"  # written last: the environment is complete


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """What the Isaac Lab environment installs: core dependencies, the `isaac` and
    `dist` extras (Ray workers run Isaac Lab tasks too) and pytest (the project's own
    `dev` pin of it)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    if "isaac" not in extras:
        raise ValueError(f"{pyproject}: no 'isaac' extra in [project.optional-dependencies]")
    pytest = [r for r in extras.get("dev", []) if r.replace(" ", "").startswith("pytest")]
    dist = list(extras.get("dist", []))
    return list(project["dependencies"]) + list(extras["isaac"]) + dist + (pytest or ["pytest"])


def find_python(explicit: str | None = None) -> str:
    candidates = [explicit, os.environ.get("WAM_ISAACLAB_PYTHON"), shutil.which("python3.12")]
    pyenv = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv}/versions/3.12*/bin/python"), reverse=True)
    for python in filter(None, candidates):
        try:
            if Path(python).exists() and _version(python).startswith("3.12."):
                return python
        except (OSError, subprocess.CalledProcessError):  # e.g. a pyenv shim with no version
            continue
    raise FileNotFoundError(
        "Isaac Lab needs Python 3.12: none found (pass --python, set WAM_ISAACLAB_PYTHON, "
        "or install it, e.g. `pyenv install 3.12`)"
    )


def _version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def env_dir(python: str, reqs: list[str]) -> Path:
    home = Path(os.environ.get("WAM_ISAACLAB_HOME", Path.home() / ".cache" / "wam-sandbox"))
    key = hashlib.sha256(json.dumps([_version(python), sorted(reqs)]).encode()).hexdigest()[:12]
    return home / f"isaaclab-{key}"


def build(python: str, reqs: list[str], target: Path) -> Path:
    """The environment's python, building `target` unless it is complete."""
    env_python = target / "bin" / "python"
    if (target / MARKER).exists():
        return env_python
    if target.exists():  # an interrupted build: start over
        shutil.rmtree(target)
    log = lambda msg: print(f"[isaaclab_setup] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"building {target} with {python} ({len(reqs)} requirements; ~8 GB, minutes)")
    subprocess.run([python, "-m", "venv", str(target)], check=True)
    pip = [str(env_python), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run(pip + reqs, check=True, stdout=sys.stderr)
    (target / MARKER).write_text(json.dumps({"python": _version(python), "requirements": reqs}))
    log("done")
    return env_python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", help="a Python 3.12 interpreter to build from")
    parser.add_argument(
        "--print-dir", action="store_true", help="print the directory, build nothing"
    )
    args = parser.parse_args(argv)
    python = find_python(args.python)
    reqs = requirements()
    target = env_dir(python, reqs)
    print(target if args.print_dir else build(python, reqs, target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
