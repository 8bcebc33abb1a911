"""`bench dmc`: methods x tasks x seeds, one process and one result file per run,
finished runs skipped, the table's statistics and the published anchors beside them."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agents.bench import anchors, dmc
from agents.dreamer import DreamerCfg
from agents.jobs.loop import LoopCfg
from world_models.models.ensemble import EnsembleCfg

stats = pytest.importorskip("scipy.stats")


def tiny_loop() -> LoopCfg:
    return LoopCfg(
        episodes_per_iter=2,
        updates=2,
        wm_first_epochs=1,
        wm_epochs=1,
        wm_steps_per_epoch=2,
        ensemble=EnsembleCfg(members=2, elites=1, hidden=16, layers=1),
        dreamer=DreamerCfg(hidden=16, layers=1, batch_size=8, horizon=3),
    )


def test_methods_are_named_or_refused():
    assert dmc.parse_method("sac") == {"kind": "sac"}
    assert dmc.parse_method("loop") == {"kind": "loop", "model": "ensemble", "agent": "dreamer"}
    assert dmc.parse_method("loop-rssm-mppi") == {"kind": "loop", "model": "rssm", "agent": "mppi"}
    with pytest.raises(ValueError, match="unknown method 'loop-gpt-dreamer'"):
        dmc.parse_method("loop-gpt-dreamer")


def test_bad_settings_are_one_error_each(tmp_path):
    with pytest.raises(ValueError, match="unknown task .no_such_task."):
        dmc.bench(dmc.DmcBenchCfg(tasks=("no_such_task",), out=tmp_path))
    with pytest.raises(ValueError, match="must be multiples"):  # the loop's 5,000-step iterations
        dmc.bench(dmc.DmcBenchCfg(tasks=("cartpole_swingup",), eval_every=7_000, out=tmp_path))
    assert not (tmp_path / "results").exists()


def test_plan_skips_finished_runs(tmp_path):
    cfg = dmc.DmcBenchCfg(tasks=("cartpole_swingup", "reacher_easy"), seeds=(0, 1), out=tmp_path)
    runs = dmc.plan(cfg)
    assert len(runs) == 2 * 2 * 2  # tasks x methods x seeds, seed-major
    assert [r.seed for r in runs] == [0] * 4 + [1] * 4
    done = runs[2]
    done.result.parent.mkdir(parents=True)
    done.result.write_text("{}")
    assert dmc.unfinished(runs) == [r for r in runs if r is not done]


def test_a_failing_run_is_reported_and_leaves_no_result(tmp_path, capfd):
    run = dmc.Run(
        "loop-ensemble-dreamer",
        "no_such_task",
        0,
        tmp_path / "results" / "x.json",
        tmp_path / "work",
        {"budget": 10, "eval_every": 10, "eval_episodes": 1, "eval_seed": 0,
         "action_repeat": 2, "device": "cpu", "episode_length": None},
    )  # fmt: skip
    assert dmc.execute([run], jobs=1) == ["no_such_task/loop-ensemble-dreamer/seed0"]
    assert not run.result.exists()
    assert "no_such_task" in capfd.readouterr().err  # the child's traceback


def _result(task: str, method: str, seed: int, returns: dict[int, float]) -> dict:
    return {
        "schema": dmc.SCHEMA,
        "task": task,
        "method": method,
        "seed": seed,
        "curve": [
            {"env_steps": s, "return_mean": r, "return_std": 0.0} for s, r in returns.items()
        ],
        "wall_s": 1.0,
    }


def test_the_table_is_the_mean_and_t_interval_over_seeds(tmp_path, capsys):
    values = {0: 610.0, 1: 700.0, 2: 655.0}
    for seed, v in values.items():
        path = dmc.result_path(tmp_path, "walker_walk", "loop", seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(_result("walker_walk", "loop", seed, {50_000: 300.0, 100_000: v}))
        )
    single = dmc.result_path(tmp_path, "walker_walk", "sac", 0)
    single.parent.mkdir(parents=True)
    single.write_text(json.dumps(_result("walker_walk", "sac", 0, {100_000: 500.0})))
    summary = dmc.report(tmp_path)
    rows = {r["method"]: r for r in summary["table"]}
    x = np.array(list(values.values()))
    half = stats.t.ppf(0.975, 2) * x.std(ddof=1) / math.sqrt(3)
    assert rows["loop"]["at_100000"]["mean"] == pytest.approx(x.mean())
    assert rows["loop"]["at_100000"]["ci95"] == pytest.approx(half, rel=1e-6)
    assert rows["loop"]["at_500000"] is None  # no run reached it
    assert math.isnan(rows["sac"]["at_100000"]["ci95"])  # one seed: no interval
    assert summary["mean_over_tasks"]["loop"] == pytest.approx(x.mean() / 1000)
    published = anchors.anchor_at("tdmpc2", "walker_walk", 100_000).mean
    assert summary["published_mean"]["tdmpc2"] == pytest.approx(published / 1000)
    out = capsys.readouterr().out
    assert f"{x.mean():.0f} ± {half:.0f} (3)" in out and "500 (1 seed)" in out
    assert f"{published:.0f}" in out
    png = Path(tmp_path / "report" / "walker_walk.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert (tmp_path / "report" / "table.md").read_text().startswith("| task | method |")
    # a task only one method has reached 100k on leaves every mean unchanged: they are
    # taken over one task set, the tasks every method has
    extra = dmc.result_path(tmp_path, "cheetah_run", "sac", 0)
    extra.parent.mkdir(parents=True)
    extra.write_text(json.dumps(_result("cheetah_run", "sac", 0, {100_000: 200.0})))
    again = dmc.report(tmp_path)
    assert again["mean_tasks"] == ["walker_walk"]
    assert again["mean_over_tasks"] == summary["mean_over_tasks"]
    assert again["published_mean"] == summary["published_mean"]


def test_a_result_file_of_something_else_is_refused(tmp_path):
    path = dmc.result_path(tmp_path, "walker_walk", "loop", 0)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema": 99}))
    with pytest.raises(ValueError, match="not a bench dmc result"):
        dmc.report(tmp_path)


@pytest.mark.slow(seconds=60)
def test_runs_each_method_in_its_own_process_and_resumes(tmp_path, capsys):
    cfg = dmc.DmcBenchCfg(
        tasks=("pendulum_swingup",),
        seeds=(3,),
        budget=400,
        eval_every=200,
        eval_episodes=2,
        episode_length=100,
        out=tmp_path,
        loop=tiny_loop(),
    )
    summary = dmc.bench(cfg)
    assert {r["method"] for r in summary["table"]} == {"loop", "sac"}
    for method in ("loop", "sac"):
        result = json.loads(dmc.result_path(tmp_path, "pendulum_swingup", method, 3).read_text())
        assert [p["env_steps"] for p in result["curve"]] == [200, 400]
        assert result["eval_episodes"] == 2 and result["action_repeat"] == 2
        for p in result["curve"]:
            assert 0.0 <= p["return_mean"] <= 50.0  # 50 agent steps of rewards in [0, 1]
    loop = json.loads(dmc.result_path(tmp_path, "pendulum_swingup", "loop", 3).read_text())
    assert all("imagined_return" in p for p in loop["curve"])
    assert loop["method_settings"]["loop"]["ensemble"]["members"] == 2
    capsys.readouterr()
    dmc.bench(cfg)  # everything finished: nothing runs again
    assert "2 runs (2 finished)" in capsys.readouterr().out


def test_a_result_of_other_loop_settings_is_refused_not_skipped(tmp_path):
    cfg = dmc.DmcBenchCfg(tasks=("cartpole_swingup",), methods=("loop",), seeds=(0,), out=tmp_path)
    (run,) = dmc.plan(cfg)
    recorded = dmc.loop_settings(run)
    run.result.parent.mkdir(parents=True)
    run.result.write_text(json.dumps({"method_settings": {"loop": recorded}}))
    dmc.check_settings(run)  # the same settings: finished, skipped
    assert dmc.unfinished([run]) == []
    # another output folder or progress bar is the same method
    dmc.check_settings(replace(run, work=tmp_path / "elsewhere"))
    # a setting added since, whose value as it is now runs as the run did, is no
    # difference: the recorded run is the same method
    del recorded["dreamer"]["repval"], recorded["ensemble"]["imagined_reward"]
    run.result.write_text(json.dumps({"method_settings": {"loop": recorded}}))
    dmc.check_settings(run)
    # an older default (or other --loop.* flags) is named, and nothing is run over it
    del recorded["dreamer"]["mean_reg"]
    del recorded["reset_every"]  # (one of the loop's own, not of a section)
    recorded["updates"] = 100
    run.result.write_text(json.dumps({"method_settings": {"loop": recorded}}))
    names = r"dreamer.mean_reg \(0.0 -> 0.001\), reset_every \(0 -> 5\), updates \(100"
    with pytest.raises(ValueError, match=names):
        dmc.bench(cfg)
    assert json.loads(run.result.read_text())["method_settings"]["loop"]["updates"] == 100


def test_seeds_of_other_settings_are_not_pooled(tmp_path):
    for seed, updates in ((0, 300), (1, 100)):
        path = dmc.result_path(tmp_path, "walker_walk", "loop", seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        result = _result("walker_walk", "loop", seed, {100_000: 500.0})
        result["method_settings"] = {"loop": {"seed": seed, "updates": updates}}
        path.write_text(json.dumps(result))
    with pytest.raises(ValueError, match=r"walker_walk/loop: seeds 0 and 1 .*\(300 -> 100\)"):
        dmc.report(tmp_path)


def test_an_sb3_loop_leaves_the_settings_it_was_planned_with_as_they_were(tmp_path):
    # the loop sets SB3's algo, seed and device from its own; the settings a result
    # file records (and the next invocation compares) are the planned ones all the same
    from agents.jobs.loop import Loop

    cfg = dmc.DmcBenchCfg(tasks=("cartpole_swingup",), methods=("loop-ensemble-ppo",), seeds=(3,))
    (run,) = dmc.plan(replace(cfg, out=tmp_path))
    planned = dmc.loop_settings(run)
    loop = Loop(dmc.loop_config(run))
    assert (loop.cfg.sb3.algo, loop.cfg.sb3.seed) == ("ppo", 3)
    assert planned["sb3"]["algo"] == "sac"  # SB3's default, as planned
    # --loop.reset-every (5 by default) starts afresh the loop's own actor-critic, which
    # an SB3 agent has not
    assert run.loop.reset_every == 5 and planned["reset_every"] == 0
    after = dmc.loop_settings(run)
    assert after["sb3"] == planned["sb3"] and dmc.settings_diff(planned, after) == []
