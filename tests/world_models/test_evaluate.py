"""eval-wm: a trained ensemble measured in the real simulator (errors against the
copy-last baseline, the replay check, the report, the video and pictures), a model
that sees (PSNR and SSIM recomputed here), the image metrics against scikit-image,
and the errors a user can make."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import envs
from agents.jobs.collect import CollectCfg, collect
from envs import make_from_args
from sim.data.atomic import read_json
from sim.data.dataset import Dataset
from sim.randomization import RandomizationCfg
from world_models import pictures
from world_models.base import Step, WorldModel, read_checkpoint, save_atomic
from world_models.evaluate import EvalWMCfg, evaluate_world_model
from world_models.train import TrainWMCfg, train_world_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, swingup_data):
    """Swing-up data of the expert with noise and an ensemble trained on it."""
    root = tmp_path_factory.mktemp("evalwm")
    train_world_model(
        TrainWMCfg(data=swingup_data, out=root / "wm", epochs=15, val_fraction=0.2, progress=False)
    )
    return root


@pytest.fixture(scope="module")
def evaluated(trained):
    cfg = EvalWMCfg(wm=trained / "wm", video_starts=2, progress=False)  # 64 starts
    return cfg, evaluate_world_model(cfg)


def _replayed_frames(data: Path, e: int, t: int, steps: list[int], **render) -> torch.Tensor:
    """The env's own renders of episode e replayed from step t, after each of `steps`."""
    ds = Dataset(data)
    ep = ds.episode(e, ("actions", "states"))
    env = make_from_args(ds.env_args, 1, episode_length=1000, **render)  # no time limit inside
    env.reset_envs(torch.tensor([0]), torch.tensor([ds.attrs(e)["seed"]]))
    nq = env.sim.nq
    state = torch.from_numpy(ep["states"][t : t + 1])
    env.set_physics_state(state[:, :nq], state[:, nq:])
    frames = {0: env.render()[0]}
    for k in range(1, max(steps) + 1):
        env.step(torch.from_numpy(ep["actions"][t + k - 1 : t + k]))
        frames[k] = env.render()[0]
    return torch.stack([frames[k] for k in steps])


def test_the_model_beats_copy_last_and_the_replay_is_exact(evaluated):
    cfg, report = evaluated
    err = report["state_error"]
    for h in ("1", "10"):  # measured (one thread): 8.4x and 9.1x
        assert err["ratio"][h] > 7.0, err
        assert err["ratio"][h] == pytest.approx(err["copy_last"][h] / err["model"][h])
    assert err["model"]["1"] < err["model"]["10"] < err["model"]["50"]  # errors grow
    assert err["copy_last"]["1"] < err["copy_last"]["10"] < err["copy_last"]["50"]
    # the real sim, reset to each episode's seed and put into the recorded state,
    # reproduces the recorded observations and rewards (0 here: deterministic physics)
    assert report["replay"]["max_abs_obs_diff"] < 1e-6
    assert report["replay"]["max_abs_reward_diff"] < 1e-6
    assert set(report["reward_error"]) == {"nmse", "mae"}
    assert all(v >= 0 for v in report["reward_error"]["mae"].values())
    # start windows: the test episodes, which chose nothing; room for the context and
    # the longest horizon
    ckpt = read_checkpoint(cfg.wm / "model.pt")
    test = ckpt["test_episodes"]
    assert test and not set(test) & set(ckpt["val_episodes"])
    assert report["episodes"] == "test" and report["num_starts"] == 64
    assert all(e in test and 8 <= t <= 500 - 50 for e, t in report["starts"])
    assert len({tuple(s) for s in report["starts"]}) == 64
    # the report on disk is the one returned
    out = cfg.wm / "eval"
    assert read_json(out / "report.json") == report
    assert report["model"]["kind"] == "ensemble" and report["task"] == "cartpole_swingup"
    assert "frames" not in report  # a state model has no pictures of its own
    assert not list(out.glob("*.tmp"))
    # the same seed draws the same windows (fewer starts: the first ones)
    again = evaluate_world_model(
        EvalWMCfg(wm=cfg.wm, starts=24, video_starts=0, out=out / "again", progress=False)
    )
    assert again["starts"] == report["starts"][:24]
    assert "video" not in again["artifacts"] and (out / "again" / "report.json").exists()


def test_video_and_pictures_show_the_real_runs(evaluated, trained, swingup_data):
    cfg, report = evaluated
    out = cfg.wm / "eval"
    video = pictures.decode_video(out / "video.mp4")
    # 2 rows of 64 x 64 panels, real | imagined, 2 px separators; one frame per step
    assert video.shape == (50, 2 * 64 + 2, 2 * 64 + 2, 3)
    for row in (0, 1):
        e, t = report["starts"][row]
        steps = [1, 25, 50]
        truth = _replayed_frames(swingup_data, e, t, steps).int()
        top = row * 66
        real = video[[k - 1 for k in steps], top : top + 64, :64].int()
        assert truth.float().std() > 10  # a picture of the cart-pole, not a blank frame
        diff = (real - truth).abs().float()
        assert diff.mean() < 2.0, diff.mean()  # equal up to the video's compression
        imagined = video[0, top : top + 64, 66:].int()  # step 1: the model is close
        assert imagined.float().std() > 10 and (imagined - truth[0]).abs().float().mean() < 3
    strip = Image.open(out / "strip.png")
    assert strip.size == (5 * 64 + 4 * 2, 2 * 64 + 2) and strip.mode == "RGB"
    strip_real = torch.from_numpy(np.array(strip))[:64, :64]
    e, t = report["starts"][0]
    torch.testing.assert_close(strip_real, _replayed_frames(swingup_data, e, t, [1])[0])
    plot = Image.open(out / "error_vs_horizon.png")
    assert plot.size == (500, 400)
    assert report["artifacts"]["video"] == str(out / "video.mp4")


class ConstantSight(WorldModel):
    """A test model that sees: copies the last observation, decodes every state to
    one grey frame, and keeps the frames it was given."""

    kind = "test_constant_sight"
    grey = 90

    def encode(self, obs, frames=None):
        return obs

    def observe(self, obs, actions, frames=None):
        return obs[:, -1]

    def next(self, state, action, generator=None):
        zero = state.new_zeros(len(state))
        return Step(state, state, zero, zero + 1, zero)

    def frames(self, state):
        return torch.full((len(state), *self.frame_shape), self.grey, dtype=torch.uint8)

    def loss(self, batch):
        raise NotImplementedError


def test_a_model_that_sees_gets_frames_and_psnr_ssim(trained, tmp_path, swingup_data):
    ckpt = read_checkpoint(trained / "wm" / "model.pt")
    model = ConstantSight(5, 1, {"pixels": True, "frame_shape": [32, 32, 3]})
    save_atomic(model.checkpoint(env_args=ckpt["env_args"]), tmp_path / "sight.pt")
    cfg = EvalWMCfg(
        wm=tmp_path / "sight.pt",
        data=swingup_data,
        starts=5,
        context=2,
        horizons=(3, 1),
        video_starts=2,
        out=tmp_path / "eval",
        progress=False,
    )
    report = evaluate_world_model(cfg)
    assert report["episodes"] == "all" and report["model"]["sees_pixels"]
    # recompute the frame metrics from the env's own renders at the model's frame size
    ours = {name: {"model": [], "copy_last": []} for name in ("psnr", "ssim")}
    for e, t in report["starts"]:
        frames = _replayed_frames(
            swingup_data, e, t, [0, 1, 3], render_width=32, render_height=32
        ).numpy()
        grey = np.full_like(frames[0], ConstantSight.grey)
        for name, fn in (("psnr", _sk_psnr), ("ssim", _sk_ssim)):
            ours[name]["model"].append([fn(grey, frames[1]), fn(grey, frames[2])])
            ours[name]["copy_last"].append([fn(frames[0], frames[1]), fn(frames[0], frames[2])])
    for name in ("psnr", "ssim"):
        for who in ("model", "copy_last"):
            want = np.minimum(np.array(ours[name][who]), 100.0).mean(0)
            got = [report["frames"][name][who][h] for h in ("1", "3")]
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert report["frames"]["psnr"]["copy_last"]["1"] > report["frames"]["psnr"]["model"]["1"]
    video = pictures.decode_video(tmp_path / "eval" / "video.mp4")
    assert video.shape == (3, 2 * 32 + 2, 2 * 32 + 2, 3)
    assert (video[:, :32, 34:].float() - ConstantSight.grey).abs().mean() < 2  # its frames
    assert Image.open(tmp_path / "eval" / "error_vs_horizon.png").size == (1000, 400)
    assert Image.open(tmp_path / "eval" / "strip.png").size == (2 * 32 + 2, 2 * 32 + 2)


def test_the_model_observes_the_context_frames(trained, tmp_path, monkeypatch, swingup_data):
    ckpt = read_checkpoint(trained / "wm" / "model.pt")
    model = ConstantSight(5, 1, {"pixels": True, "frame_shape": [16, 16, 3]})
    save_atomic(model.checkpoint(env_args=ckpt["env_args"]), tmp_path / "sight.pt")
    seen = {}
    real_observe = ConstantSight.observe

    def spy(self, obs, actions, frames=None):
        seen.update(obs=obs, actions=actions, frames=frames)
        return real_observe(self, obs, actions, frames)

    monkeypatch.setattr(ConstantSight, "observe", spy)
    report = evaluate_world_model(
        EvalWMCfg(
            wm=tmp_path / "sight.pt",
            data=swingup_data,
            starts=3,
            context=4,
            horizons=(2,),
            video_starts=0,
            out=tmp_path / "eval",
            progress=False,
        )
    )
    assert seen["obs"].shape == (3, 5, 5) and seen["actions"].shape == (3, 4, 1)
    assert seen["frames"].shape == (3, 5, 16, 16, 3) and seen["frames"].dtype == torch.uint8
    ds = Dataset(swingup_data)
    for i, (e, t) in enumerate(report["starts"]):
        ep = ds.episode(e, ("obs", "actions"))
        torch.testing.assert_close(seen["obs"][i], torch.from_numpy(ep["obs"][t - 4 : t + 1]))
        torch.testing.assert_close(seen["actions"][i], torch.from_numpy(ep["actions"][t - 4 : t]))
        # the frame of the start state, rendered at the model's size
        start = _replayed_frames(swingup_data, e, t, [0], render_width=16, render_height=16)
        torch.testing.assert_close(seen["frames"][i, -1], start[0])
    assert "video" not in report["artifacts"] and "frames" in report


def _sk_psnr(a, b):
    return peak_signal_noise_ratio(a, b, data_range=255)


def _sk_ssim(a, b):
    return structural_similarity(
        a,
        b,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )


def test_psnr_and_ssim_equal_scikit_image():
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (3, 40, 56, 3), generator=g, dtype=torch.uint8)
    y, x = torch.meshgrid(torch.arange(40.0), torch.arange(56.0), indexing="ij")
    shapes = []
    for k in range(3):  # gradients with a bright disc and a dark bar
        img = torch.stack((x * 4, y * 6, (x + y) * 2 + 40 * k), -1)
        img[((x - 20 - 5 * k) ** 2 + (y - 18) ** 2) < 60] = 250
        img[10 : 14 + k, 5:50] = 8
        shapes.append(img.clamp(0, 255).to(torch.uint8))
    structured = torch.stack(shapes)
    shifted = torch.roll(structured, (1, 2), dims=(1, 2))
    noisy = structured.int() + torch.randint(-20, 21, structured.shape, generator=g)
    pairs = [
        (noise, noise.roll(1, 0)),
        (structured, shifted),
        (structured, noisy.clamp(0, 255)),
        (structured, noise),
    ]
    for a, b in pairs:
        a, b = a.to(torch.uint8), b.to(torch.uint8)
        want_psnr = [_sk_psnr(p.numpy(), q.numpy()) for p, q in zip(a, b, strict=True)]
        want_ssim = [_sk_ssim(p.numpy(), q.numpy()) for p, q in zip(a, b, strict=True)]
        np.testing.assert_allclose(pictures.psnr(a, b).numpy(), want_psnr, rtol=1e-12)
        np.testing.assert_allclose(pictures.ssim(a, b).numpy(), want_ssim, rtol=0, atol=1e-10)
    same = pictures.ssim(structured, structured)
    torch.testing.assert_close(same, torch.ones(3, dtype=torch.float64))
    assert torch.isinf(pictures.psnr(structured, structured)).all()
    with pytest.raises(ValueError, match="at least 11 x 11"):
        pictures.ssim(noise[:, :8, :8], noise[:, :8, :8])


def test_errors_name_the_problem(trained, tmp_path):
    wm = trained / "wm"
    with pytest.raises(ValueError, match="unknown task 'cartpole'; valid tasks"):
        evaluate_world_model(EvalWMCfg(wm=wm, task="cartpole", progress=False))
    with pytest.raises(
        ValueError,
        match=r"task 'reacher_easy' has observations of 6 and "
        r"actions of 2 dims, the model .* takes 5 and 1",
    ):
        evaluate_world_model(EvalWMCfg(wm=wm, task="reacher_easy", progress=False))
    with pytest.raises(
        ValueError,
        match="no start window fits: context 8 \\+ horizon 600 "
        "needs an episode of at least 608 steps.* 500 to 500",
    ):
        evaluate_world_model(EvalWMCfg(wm=wm, horizons=(1, 600), progress=False))
    with pytest.raises(ValueError, match="no world model here"):
        evaluate_world_model(EvalWMCfg(wm=tmp_path, progress=False))
    with pytest.raises(ValueError, match="no such world model"):
        evaluate_world_model(EvalWMCfg(wm=tmp_path / "missing.pt", progress=False))
    with pytest.raises(ValueError, match="--starts must be >= 1"):
        evaluate_world_model(EvalWMCfg(wm=wm, starts=0, progress=False))
    done = subprocess.run(
        [sys.executable, "run.py", "eval-wm", "--wm", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "no world model here" in done.stderr, done.stderr


def test_make_from_args_rebuilds_the_recorded_env(tmp_path):
    rand = RandomizationCfg(mass_scale=(0.5, 1.5), action_delay=(0, 2), obs_noise_std=0.01)
    collect(
        CollectCfg(
            task="reacher_hard",
            num_envs=2,
            episodes=2,
            episode_length=20,
            out=tmp_path / "ds",
            randomize=rand,
            progress=False,
        )
    )
    ds = Dataset(tmp_path / "ds")
    env = make_from_args(ds.env_args, 3)
    assert env.cfg == envs.make("reacher_hard", 3, episode_length=20, randomization=rand).cfg
    assert make_from_args(ds.env_args, 1, render_width=32).cfg.render_width == 32
    other = make_from_args(ds.env_args, 1, task="reacher_easy")  # its own target size wins
    assert other.cfg.target_size == 0.05 and other.cfg.randomization == rand


def test_ground_truth_from_other_physics_is_named_and_costs_fidelity(evaluated, tmp_path):
    """The same policy's episodes with every mass x1.5 and the motor at x0.7: the
    report says so, and the model, fitted to nominal physics, errs more there."""
    shifted = RandomizationCfg(mass_scale=(1.5, 1.5), actuator_gain_scale=(0.7, 0.7))
    collect(
        CollectCfg(
            task="cartpole_swingup",
            num_envs=6,
            episodes=6,
            episode_length=500,
            policy="expert+noise",
            noise_std=0.3,
            seed=2,
            out=tmp_path / "heavy",
            randomize=shifted,
            progress=False,
        )
    )
    cfg, nominal = evaluated
    report = evaluate_world_model(
        EvalWMCfg(wm=cfg.wm, data=tmp_path / "heavy", video_starts=0, progress=False)
    )
    (note,) = [n for n in report["notes"] if "other physics" in n]
    assert "mass_scale [1.5, 1.5] (model's data: [1.0, 1.0])" in note
    assert "actuator_gain_scale [0.7, 0.7]" in note
    for h in ("1", "10"):
        assert report["state_error"]["model"][h] > 1.5 * nominal["state_error"]["model"][h]
    assert report["replay"]["max_abs_obs_diff"] < 1e-6  # the ground truth is the shifted sim
