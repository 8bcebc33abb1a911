"""`run.py train-rl`: SB3 in the real simulator, with domain randomization drawn per
training episode, writes an agent that `run.py eval` scores as its curve says."""

from __future__ import annotations

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
