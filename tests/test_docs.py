"""What the docs show works: the task of docs/adding-a-task.md, saved as a module of
its own, registers itself, passes the env checker, is a Gymnasium env, and its expert
balances the pendulum far better than random actions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import importlib.util, json, sys
import gymnasium as gym
import torch
import envs
from envs.checker import check_batched_env
from envs.experts import make_expert

spec = importlib.util.spec_from_file_location("pendulum_balance", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
check_batched_env(
    lambda n, seed, length: envs.make("pendulum_balance", n, seed=seed, episode_length=length)
)
gym.make("wam/PendulumBalance-v0").reset(seed=0)
returns = {}
for policy in ("expert", "random"):
    env = envs.make("pendulum_balance", num_envs=8, seed=1)
    expert, gen = make_expert(env), torch.Generator().manual_seed(0)
    obs, total = env.reset(), torch.zeros(8)
    for _ in range(env.cfg.episode_length):
        act = expert(obs) if policy == "expert" else torch.rand(8, 1, generator=gen) * 2 - 1
        obs, reward, *_ = env.step(act)
        total += reward
    returns[policy] = total.mean().item()
print(json.dumps({"length": env.cfg.episode_length, **returns}))
"""


def _example(page: Path) -> str:
    """The Python block that follows the page's `<!-- example-task -->` marker."""
    match = re.search(r"<!-- example-task -->\s*```python\n(.*?)```", page.read_text(), re.S)
    assert match, f"{page}: no example task"
    return match.group(1)


def test_the_documented_task_is_a_whole_task(tmp_path):
    module = tmp_path / "pendulum_balance.py"
    module.write_text(_example(ROOT / "docs" / "adding-a-task.md"))
    assert len(module.read_text().splitlines()) <= 45  # "a task in about 30 lines"
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(module)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["length"] == 200
    assert result["expert"] >= 0.9 * result["length"], result
    assert result["random"] <= 0.5 * result["length"], result
