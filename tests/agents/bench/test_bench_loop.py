"""`bench loop` on a tiny budget: both methods measured at the same env steps by
the same evaluation, and the table printed."""

from __future__ import annotations

import json

from agents.bench.loop import run_loop_bench
from agents.dreamer import DreamerCfg
from agents.jobs.loop import LoopCfg
from agents.sb3_agents import Sb3Cfg
from world_models.models.ensemble import EnsembleCfg


def test_loop_suite_measures_both_methods(tmp_path, capsys):
    base = LoopCfg(
        episode_length=100,
        episodes_per_iter=2,
        updates=2,
        wm_first_epochs=1,
        wm_epochs=1,
        wm_steps_per_epoch=2,
        eval_episodes=2,
        video_steps=0,
        progress=False,
        ensemble=EnsembleCfg(members=2, elites=1, hidden=16, layers=1),
        dreamer=DreamerCfg(hidden=16, layers=1, batch_size=8, horizon=3),
        sb3=Sb3Cfg(),
    )
    results = run_loop_bench(("pendulum_swingup",), 400, (1,), tmp_path, base)
    run = results["pendulum_swingup/seed1"]
    loop_steps = [r["env_steps"] for r in run["loop"]["curve"]]
    sac_steps = [r["env_steps"] for r in run["sac"]["curve"]]
    assert loop_steps == sac_steps == [200, 400]
    for r in run["loop"]["curve"] + run["sac"]["curve"]:
        assert 0.0 <= r["real_return"] <= 50.0  # 50 agent steps of rewards in [0, 1]
    table = capsys.readouterr().out
    assert "closed loop" in table and "SAC" in table and "10k" in table
    saved = json.loads((tmp_path / "bench_loop.json").read_text())
    assert saved["pendulum_swingup/seed1"]["sac"]["curve"] == run["sac"]["curve"]
    assert (tmp_path / "pendulum_swingup-seed1" / "loop" / "summary.json").exists()
