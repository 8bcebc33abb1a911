"""The closed loop end to end on a tiny budget: every artifact, `run.py eval`, and a run
killed with SIGKILL mid-iteration that `--resume` finishes as if never interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import world_models
from agents import base
from agents.jobs.evaluate import run_episodes
from agents.jobs.loop import AGENT_KINDS, RESET_STARTS, Loop, LoopCfg, run_loop
from sim.data.dataset import Dataset
from sim.data.loader import EpisodeData
from sim.randomization import RandomizationCfg
from world_models.imagined_env import ImaginedEnv, ImaginedEnvCfg
from world_models.pictures import decode_video

ROOT = Path(__file__).resolve().parents[3]
TINY = [
    "--task",
    "cartpole_swingup",
    "--budget",
    "600",
    "--episode-length",
    "100",
    "--episodes-per-iter",
    "2",
    "--updates",
    "4",
    "--wm-first-epochs",
    "2",
    "--wm-epochs",
    "1",
    "--wm-steps-per-epoch",
    "4",
    "--eval-episodes",
    "2",
    "--video-steps",
    "6",
    "--video-size",
    "96",
    "--ensemble.members",
    "3",
    "--ensemble.elites",
    "2",
    "--ensemble.hidden",
    "32",
    "--ensemble.layers",
    "2",
    "--dreamer.hidden",
    "32",
    "--dreamer.batch-size",
    "16",
    "--dreamer.horizon",
    "5",
    "--seed",
    "3",
]
ITERATIONS = 3  # 600 env steps / (2 episodes x 100 steps)


def _run(out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(ROOT / "run.py"), "--out", str(out), *TINY, *extra]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=check,
        cwd=ROOT,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("loop") / "run"
    proc = _run(out)
    assert "iter 3/3" in proc.stdout, proc.stdout + proc.stderr
    return out


def test_the_loop_writes_every_artifact(finished):
    out = finished
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["iterations"] == ITERATIONS
    assert [r["env_steps"] for r in summary["curve"]] == [200, 400, 600]
    for r in summary["curve"]:
        assert abs(r["gap"] - (r["imagined_return"] - r["real_return"])) < 1e-9
        assert 0.0 <= r["real_return"] <= 50.0  # 50 agent steps of rewards in [0, 1]
    # the dataset holds each iteration's episodes, recorded with action repeat 2
    data = Dataset(out / "data")
    assert data.episodes == list(range(2 * ITERATIONS))
    assert all(data.length(e) == 50 for e in data.episodes)
    # a world model per iteration, each fine-tuned from the one before
    for k in range(ITERATIONS):
        report = json.loads((out / "wm" / f"iter_{k:03d}" / "report.json").read_text())
        assert report["model"] == "ensemble"
    # the agent checkpoint acts alone and knows its env
    ckpt = base.read_checkpoint(out / "agent.pt")
    assert ckpt["env_args"]["env_kwargs"]["action_repeat"] == 2
    agent = base.load(out / "agent.pt")
    assert agent.act(torch.zeros(3, 5)).shape == (3, 1)
    # videos: real beside imagined, one frame per agent step, 96 px panes
    for k in range(ITERATIONS):
        frames = decode_video(out / "eval" / f"iter_{k:03d}" / "video.mp4")
        assert frames.shape == (6, 96, 2 * 96 + 2, 3)
        real, imagined = frames[:, 40:, :96].float(), frames[:, 40:, -96:].float()
        assert real.std() > 1 and imagined.std() > 1  # pictures (below the labels)
    for plot in ("returns.png", "meter.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the exploitation meter: the model's errors along each evaluation's real episodes
    for r in summary["curve"]:
        err = r["model_error"]
        assert err["obs_error"] > 0 and err["copy_last_error"] > 0 and err["reward_error"] >= 0
        assert err["real_return"] == pytest.approx(r["real_return"], abs=1e-3)
    # TensorBoard scalars, one per iteration
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in (
        "charts/real_return",
        "charts/imagined_return",
        "charts/imagination_gap",
        "charts/env_steps",
        "charts/wall_time_s",
        "world_model/open_loop_error_h1",
        "losses/actor_loss",
        "losses/critic_loss",
        "meter/reward_bias",
        "meter/obs_error",
    ):
        assert tag in tags
        assert [e.step for e in events.Scalars(tag)] == [200, 400, 600]


def test_eval_reports_real_and_imagined_returns_from_the_same_starts(finished, tmp_path):
    out = finished
    argv = [
        sys.executable,
        str(ROOT / "run.py"),
        "eval",
        "--agent",
        str(out),
        "--wm",
        str(out / "wm" / "iter_002"),
        "--episodes",
        "3",
        "--video-steps",
        "5",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["task"] == "cartpole_swingup" and report["episodes"] == 3
    assert report["steps"] == 50
    real, imagined = report["real_return"], report["imagined_return"]
    assert abs(report["gap"] - (imagined["mean"] - real["mean"])) < 1e-9
    assert real["min"] <= real["mean"] <= real["max"]
    assert decode_video(tmp_path / "video.mp4").shape == (5, 256, 2 * 256 + 2, 3)  # default
    # the loop's own evaluation used the same kind of starts: same seed, same returns
    summary = json.loads((out / "summary.json").read_text())
    argv[argv.index("--episodes") + 1] = "2"
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["real_return"]["mean"] == pytest.approx(summary["final_real_return"], abs=1e-9)
    final = summary["curve"][-1]["model_error"]  # and the same model errors on them
    for key in ("obs_error", "reward_bias", "predicted_return"):
        assert report["model_error"][key] == pytest.approx(final[key], rel=1e-5, abs=1e-7)
    missing = [sys.executable, str(ROOT / "run.py"), "eval", "--agent", str(tmp_path / "no.pt")]
    bad = subprocess.run(missing, capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "no such agent checkpoint" in bad.stderr


def test_refuses_to_overwrite_and_to_resume_other_settings(finished, cli):
    proc = cli("--out", str(finished), *TINY)
    assert proc.returncode == 2 and "--resume" in proc.stderr
    proc = cli("--out", str(finished), *TINY, "--resume", "--updates", "5")
    assert proc.returncode == 2 and "other settings" in proc.stderr


def test_resume_refuses_a_folder_no_loop_wrote(tmp_path, cli):
    """`--resume` into a user's folder that looks like a run (a `wm/iter_000`) touches
    nothing there: it is refused before anything is written or deleted."""
    theirs = tmp_path / "theirs"
    (theirs / "wm" / "iter_000").mkdir(parents=True)
    (theirs / "wm" / "iter_000" / "notes.txt").write_text("keep me")
    (theirs / "data.csv").write_text("1,2,3")
    before = sorted(p.relative_to(theirs) for p in theirs.rglob("*"))
    proc = cli("--out", str(theirs), *TINY, "--resume")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "holds files that no closed loop wrote" in proc.stderr
    assert sorted(p.relative_to(theirs) for p in theirs.rglob("*")) == before
    assert (theirs / "wm" / "iter_000" / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_sigkill_mid_iteration_then_resume_finishes_the_same_run(finished, tmp_path):
    out = tmp_path / "killed"
    argv = [sys.executable, str(ROOT / "run.py"), "--out", str(out), *TINY]
    kills = 0
    for moment in ("wm/iter_001", "eval/iter_002", "data/shard_000002.hdf5"):
        proc = subprocess.Popen(
            argv + (["--resume"] if kills else []),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not (out / moment).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "the run ended before it could be killed"
    proc = _run(out, "--resume")
    assert proc.returncode == 0
    got = json.loads((out / "summary.json").read_text())
    want = json.loads((finished / "summary.json").read_text())
    assert got["finished"] and got["iterations"] == ITERATIONS
    for a, b in zip(got["curve"], want["curve"], strict=True):
        for key in ("env_steps", "real_return", "imagined_return"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-5), key
    data, ref = Dataset(out / "data"), Dataset(finished / "data")
    assert data.episodes == ref.episodes
    for e in data.episodes:  # nothing lost, nothing duplicated, the same episodes
        for key, value in ref.episode(e).items():
            assert (data.episode(e)[key] == value).all(), (e, key)


RSSM = [
    "--model",
    "rssm",
    "--rssm.deter",
    "32",
    "--rssm.hidden",
    "32",
    "--rssm.stoch",
    "4",
    "--rssm.classes",
    "4",
    "--rssm.sequence-length",
    "10",
]


@pytest.mark.parametrize(
    "agent, model",
    [  # one of them in the default suite, the others with the slow tests
        ("mppi", []),
        pytest.param("sac", [], marks=pytest.mark.slow),
        pytest.param("ppo", [], marks=pytest.mark.slow),
        pytest.param("dreamer", RSSM, marks=pytest.mark.slow),
    ],
)
def test_other_agents_and_models_run_the_loop(agent, model, tmp_path):
    extra = [
        "--agent",
        agent,
        "--budget",
        "400",
        "--sb3-steps",
        "256",
        "--imagined-envs",
        "8",
        "--imagined-length",
        "10",
        "--mppi.samples",
        "8",
        "--mppi.horizon",
        "3",
        "--mppi.elites",
        "2",
        "--sb3.sac.learning-starts",
        "16",
        "--sb3.ppo.n-steps",
        "16",
        "--sb3.ppo.batch-size",
        "32",
        *model,
    ]
    proc = _run(tmp_path / "run", *extra)
    assert "iter 2/2" in proc.stdout, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["agent"] == agent and summary["finished"]
    assert summary["model"] == ("rssm" if model else "ensemble")
    acting = base.load(tmp_path / "run" / "agent.pt")
    assert acting.kind == agent
    assert acting.act(torch.zeros(2, 5)).shape == (2, 1)
    assert Dataset(tmp_path / "run" / "data").episodes == [0, 1, 2, 3]


def test_the_replay_value_loss_fits_the_critic_to_recorded_windows(tmp_path):
    extra = ["--budget", "400", "--dreamer.repval", "0.3", "--dreamer.replay-length", "8"]
    proc = _run(tmp_path / "run", *extra)
    assert "iter 2/2" in proc.stdout, proc.stdout + proc.stderr
    history = base.read_checkpoint(tmp_path / "run" / "learner.pt")["loop"]["history"]
    assert all(r["losses"]["replay_value_loss"] > 0 for r in history)
    # a window longer than every episode (100 steps, 50 agent steps) cannot be drawn
    long = ["--budget", "400", "--dreamer.repval", "0.3", "--dreamer.replay-length", "60"]
    proc = _run(tmp_path / "long", *long, check=False)
    assert proc.returncode != 0
    assert "error: --dreamer.replay-length 60 is longer than every episode" in proc.stderr


def test_reset_every_starts_each_improvement_from_a_fresh_actor_critic(finished, tmp_path):
    plain = ("--reset-every", "1", "--reset-judge", "none", "--reset-updates", "4")
    proc = _run(tmp_path / "run", *plain)
    assert "iter 3/3" in proc.stdout, proc.stdout + proc.stderr
    reset = base.read_checkpoint(tmp_path / "run" / "learner.pt")
    kept = base.read_checkpoint(finished / "learner.pt")
    # the optimisers were rebuilt before the last iteration's 4 updates; the learner's
    # count of updates (which anneals the exploration bonus) went on over all 12
    steps = {int(s["step"]) for s in reset["learner"]["actor_opt"]["state"].values()}
    assert steps == {4} and reset["learner"]["updates"] == 12
    steps = {int(s["step"]) for s in kept["learner"]["actor_opt"]["state"].values()}
    assert steps == {12} and kept["learner"]["updates"] == 12
    # the first iteration (nothing learned yet) is the same run; then they part
    assert reset["loop"]["history"][0]["real_return"] == kept["loop"]["history"][0]["real_return"]
    assert not torch.equal(
        reset["state_dict"]["actor.0.weight"], kept["state_dict"]["actor.0.weight"]
    )
    # by default every fifth iteration starts one afresh; SB3's agents have no
    # actor-critic of the loop's to start afresh
    assert [tyro.cli(LoopCfg, args=["--agent", a]).reset_every for a in AGENT_KINDS] == [
        0 if a in ("sac", "ppo") else 5 for a in AGENT_KINDS
    ]
    proc = _run(tmp_path / "sac", "--reset-every", "1", "--agent", "sac", check=False)
    assert proc.returncode != 0 and "error: --reset-every must be >= 0" in proc.stderr
    assert not (tmp_path / "sac").exists()


def test_the_imagined_judge_keeps_the_actor_critic_that_imagines_more(tmp_path):
    out = tmp_path / "run"
    proc = _run(out, "--reset-every", "1", "--reset-updates", "60", "--reset-judge", "imagined")
    assert "iter 3/3" in proc.stdout, proc.stdout + proc.stderr
    ckpt = base.read_checkpoint(out / "learner.pt")
    history = ckpt["loop"]["history"]
    assert "reset" not in history[0]  # nothing to reset before the first improvement
    for record in history[1:]:
        r = record["reset"]
        assert r["kept"] == ("fresh" if r["fresh_return"] >= r["going_return"] else "going")
    assert "fresh" in [r["reset"]["kept"] for r in history[1:]]  # (this seed: iteration 1)
    # Adam's steps: the going one's go on by 4; a fresh one that takes over has done 60;
    # the update count goes on through both (a fresh one's from the going one's)
    steps, count = 4, 4
    for record in history[1:]:
        fresh = record["reset"]["kept"] == "fresh"
        steps, count = (60, count + 4 + 60) if fresh else (steps + 4, count + 4)
    assert ckpt["learner"]["updates"] == count
    assert {int(s["step"]) for s in ckpt["learner"]["actor_opt"]["state"].values()} == {steps}
    # the agent that went on imagines the better return from the judging starts
    agent = base.load(out / "learner.pt")
    wm = world_models.load(out / "wm" / "iter_002")
    data = EpisodeData(out / "data")
    firsts = data.data["obs"][data.step == 0][-RESET_STARTS:]
    imagined = ImaginedEnv(
        wm,
        firsts,
        ImaginedEnvCfg(num_envs=len(firsts), episode_length=50, sample=False),
        in_order=True,
    )
    returns, _, _ = run_episodes(agent, imagined, imagined.reset())
    last = history[-1]["reset"]
    assert float(returns.mean()) == pytest.approx(max(last["going_return"], last["fresh_return"]))
    proc = _run(tmp_path / "bad", "--reset-every", "1", "--reset-updates", "0", check=False)
    assert proc.returncode != 0 and "error: --reset-updates must be >= 1" in proc.stderr
    assert not (tmp_path / "bad").exists()


def test_a_fresh_actor_critic_is_judged_by_the_next_collection_and_waits_through_resume(
    tmp_path,
):
    judged = ("--budget", "800", "--reset-every", "1", "--reset-updates", "60")  # judge: real
    out = tmp_path / "run"
    proc = _run(out, *judged)
    assert "iter 4/4" in proc.stdout, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("iter ")]
    assert ["reset:" in line for line in lines] == [False, False, True, True]
    ckpt = base.read_checkpoint(out / "learner.pt")
    history = ckpt["loop"]["history"]
    # iteration 1's fresh one is judged in iteration 2's collection: the going one acts
    # in row 0, the fresh one in row 1, and the fresh one goes on unless the going one
    # returned more; iteration 2's, in iteration 3's; the last trains none, as no
    # collection follows it to judge one
    assert "reset" not in history[0] and "reset" not in history[1]
    data = Dataset(out / "data")
    verdicts = []
    for k in (2, 3):
        going, fresh = (data.attrs(e) for e in (2 * k, 2 * k + 1))
        assert (going["second_agent"], fresh["second_agent"]) == (0.0, 1.0)
        verdict = history[k]["reset"]
        assert verdict["judge"] == "real"
        assert verdict["going_return"] == pytest.approx(going["episode_return"])
        assert verdict["fresh_return"] == pytest.approx(fresh["episode_return"])
        better = fresh["episode_return"] >= going["episode_return"]
        assert verdict["kept"] == ("fresh" if better else "going")
        verdicts.append(verdict)
        assert f"reset: the {verdict['kept']} actor-critic goes on (real return: " in lines[k]
    assert ckpt["challenger"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resets"] == [
        {"iteration": k, **v} for k, v in zip((2, 3), verdicts, strict=True)
    ]
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("reset/fresh_kept")] == [600, 800]
    kept = [float(v["kept"] == "fresh") for v in verdicts]
    assert [e.value for e in events.Scalars("reset/fresh_kept")] == kept
    # stopped after iteration 1, the run leaves its fresh one waiting in learner.pt for
    # a collection to judge it (after the going one's 4 updates, its own 60); a resumed
    # run restores it and judges it as the uninterrupted run did
    args = ["--out", str(tmp_path / "stopped"), *TINY, *judged, "--no-progress"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the run above (OMP_NUM_THREADS=1)
    try:
        loop = Loop(tyro.cli(LoopCfg, args=args))
        try:
            for _ in range(2):
                loop.collect(), loop.fit_world_model(), loop.improve(), loop.evaluate()
                loop.commit()
        finally:
            loop.close()
        stopped = base.read_checkpoint(tmp_path / "stopped" / "learner.pt")
        waiting = stopped["challenger"]
        assert waiting["learner"]["updates"] == stopped["learner"]["updates"] + 60
        assert not torch.equal(
            waiting["state_dict"]["actor.0.weight"], stopped["state_dict"]["actor.0.weight"]
        )
        resumed = Loop(tyro.cli(LoopCfg, args=[*args, "--resume"]))
        try:
            assert resumed.iteration == 2 and resumed.challenger is not None
            for key, value in waiting["state_dict"].items():
                assert torch.equal(resumed.challenger.agent.state_dict()[key], value), key
            assert resumed.challenger.updates == waiting["learner"]["updates"]
        finally:
            resumed.close()
        run_loop(tyro.cli(LoopCfg, args=[*args, "--resume"]))
    finally:
        torch.set_num_threads(threads)
    finished = json.loads((tmp_path / "stopped" / "summary.json").read_text())
    assert [r["iteration"] for r in finished["resets"]] == [2, 3]
    for got, want in zip(finished["resets"], summary["resets"], strict=True):
        assert got["kept"] == want["kept"]
        for key in ("going_return", "fresh_return"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-5), key
    # one episode per iteration leaves nothing to share
    proc = _run(tmp_path / "one", "--reset-every", "1", "--episodes-per-iter", "1", check=False)
    assert proc.returncode != 0 and "error: --reset-judge real shares a collection" in proc.stderr
    assert not (tmp_path / "one").exists()


def test_randomize_draws_the_collections_physics_and_the_evaluation_stays_nominal(tmp_path):
    cfg = tyro.cli(
        LoopCfg,
        args=[*TINY, "--out", str(tmp_path / "run"), "--randomize.mass-scale", "0.5", "1.5"],
    )
    loop = Loop(cfg)
    loop.collect()
    data = Dataset(tmp_path / "run" / "data")
    assert data.env_args["env_kwargs"]["randomization"]["mass_scale"] == [0.5, 1.5]
    masses = {tuple(data.attrs(e)["rand_mass_scale"]) for e in data.episodes}
    assert len(masses) == len(data.episodes) == 2
    assert all(0.5 <= m <= 1.5 for drawn in masses for m in drawn)
    evaluation = loop._make_eval_env()
    assert evaluation.cfg.randomization == RandomizationCfg()
    evaluation.close()
