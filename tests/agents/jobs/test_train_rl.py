"""`run.py train-rl`: SB3 in the real simulator, with domain randomization drawn per
training episode, writes an agent that `run.py eval` scores as its curve says."""

from __future__ import annotations

import torch

from agents import base
from agents.jobs.evaluate import EvalCfg, run_eval
from agents.jobs.train_rl import TrainRLCfg, run_train_rl
from agents.sb3_agents import SacCfg, Sb3Cfg
from sim.data.atomic import read_json
from sim.randomization import RandomizationCfg


def test_the_agent_and_curve_of_a_randomized_run(tmp_path):
    dr = RandomizationCfg(mass_scale=(0.5, 1.5))
    cfg = TrainRLCfg(
        task="pendulum_swingup",
        steps=400,
        eval_every=200,
        eval_episodes=3,
        episode_length=100,
        randomize=dr,
        out=tmp_path / "rl",
        sb3=Sb3Cfg(sac=SacCfg(learning_starts=50)),
        progress=False,
    )
    summary = run_train_rl(cfg)
    assert [r["env_steps"] for r in summary["curve"]] == [200, 400]
    assert read_json(tmp_path / "rl" / "summary.json")["curve"] == summary["curve"]
    ckpt = base.read_checkpoint(tmp_path / "rl" / "agent.pt")
    assert ckpt["kind"] == "sac"
    assert ckpt["env_args"]["env_kwargs"]["randomization"]["mass_scale"] == [0.5, 1.5]
    assert ckpt["env_args"]["env_kwargs"]["action_repeat"] == 2
    report = run_eval(EvalCfg(agent=tmp_path / "rl", episodes=3, seed=1000, out=tmp_path / "e"))
    assert report["real_return"]["mean"] == summary["curve"][-1]["real_return"]
    assert any((tmp_path / "rl" / "tb").rglob("events.out.tfevents.*"))


def test_init_starts_from_an_agents_weights(tmp_path):
    """Before SAC's first update (learning_starts beyond the run) the agent is the one
    it started from: its evaluation is the first run's to the digit."""
    short = dict(task="pendulum_swingup", eval_episodes=2, episode_length=100, progress=False)
    first = run_train_rl(
        TrainRLCfg(
            steps=200,
            eval_every=200,
            out=tmp_path / "a",
            seed=0,
            sb3=Sb3Cfg(sac=SacCfg(learning_starts=50)),
            **short,
        )
    )
    going = run_train_rl(
        TrainRLCfg(
            steps=100,
            eval_every=100,
            out=tmp_path / "b",
            seed=5,
            init=tmp_path / "a",
            sb3=Sb3Cfg(sac=SacCfg(learning_starts=1000)),
            **short,
        )
    )
    assert going["curve"][0]["real_return"] == first["curve"][-1]["real_return"]
    a, b = base.load(tmp_path / "a"), base.load(tmp_path / "b")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
