"""Evaluation in the real simulator: tasks with a goal report the success rate of
each row's first episode; action errors along recorded demonstrations; the
real-vs-imagined video, drawn at its own size and labelled."""

from __future__ import annotations

import pytest
import torch

import envs
from agents.base import Agent
from agents.expert_agent import ExpertAgent
from agents.jobs.collect import CollectCfg, collect
from agents.jobs.evaluate import Trace, action_errors, evaluate, run_episodes
from envs.experts import make_expert
from sim.data.dataset import Dataset
from world_models import pictures
from world_models.base import Step, WorldModel


class Still(Agent):
    """Zero actions: the arm only drifts, the ball stays where it starts."""

    def act(self, obs, noise=None):
        return torch.zeros(len(obs), self.action_dim)


def test_success_rate_of_the_first_episodes():
    env = envs.make("push", num_envs=16, nthread=1)
    expert = evaluate(ExpertAgent.for_env(env, noise_std=0.0), env, seed=5)
    assert expert["real_success_rate"] >= 0.9
    still = evaluate(Still(env.observation_dim, env.action_dim, {}), env, seed=5)
    assert still["real_success_rate"] == 0.0
    assert still["real_return"]["mean"] < expert["real_return"]["mean"]
    swing = envs.make("pendulum_swingup", num_envs=2, episode_length=20)
    assert "real_success_rate" not in evaluate(Still(3, 1, {}), swing)


class Countdown:
    """Row i's episode ends after i + 2 steps; its observation is its step count (0 at
    a reset, as the env resets the row in the step that ends it), its reward the count
    plus the action."""

    num_envs = 3

    def __init__(self):
        self.t = torch.zeros(3)

    def step(self, action):
        self.t += 1
        ended = self.t >= torch.arange(3) + 2
        final, reward = self.t[:, None].clone(), self.t + action[:, 0]
        self.t = torch.where(ended, 0.0, self.t)
        info = {"final_obs": final}
        return self.t[:, None].clone(), reward, ended, torch.zeros(3, dtype=torch.bool), info


class Half(Still):
    def act(self, obs, noise=None):
        return torch.full((len(obs), 1), 0.5)


def test_a_trace_holds_each_rows_first_episode_with_its_true_last_observation():
    trace = Trace()
    total, _, _ = run_episodes(Half(1, 1, {}), Countdown(), torch.zeros(3, 1), trace=trace)
    assert trace.mask.tolist() == [[True, True, False, False]] + [
        [True, True, True, False],
        [True, True, True, True],
    ]
    assert trace.obs[2, :, 0].tolist() == [0, 1, 2, 3]
    assert trace.next_obs[:, :, 0].tolist()[2] == [1, 2, 3, 4]
    assert trace.next_obs[0, 1, 0] == 2  # the end of row 0's episode, not its reset
    assert trace.obs[0, 2, 0] == 0  # ... which the next step starts from
    assert (trace.actions == 0.5).all()
    torch.testing.assert_close(torch.where(trace.mask, trace.rewards, 0.0).sum(1).double(), total)
    assert total.tolist() == [1.5 + 2.5, 1.5 + 2.5 + 3.5, 1.5 + 2.5 + 3.5 + 4.5]


class Recorder(Still):
    """Zero actions, and a log of what it is told the env executed."""

    def __init__(self, *args):
        super().__init__(*args)
        self.seen: list[torch.Tensor] = []

    def executed(self, action):
        self.seen.append(action.clone())


def test_action_errors_against_the_recording_and_the_expert(tmp_path):
    collect(
        CollectCfg(
            task="push",
            num_envs=3,
            episodes=3,
            episode_length=30,
            policy="expert+noise",
            noise_std=0.3,
            seed=2,
            out=tmp_path / "demos",
            progress=False,
        )
    )
    data = Dataset(tmp_path / "demos")
    obs = torch.stack([torch.from_numpy(data.episode(e, ("obs",))["obs"]) for e in data.episodes])
    rec = torch.stack(
        [torch.from_numpy(data.episode(e, ("actions",))["actions"]) for e in data.episodes]
    )
    env = envs.make("push", num_envs=1)
    target = make_expert(env)(obs.reshape(-1, 18)).reshape(rec.shape)
    expert = action_errors(ExpertAgent.for_env(env, noise_std=0.0), tmp_path / "demos", env)
    assert expert["transitions"] == 90 and expert["mse_expert"] < 1e-10
    assert expert["mse_recorded"] == pytest.approx(expert["recorded_mse_expert"], rel=1e-5)
    assert expert["recorded_mse_expert"] == pytest.approx(
        (rec - target).pow(2).mean().item(), rel=1e-5
    )
    still = Recorder(18, 2, {})
    zero = action_errors(still, tmp_path / "demos", env)
    assert zero["mse_expert"] == pytest.approx(target.pow(2).mean().item(), rel=1e-5)
    assert zero["mse_recorded"] == pytest.approx(rec.pow(2).mean().item(), rel=1e-5)
    # the agent was told each step's recorded actions, in order
    torch.testing.assert_close(torch.stack(still.seen, 1), rec)
    with pytest.raises(ValueError, match="of 'push', the agent is evaluated on 'reacher_easy'"):
        action_errors(still, tmp_path / "demos", envs.make("reacher_easy", num_envs=1))


class Frozen(WorldModel):
    """A state model that imagines no motion and a reward of 0.5 a step; with
    `cont` 0 its episodes end after one step. A model that sees (config `pixels`)
    decodes every state to a checkerboard of its pixels."""

    kind = "test_frozen"

    def encode(self, obs, frames=None):
        return obs

    def next(self, state, action, generator=None):
        zero = state.new_zeros(len(state))
        return Step(state, state, zero + 0.5, zero + self.config.get("cont", 1.0), zero)

    def frames(self, state):
        h, w, _ = self.frame_shape
        board = (torch.arange(h)[:, None] + torch.arange(w)) % 2 * 200 + 20
        return board.to(torch.uint8)[None, :, :, None].expand(len(state), h, w, 3).clone()

    def loss(self, batch):
        raise NotImplementedError


def _real_run(size: int, steps: int, seed: int, **cfg):
    """Frames of row 0 rendered by the env itself at `size` px, and its returns so
    far, under zero actions from the starts of `reset(seed)`."""
    cfg = {**cfg, "render_width": size, "render_height": size}
    env = envs.make("cartpole_swingup", num_envs=2, **cfg)
    env.reset(seed=seed)
    frames, returns, ret = [], [], 0.0
    for _ in range(steps):
        frames.append(env.render([0])[0])
        returns.append(ret)
        _, reward, *_ = env.step(torch.zeros(2, 1))
        ret += float(reward[0])
    env.close()
    return torch.stack(frames), returns


def _outside(lines: list[str], size: int) -> torch.Tensor:
    """Mask `[size, size]` of a pane's pixels that a label of `lines` leaves alone."""
    rows, cols = pictures.label_box(lines, size, size)
    mask = torch.ones(size, size, dtype=torch.bool)
    mask[:rows, :cols] = False
    return mask


def _filmed(monkeypatch) -> dict:
    """The frames `write_video` encodes (exact, before the codec's losses), checked
    against the decoded file: the same size, equal up to compression."""
    seen = {}
    write = pictures.write_video

    def spy(out, frames, fps):
        seen["frames"], seen["fps"] = frames.clone(), fps
        return write(out, frames, fps)

    monkeypatch.setattr(pictures, "write_video", spy)
    return seen


def _check_decoded(path, frames: torch.Tensor) -> None:
    video = pictures.decode_video(path)
    assert video.shape == frames.shape
    assert (video.float() - frames.float()).abs().mean() < 3  # H.264 crf 12 or MPEG-4


def test_the_video_shows_labelled_panes_rendered_at_the_video_size(tmp_path, monkeypatch):
    """64 px camera frames, a 96 px video: the real pane is the env's own render at
    96 px (not a 64 px frame scaled up), the imagined one the same renderer set to
    the imagined state; each labelled with the step and the return so far."""
    size, steps, seed = 96, 4, 3
    cfg = {"episode_length": 10, "nthread": 1}
    env = envs.make("cartpole_swingup", num_envs=2, **cfg)  # renders 64 x 64
    seen = _filmed(monkeypatch)
    report = evaluate(
        Still(5, 1, {}), env, Frozen(5, 1, {}), seed, steps, tmp_path / "v.mp4", video_size=size
    )
    assert report["video"] == str(tmp_path / "v.mp4") and seen["fps"] == 25
    frames = seen["frames"]
    assert frames.shape == (steps, size, 2 * size + pictures.SEPARATOR, 3)
    _check_decoded(tmp_path / "v.mp4", frames)
    assert env.render().shape == (2, 64, 64, 3)  # the env's own frames keep their size
    truth, returns = _real_run(size, steps, seed, **cfg)
    assert truth.float().std() > 10  # a picture of the cart-pole
    small, _ = _real_run(64, 1, seed, **cfg)
    assert not torch.equal(pictures.resize(small, size, size)[0], truth[0])
    real, imagined = frames[:, :, :size], frames[:, :, size + pictures.SEPARATOR :]
    for t in range(steps):
        for pane, who, frame, ret in (
            (real[t], "real", truth[t], returns[t]),
            (imagined[t], "imagined", truth[0], 0.5 * t),  # the model keeps the start
        ):
            lines = [who, f"step {t}  return {ret:.2f}"]
            keep = _outside(lines, size)
            # the env's own render at the video size outside the label; the label on it
            assert torch.equal(pane[keep], frame[keep]), (t, who)
            assert (pane.float() - frame.float()).abs()[~keep].mean() > 20, (t, who)
            assert torch.equal(pane, pictures.label(frame, lines)), (t, who)


def test_a_pixel_models_frames_are_scaled_up_and_an_ended_episode_is_black(tmp_path, monkeypatch):
    """A model that sees 32 px frames: its pane is its frame scaled up 3x, nearest
    neighbour; after its episode ended (one step) the pane is black, labelled with
    its last step and return, until the real episode's video ends."""
    size, steps, seed = 96, 4, 5
    cfg = {"episode_length": 10, "nthread": 1, "render_width": 32, "render_height": 32}
    env = envs.make("cartpole_swingup", num_envs=2, **cfg)
    model = Frozen(5, 1, {"pixels": True, "frame_shape": [32, 32, 3], "cont": 0.0})
    seen = _filmed(monkeypatch)
    evaluate(Still(5, 1, {}), env, model, seed, steps, tmp_path / "v.mp4", video_size=size)
    frames = seen["frames"]
    assert frames.shape == (steps, size, 2 * size + pictures.SEPARATOR, 3)
    _check_decoded(tmp_path / "v.mp4", frames)
    imagined = frames[:, :, size + pictures.SEPARATOR :]
    board = pictures.resize(model.frames(torch.zeros(1, 5)), size, size)[0]
    assert torch.equal(board[:3, :3, 0], torch.full((3, 3), 20, dtype=torch.uint8))
    assert torch.equal(board[3:6, :3, 0], torch.full((3, 3), 220, dtype=torch.uint8))
    assert torch.equal(imagined[0], pictures.label(board, ["imagined", "step 0  return 0.00"]))
    black = torch.zeros(size, size, 3, dtype=torch.uint8)
    for t in range(1, steps):  # the episode ended after its first step: black
        assert torch.equal(imagined[t], pictures.label(black, ["imagined", "step 1  return 0.50"]))
    truth, returns = _real_run(size, steps, seed, **cfg)
    for t in range(steps):  # the real episode goes on, drawn at 96 px
        lines = ["real", f"step {t}  return {returns[t]:.2f}"]
        assert torch.equal(frames[t, :, :size], pictures.label(truth[t], lines))


def test_the_imagined_pane_shows_what_the_observation_leaves_out(tmp_path, monkeypatch):
    """A reacher's observation does not give its target's place: the state model's
    viewer runs row 0's own episode (its seed), so at the start both panes agree."""
    size = 64
    env = envs.make("reacher_easy", num_envs=2, episode_length=4, nthread=1)
    seen = _filmed(monkeypatch)
    evaluate(Still(6, 2, {}), env, Frozen(6, 2, {}), 3, 2, tmp_path / "v.mp4", video_size=size)
    first = seen["frames"][0]
    real, imagined = first[:, :size], first[:, size + pictures.SEPARATOR :]
    below = max(
        pictures.label_box([who, "step 0  return 0.00"], size, size)[0]
        for who in ("real", "imagined")
    )
    assert real[below:].float().std() > 10
    assert torch.equal(real[below:], imagined[below:])


def test_the_report_holds_the_models_error_along_the_agents_real_episodes():
    """A model that imagines no motion is exactly as wrong as copying the last
    observation, and it pays 0.5 a step whatever the sim pays."""
    env = envs.make("cartpole_swingup", num_envs=3, episode_length=20, nthread=1)
    report = evaluate(Still(5, 1, {}), env, Frozen(5, 1, {}), seed=4)
    err = report["model_error"]
    assert err["obs_error"] == pytest.approx(err["copy_last_error"]) and err["obs_error"] > 0
    steps = env.cfg.episode_length // env.cfg.action_repeat
    real_per_step = report["real_return"]["mean"] / steps
    assert err["reward_bias"] == pytest.approx(0.5 - real_per_step, abs=1e-5)
    assert err["real_return"] == pytest.approx(report["real_return"]["mean"], abs=1e-4)
    assert err["predicted_return"] == pytest.approx(0.5 * steps)
