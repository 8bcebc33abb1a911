"""End to end on an Isaac Lab task: collect writes the project's HDF5 layout from
Isaac-Cartpole-Direct (true final observations included), a world model trains
on it and beats copying the last observation, eval-wm replays the ground truth
in Isaac Lab; the closed loop runs a short budget and `eval` reproduces its
evaluation from the saved agent. Isaac Lab holds one simulation per process:
each step builds its env and closes it."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("isaaclab_tasks", reason="Isaac Lab is not installed here")

import json  # noqa: E402

from agents.jobs.collect import CollectCfg, collect  # noqa: E402
from agents.jobs.evaluate import EvalCfg, run_eval  # noqa: E402
from agents.jobs.loop import LoopCfg  # noqa: E402
from run import closed_loop  # noqa: E402
from sim.data.dataset import Dataset  # noqa: E402
from world_models.evaluate import EvalWMCfg, evaluate_world_model  # noqa: E402
from world_models.models.ensemble import EnsembleCfg  # noqa: E402
from world_models.train import TrainWMCfg, train_world_model  # noqa: E402

pytestmark = pytest.mark.isaac


def test_collect_then_train_a_world_model(tmp_path):
    data = tmp_path / "data"
    cfg = CollectCfg(
        task="Isaac-Cartpole-Direct",
        backend="isaaclab",
        num_envs=16,
        episodes=24,
        policy="random",
        out=data,
        progress=False,
    )
    summary = collect(cfg)
    assert summary["episodes_recorded"] == 24
    ds = Dataset(data)
    assert len(ds) == 24 and ds.env_args["backend"] == "isaaclab"
    assert ds.env_args["nq"] == ds.env_args["nv"] == 2
    ended = 0
    for e in ds.episodes:
        ep = ds.episode(e, ("obs", "next_obs", "actions", "terminated", "truncated", "states"))
        n = len(ep["actions"])
        assert ep["obs"].shape == (n, 4) and ep["states"].shape == (n, 4)
        # consecutive steps chain: next_obs[t] is obs[t + 1]
        torch.testing.assert_close(
            torch.from_numpy(ep["next_obs"][:-1]), torch.from_numpy(ep["obs"][1:])
        )
        if ep["terminated"][-1]:  # the recorded last observation is off the track
            assert abs(ep["next_obs"][-1, 0]) > 3.0
            ended += 1
        else:
            assert ep["truncated"][-1] and n == 300
    assert ended > 0
    report = train_world_model(
        TrainWMCfg(
            data=data,
            model="ensemble",
            out=tmp_path / "wm",
            epochs=5,
            progress=False,
            ensemble=EnsembleCfg(members=3, elites=2, hidden=64, layers=2),
        )
    )
    err = report["open_loop"]
    for h in (1, 10):
        assert err["model"][h] < 0.5 * err["copy_last"][h], (h, err)
    # eval-wm replays the held-out windows in Isaac Lab from the recorded joint state
    rep = evaluate_world_model(
        EvalWMCfg(wm=tmp_path / "wm", starts=16, horizons=(1, 10, 25), progress=False)
    )
    assert rep["num_starts"] > 0 and rep["task"] == "Isaac-Cartpole-Direct"
    assert rep["replay"]["max_abs_obs_diff"] < 1e-4, rep["replay"]
    assert rep["replay"]["max_abs_reward_diff"] < 1e-5, rep["replay"]
    for h in ("1", "10"):  # (a small model on 5 epochs of random-action data)
        assert rep["state_error"]["ratio"][h] > 1.3, rep["state_error"]
    assert "video" not in rep["artifacts"] and rep["notes"]  # no renderer: said, not hidden


def test_closed_loop_then_eval(tmp_path):
    out = tmp_path / "loop"
    cfg = LoopCfg(
        task="Isaac-Cartpole-Direct",
        backend="isaaclab",
        budget=1000,
        episode_length=100,
        eval_episodes=3,
        wm_first_epochs=3,
        wm_epochs=2,
        wm_steps_per_epoch=50,
        updates=30,
        out=out,
        progress=False,
    )
    assert cfg.action_repeat == 1  # Isaac Lab repeats inside a control step (decimation)
    closed_loop(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["iterations"] == 2 and summary["env_steps"] == 1000
    assert summary["artifacts"]["videos"] == []  # kit-less Isaac Lab renders nothing
    for r in summary["curve"]:
        assert -50 < r["real_return"] < 10 and r["imagined_return"] == r["imagined_return"]
    # iteration 1 collected with the agent, iteration 0 with noise: both recorded
    ds = Dataset(out / "data")
    assert ds.env_args["backend"] == "isaaclab" and len(ds) == 10
    # `eval` rebuilds the env from the agent's checkpoint and reproduces the loop's
    # last evaluation (same fixed starts, deterministic policy and model)
    report = run_eval(
        EvalCfg(agent=out, wm=out / "wm" / "iter_001", episodes=3, out=tmp_path / "eval")
    )
    last = summary["curve"][-1]
    assert report["task"] == "Isaac-Cartpole-Direct"
    assert report["real_return"]["mean"] == pytest.approx(last["real_return"], abs=1e-4)
    assert report["imagined_return"]["mean"] == pytest.approx(last["imagined_return"], abs=1e-4)
