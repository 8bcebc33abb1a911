"""`python run.py eval-wm`: how faithful a world model is, measured in the real simulator.

Start windows (episode e, step t) are drawn from recorded episodes: when the
dataset is the model's training data, its test episodes (never used to choose
anything; a checkpoint from before test episodes existed offers its validation
episodes, and the report says so), else all of them. For each window:

1. **Ground truth, replayed.** The real env of the dataset (`envs.make_from_args`
   of its env_args) restarts episode e from its recorded seed (`reset_envs`: its
   own randomized physics and target), is put into the recorded physics state at
   step t (`set_physics_state`, with the env's step counter at t so per-step
   observation and action noise are the recorded ones), and steps the recorded
   actions t .. t + H - 1, H the longest horizon. Its time limit is raised past
   the window, so no autoreset interrupts it. How far the replayed observations
   lie from the recorded ones is reported (`replay`): about 0 for a deterministic
   simulator. (With an action delay the queue of actions still pending at t is
   not restored, and the first steps differ: the replay check shows by how much.)
2. **Imagination.** The model observes the recorded observations t - context .. t
   and the actions between them (and, for a model that sees, frames of those
   states rendered by the real env at the model's frame size), then predicts
   open loop on the same actions, mean predictions (no sampling).
3. **Metrics per horizon h.** State error: squared error over each dimension's
   variance in the dataset, averaged over dimensions and starts (1 = as wrong as
   guessing the mean), beside two baselines, copy-last-observation (obs_t as the
   prediction of obs_{t+h}) and constant velocity (obs_t + h (obs_t - obs_{t-1})),
   and the ratio of the copy-last error to the model's; reward error: MSE over the reward's
   variance and mean absolute error. For a model that sees, PSNR and SSIM of its
   decoded frames against the real ones, beside the copy-last-frame baseline
   (identical frames count as 100 dB).

Artifacts in `--out`: `report.json`, `video.mp4` (real left, imagined right, one
row per start, one frame per step; a state model's imagined panel is the real
renderer showing the imagined observation, `set_state_from_obs`),
`strip.png` (first start, real above imagined, at the horizons) and
`error_vs_horizon.png`. Every file is written atomically.

A model that predicts no observations (`predicts_obs` False: no decoder, the
`tdmpc2` model) is measured by its reward alone: its state errors (and their
ratio) are left empty and the report's `notes` say that the observation error is
not available; it gets no video, strip or error plot, having no observation to
draw, and the baselines are still reported.

Isaac Lab tasks (`backend="isaaclab"`) are replayed from their recorded joint
state the same way. They render no frames kit-less, so they get no video and no
strip (the report's `notes` say so), and their envs are built one at a time:
Isaac Lab holds one simulation per process.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import envs
from sim.data.atomic import write_json_atomic
from sim.data.dataset import Dataset
from world_models import pictures
from world_models.base import WorldModel, checkpoint_path, from_checkpoint, read_checkpoint
from world_models.metrics import HORIZONS, baseline_errors, no_obs_error

PSNR_CAP = 100.0  # [dB] what identical frames count as in the averages


@dataclass
class EvalWMCfg:
    """Fidelity of a world model in the real simulator: errors, video, pictures."""

    wm: Path
    """World model: a directory holding model.pt (as train-wm writes it), or a .pt file."""
    task: str | None = None
    """Task of the real env (default: the task the model was trained on)."""
    data: Path | None = None
    """Dataset of start states and actions (default: the model's training data, and of
    it the held-out episodes; of any other dataset every episode)."""
    starts: int = 64
    """Start windows (episode, step), drawn at random; fewer if fewer fit."""
    context: int = 8
    """Recorded steps the model observes before each start (0: the start alone)."""
    horizons: tuple[int, ...] = HORIZONS
    """Prediction horizons [agent steps] at which errors are reported."""
    video_starts: int = 4
    """Starts shown in the video, one row each (0: no video and no strip)."""
    fps: int = 10
    """Frames per second of the video (one frame per agent step)."""
    out: Path | None = None
    """Output directory (default: <wm dir>/eval)."""
    seed: int = 0
    """Seed of the choice of start windows."""
    device: str = "cpu"
    """Torch device of the model."""
    progress: bool = True
    """Show a progress bar."""
    policies: tuple[str, ...] = ()
    """Rank these policies instead: agent checkpoints, or expert:STD (the scripted
    expert with noise of that std); each runs `--episodes` episodes in the real
    simulator and in the model from the same starts (`policies.json`, `policies.png`:
    Pearson and Spearman correlation of imagined and real return)."""
    episodes: int = 16
    """Episodes per policy (with --policies)."""
    ray: bool = False
    """With --policies: evaluate the policies as Ray tasks, each in its own process
    (extra dist)."""
    ray_address: str | None = None
    """Ray cluster to join with --ray (None: start a Ray instance on this machine)."""
    worker_gpus: float = 0.0
    """GPUs Ray reserves for each policy's task (--ray, with --device cuda)."""


def _check_cfg(cfg: EvalWMCfg) -> tuple[int, ...]:
    if cfg.starts < 1:
        raise ValueError(f"--starts must be >= 1, got {cfg.starts}")
    if cfg.context < 1:
        raise ValueError(
            f"--context must be >= 1 (the constant-velocity baseline needs the step "
            f"before the start), got {cfg.context}"
        )
    if cfg.video_starts < 0:
        raise ValueError(f"--video-starts must be >= 0, got {cfg.video_starts}")
    if cfg.fps < 1:
        raise ValueError(f"--fps must be >= 1, got {cfg.fps}")
    if not cfg.horizons or min(cfg.horizons) < 1:
        raise ValueError(f"--horizons must be positive step counts, got {cfg.horizons}")
    return tuple(sorted(set(cfg.horizons)))


def _choose_windows(
    ds: Dataset, episodes: list[int], context: int, longest: int, count: int, seed: int
) -> list[tuple[int, int]]:
    """Up to `count` windows (e, t), drawn with `seed`: t >= context, t + longest within
    the episode and no termination in steps t .. t + longest - 1."""
    cands: list[np.ndarray] = []
    lengths = []
    for e in episodes:
        terminated = ds.episode(e, ("terminated",))["terminated"]
        lengths.append(len(terminated))
        end = int(np.argmax(terminated)) if terminated.any() else len(terminated)
        ts = np.arange(context, end - longest + 1)
        cands.append(np.stack((np.full(len(ts), e), ts), 1))
    pairs = np.concatenate(cands) if cands else np.zeros((0, 2), np.int64)
    if not len(pairs):
        shortest, longest_ep = (min(lengths), max(lengths)) if lengths else (0, 0)
        raise ValueError(
            f"{ds.path}: no start window fits: context {context} + horizon {longest} needs "
            f"an episode of at least {context + longest} steps (with no termination before "
            f"the horizon), but the {len(lengths)} episodes used are {shortest} to "
            f"{longest_ep} steps long; pass shorter --horizons or a smaller --context"
        )
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    return [(int(e), int(t)) for e, t in pairs[order[:count].numpy()]]


def _dataset_scales(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(variance of each observation dimension, variance of the reward, obs dim) over
    every recorded step of the dataset, float64."""
    n, s1, s2, r1, r2 = 0, 0.0, 0.0, 0.0, 0.0
    for e in ds.episodes:
        ep = ds.episode(e, ("obs", "rewards"))
        obs, rew = ep["obs"].astype(np.float64), ep["rewards"].astype(np.float64)
        n += len(obs)
        s1, s2 = s1 + obs.sum(0), s2 + (obs**2).sum(0)
        r1, r2 = r1 + rew.sum(), r2 + (rew**2).sum()
    if n < 2:
        raise ValueError(f"{ds.path}: too few recorded steps ({n}) for variances")
    var = (s2 - s1**2 / n) / (n - 1)
    reward_var = (r2 - r1**2 / n) / (n - 1)
    return (
        torch.from_numpy(np.maximum(var, 1e-8)),
        torch.tensor(max(reward_var, 1e-8), dtype=torch.float64),
        int(len(var)),
    )


@dataclass
class _TaskEnv:
    """What the task's real env is like, probed with one env."""

    action_repeat: int
    time_limit: int
    """Episode length [control steps]."""
    renders: bool
    render_size: tuple[int, int]
    """(height, width) of its frames; (0, 0) if it renders none."""
    notes: list[str]
    """What the report should say about it."""


@dataclass
class _Setup:
    """What the evaluation works on: the checked model, task, data and start windows."""

    cfg: EvalWMCfg
    horizons: tuple[int, ...]
    path: Path
    model: WorldModel
    task: str
    ds: Dataset
    episodes: list[int]
    which: str
    """Which episodes: "held-out" or "all"."""
    env: _TaskEnv
    obs_var: torch.Tensor
    reward_var: torch.Tensor
    windows: list[tuple[int, int]]
    rows: int
    """Starts shown in the video (0: no video)."""

    @property
    def longest(self) -> int:
        return max(self.horizons)

    @property
    def n(self) -> int:
        return len(self.windows)

    @property
    def sees(self) -> bool:
        return self.model.sees_pixels

    @property
    def frame_hw(self) -> tuple[int, int]:
        """Size of the frames rendered: the model's for a model that sees."""
        return tuple(self.model.frame_shape[:2]) if self.sees else self.env.render_size


@dataclass
class _Recorded:
    """The recorded windows, a row per start: steps t - context .. t + H."""

    obs: torch.Tensor
    """`[n, c + H + 1, d]`"""
    actions: torch.Tensor
    """`[n, c + H, a]` float32"""
    rewards: torch.Tensor
    """`[n, H]` float64, from step t"""
    states: torch.Tensor
    """`[n, c + 1, nq + nv]`, up to step t"""
    seeds: torch.Tensor
    starts: torch.Tensor
    """t of each window"""


@dataclass
class _Rollout:
    """Observations, rewards and frames along the windows, real or imagined."""

    obs: torch.Tensor
    """float64 `[n, H + 1, d]` from step t (real), `[n, H, d]` from step t + 1 (imagined)"""
    rew: torch.Tensor
    """float64 `[n, H]`"""
    video: torch.Tensor
    """uint8 `[rows, H, height, width, 3]`"""
    frames: dict[int, torch.Tensor]
    """Every start's frame at each horizon (models that see)"""


@torch.no_grad()
def evaluate_world_model(cfg: EvalWMCfg) -> dict[str, Any]:
    """Run the evaluation, write the artifacts; returns the report (as in report.json)."""
    began = time.perf_counter()
    s = _setup(cfg)
    rec = _read_windows(s.ds, s.windows, cfg.context, s.longest)
    real, viewer = _make_envs(s, rec)
    bar = tqdm(total=2 * s.longest, unit="step", disable=not cfg.progress, desc="replay")
    truth, context_frames, replay = _replay(s, rec, real, bar)  # 1. ground truth
    bar.set_description("imagination")
    pred = _imagine(s, rec, context_frames, viewer, bar)  # 2. imagination
    bar.close()
    if viewer is not None:
        viewer.close()
    err, rew_err, img = _metrics(s, rec, truth, pred, context_frames)  # 3. metrics
    out = Path(cfg.out) if cfg.out is not None else s.path.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    artifacts, codec = _write_artifacts(s, out, truth, pred, err, img)
    report = _report(s, replay, err, rew_err, img, artifacts, codec)
    report["seconds"] = time.perf_counter() - began
    write_json_atomic(out / "report.json", report)
    return report


def _setup(cfg: EvalWMCfg) -> _Setup:
    """Load the model and the data, check them against the task's real env and each
    other, and draw the start windows."""
    horizons = _check_cfg(cfg)
    path, ckpt, model, task = _load_model(cfg)
    ds, episodes, which = _open_data(cfg, path, ckpt)
    task = envs.engine_task(task, ds.env_args.get("backend", "mujoco"))  # the data's engine
    env = _probe_task(ds, task, model, path, cfg.video_starts)
    env.notes += physics_shift(ckpt.get("env_args") or {}, ds.env_args)
    obs_var, reward_var, data_dim = _dataset_scales(ds)
    if data_dim != model.obs_dim:
        raise ValueError(
            f"{ds.path}: observations have {data_dim} dims, the model ({path}) "
            f"takes {model.obs_dim}"
        )
    windows = _choose_windows(ds, episodes, cfg.context, max(horizons), cfg.starts, cfg.seed)
    rows = min(cfg.video_starts, len(windows)) if env.renders else 0
    if not model.predicts_obs:
        env.notes.append(no_obs_error(model))
        if rows:
            env.notes.append(f"no video, strip or plot: the {model.kind} model draws nothing")
        rows = 0
    return _Setup(
        cfg=cfg,
        horizons=horizons,
        path=path,
        model=model,
        task=task,
        ds=ds,
        episodes=episodes,
        which=which,
        env=env,
        obs_var=obs_var,
        reward_var=reward_var,
        windows=windows,
        rows=rows,
    )


def physics_shift(trained: dict[str, Any], truth: dict[str, Any]) -> list[str]:
    """Notes naming how the ground truth's physics differ from those of the model's
    training data: another engine, or other randomization (mass, friction, delay...)."""
    if not trained:  # a checkpoint that names no training data: nothing to compare
        return []
    notes = []
    engines = trained.get("backend", "mujoco"), truth.get("backend", "mujoco")
    if engines[0] != engines[1]:
        notes.append(
            f"ground truth from another engine: {engines[1]} ({truth.get('env_name')}); "
            f"the model learned from {engines[0]} ({trained.get('env_name')})"
        )
    mine = (trained.get("env_kwargs") or {}).get("randomization") or {}
    theirs = (truth.get("env_kwargs") or {}).get("randomization") or {}
    moved = [
        f"{k} {theirs[k]} (model's data: {mine.get(k)})"
        for k in sorted(theirs)
        if mine.get(k) != theirs[k]
    ]
    if moved:
        notes.append("ground truth from other physics than the model's data: " + ", ".join(moved))
    return notes


def _load_model(cfg: EvalWMCfg) -> tuple[Path, dict[str, Any], WorldModel, str]:
    """The checkpoint's path, the checkpoint, its model on the device and the task."""
    path = checkpoint_path(cfg.wm)
    ckpt = read_checkpoint(path)
    model = from_checkpoint(ckpt, path).to(cfg.device)
    env_args_model = ckpt.get("env_args") or {}
    task = cfg.task or env_args_model.get("env_name")
    if task is None:
        raise ValueError(f"{path}: the checkpoint names no task; pass --task")
    if env_args_model.get("backend") != "isaaclab":
        envs.spec(task)  # an unknown task: an error listing the valid ones
    return path, ckpt, model, task


def _open_data(cfg: EvalWMCfg, path: Path, ckpt: dict[str, Any]) -> tuple[Dataset, list[int], str]:
    """The dataset and the episodes of it to start from: the test episodes of the
    model's training data (a checkpoint without them: its validation episodes), else
    all; (dataset, episodes, "test", "validation" or "all")."""
    data = cfg.data if cfg.data is not None else ckpt.get("data")
    if data is None:
        raise ValueError(f"{path}: the checkpoint names no training data; pass --data")
    ds = Dataset(data)
    if not ds.episodes:
        raise ValueError(f"{ds.path}: the dataset holds no episodes")
    trained_on = ckpt.get("data")
    recorded = set(ds.episodes)
    if trained_on is not None and Path(trained_on).resolve() == ds.path.resolve():
        for which in ("test", "val"):
            held_out = [e for e in ckpt.get(f"{which}_episodes") or [] if e in recorded]
            if held_out:
                return ds, held_out, "test" if which == "test" else "validation"
    return ds, list(ds.episodes), "all"


def _probe_task(
    ds: Dataset, task: str, model: WorldModel, path: Path, video_starts: int
) -> _TaskEnv:
    """Probe the task's real env; the env and the model must fit each other."""
    # dimensions: the task's real env and the dataset must fit the model (one env at a
    # time: Isaac Lab holds one simulation per process)
    probe = envs.make_from_args(ds.env_args, 1, task)
    dims = (probe.observation_dim, probe.action_dim)
    action_repeat, time_limit = probe.cfg.action_repeat, probe.cfg.episode_length
    renders = probe.can_render
    render_size = (probe.cfg.render_height, probe.cfg.render_width) if renders else (0, 0)
    probe.close()
    notes = []
    if not renders:
        if model.sees_pixels:
            raise ValueError(f"{path}: the model sees frames, and task {task!r} renders none")
        if video_starts:
            notes.append(f"{task} renders no frames here: no video and no strip")
    if dims != (model.obs_dim, model.action_dim):
        raise ValueError(
            f"task {task!r} has observations of {dims[0]} and actions of {dims[1]} dims, "
            f"the model ({path}) takes {model.obs_dim} and {model.action_dim}"
        )
    return _TaskEnv(action_repeat, time_limit, renders, render_size, notes)


def _read_windows(ds: Dataset, windows: list[tuple[int, int]], c: int, longest: int) -> _Recorded:
    """Read the recorded windows (context `c` before each start, `longest` steps after)."""
    keys = ("obs", "next_obs", "actions", "rewards", "states")
    cache: dict[int, dict[str, np.ndarray]] = {}
    rec_obs, actions, rec_rew, states, seeds = [], [], [], [], []
    for e, t in windows:
        if e not in cache:
            ep = cache[e] = ds.episode(e, keys)
            ep["all_obs"] = np.concatenate((ep["obs"], ep["next_obs"][-1:]))
            ep["seed"] = ds.attrs(e)["seed"]
        ep = cache[e]
        rec_obs.append(ep["all_obs"][t - c : t + longest + 1])  # [c + H + 1, d]
        actions.append(ep["actions"][t - c : t + longest])  # [c + H, a]
        rec_rew.append(ep["rewards"][t : t + longest])  # [H]
        states.append(ep["states"][t - c : t + 1])  # [c + 1, nq + nv]
        seeds.append(ep["seed"])
    return _Recorded(
        obs=torch.from_numpy(np.stack(rec_obs)),
        actions=torch.from_numpy(np.stack(actions)).float(),
        rewards=torch.from_numpy(np.stack(rec_rew)).double(),
        states=torch.from_numpy(np.stack(states)),
        seeds=torch.tensor(seeds, dtype=torch.int64),
        starts=torch.tensor([t for _, t in windows]),
    )


def _make_envs(s: _Setup, rec: _Recorded) -> tuple[Any, Any]:
    """The real envs: one replays every window, one (or None) draws a state model's
    imagined observations for the video."""
    c, frame_hw = s.cfg.context, s.frame_hw
    overrides: dict[str, Any] = {  # no autoreset inside any window
        "episode_length": max(
            s.env.time_limit, (int(rec.starts.max()) + s.longest + 1) * s.env.action_repeat
        )
    }
    if s.env.renders:
        overrides.update(render_height=frame_hw[0], render_width=frame_hw[1])
    real = envs.make_from_args(s.ds.env_args, s.n, s.task, **overrides)
    viewer = None
    if s.rows and not s.sees:
        viewer = envs.make_from_args(s.ds.env_args, s.rows, s.task, **overrides)
        viewer.reset_envs(torch.arange(s.rows), rec.seeds[: s.rows])
        try:
            viewer.set_state_from_obs(rec.obs[: s.rows, c])
        except NotImplementedError as err:
            raise ValueError(
                f"cannot draw the imagined observations of task {s.task!r} "
                f"({err}); pass --video-starts 0"
            ) from err
    return real, viewer


def _replay(
    s: _Setup, rec: _Recorded, real, bar: tqdm
) -> tuple[_Rollout, torch.Tensor | None, dict[str, float]]:
    """Ground truth: replay the windows in the real env (and close it); (the rollout,
    the context frames for a model that sees, how far it lies from the recording)."""
    c, longest, rows, frame_hw = s.cfg.context, s.longest, s.rows, s.frame_hw
    ids = torch.arange(s.n)
    real.reset_envs(ids, rec.seeds)
    nq = real.sim.nq
    context_frames = None
    if s.sees:  # frames of the context states, at the model's frame size
        context_frames = torch.empty(s.n, c + 1, *frame_hw, 3, dtype=torch.uint8)
        for k in range(c + 1):
            real.set_physics_state(rec.states[:, k, :nq], rec.states[:, k, nq:])
            context_frames[:, k] = real.render()
    real.episode_length_buf[:] = rec.starts * s.env.action_repeat  # per-step noise as recorded
    first = real.set_physics_state(rec.states[:, c, :nq], rec.states[:, c, nq:])
    truth = _Rollout(
        obs=torch.empty(s.n, longest + 1, s.model.obs_dim, dtype=torch.float64),
        rew=torch.empty(s.n, longest, dtype=torch.float64),
        video=torch.empty(rows, longest, *frame_hw, 3, dtype=torch.uint8),
        frames={},
    )
    truth.obs[:, 0] = first.double()
    for k in range(1, longest + 1):
        _, reward, _, _, info = real.step(rec.actions[:, c + k - 1])
        truth.obs[:, k] = info["final_obs"].double()  # (no row ends inside its window)
        truth.rew[:, k - 1] = reward.double()
        if s.sees and k in s.horizons:
            truth.frames[k] = real.render()
            truth.video[:, k - 1] = truth.frames[k][:rows]
        elif rows:
            truth.video[:, k - 1] = real.render(ids[:rows])
        bar.update(1)
    real.close()
    replay = {
        "max_abs_obs_diff": float((truth.obs - rec.obs[:, c:].double()).abs().max()),
        "max_abs_reward_diff": float((truth.rew - rec.rewards).abs().max()),
    }
    return truth, context_frames, replay


def _imagine(
    s: _Setup, rec: _Recorded, context_frames: torch.Tensor | None, viewer, bar: tqdm
) -> _Rollout:
    """Imagination: the model observes the context, then predicts open loop on the
    recorded actions."""
    c, longest, rows, frame_hw = s.cfg.context, s.longest, s.rows, s.frame_hw
    model, dev = s.model, torch.device(s.cfg.device)
    frames_in = None if context_frames is None else context_frames.to(dev)
    state = model.observe(
        rec.obs[:, : c + 1].float().to(dev), rec.actions[:, :c].to(dev), frames_in
    )
    pred = _Rollout(
        obs=torch.empty(s.n, longest, model.obs_dim, dtype=torch.float64),
        rew=torch.empty(s.n, longest, dtype=torch.float64),
        video=torch.zeros(rows, longest, *frame_hw, 3, dtype=torch.uint8),
        frames={},
    )
    for k in range(1, longest + 1):
        step = model.next(state, rec.actions[:, c + k - 1].to(dev))
        state = step.state
        if model.predicts_obs:  # else its obs are latents: pred.obs stays unset
            pred.obs[:, k - 1] = step.obs.double().cpu()
        pred.rew[:, k - 1] = step.reward.double().cpu()
        if s.sees and k in s.horizons:
            pred.frames[k] = model.frames(state).cpu()
            pred.video[:, k - 1] = pred.frames[k][:rows]
        elif s.sees and rows:
            pred.video[:, k - 1] = model.frames(state[:rows]).cpu()
        elif viewer is not None:
            finite = torch.isfinite(pred.obs[:rows, k - 1]).all(-1)  # others stay black
            if finite.any():
                shown = finite.nonzero().squeeze(-1)
                viewer.set_state_from_obs(pred.obs[shown, k - 1], shown)
                pred.video[shown, k - 1] = viewer.render(shown)
        bar.update(1)
    return pred


def _metrics(
    s: _Setup,
    rec: _Recorded,
    truth: _Rollout,
    pred: _Rollout,
    context_frames: torch.Tensor | None,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], dict[str, Any]]:
    """Errors per horizon: state (and its copy-last baseline), reward, and for a model
    that sees, PSNR and SSIM of its frames; (state, reward, frame errors)."""
    c, scale = s.cfg.context, s.obs_var
    err: dict[str, dict[str, float]] = {
        "model": {},
        "copy_last": {},
        "const_velocity": {},
        "ratio": {},
    }
    rew_err: dict[str, dict[str, float]] = {"nmse": {}, "mae": {}}
    img: dict[str, dict[str, dict[str, float]]] = {
        "psnr": {"model": {}, "copy_last": {}},
        "ssim": {"model": {}, "copy_last": {}},
    }
    now = rec.obs[:, c].double()
    before = rec.obs[:, c - 1].double()
    for h in s.horizons:
        key, truth_h = str(h), truth.obs[:, h]
        copy_err, velocity_err = baseline_errors(now, before, truth_h, h, scale)
        err["copy_last"][key], err["const_velocity"][key] = copy_err, velocity_err
        if s.model.predicts_obs:
            model_err = float(((pred.obs[:, h - 1] - truth_h) ** 2 / scale).mean())
            err["model"][key] = model_err
            err["ratio"][key] = copy_err / model_err if model_err > 0 else math.inf
        diff = pred.rew[:, h - 1] - truth.rew[:, h - 1]
        rew_err["nmse"][key] = float((diff**2).mean() / s.reward_var)
        rew_err["mae"][key] = float(diff.abs().mean())
        if s.sees:
            last = context_frames[:, c]
            for name, guess in (("model", pred.frames[h]), ("copy_last", last)):
                img["psnr"][name][key] = float(
                    pictures.psnr(guess, truth.frames[h]).clamp(max=PSNR_CAP).mean()
                )
                img["ssim"][name][key] = float(pictures.ssim(guess, truth.frames[h]).mean())
    return err, rew_err, img


def _write_artifacts(
    s: _Setup,
    out: Path,
    truth: _Rollout,
    pred: _Rollout,
    err: dict[str, dict[str, float]],
    img: dict[str, Any],
) -> tuple[dict[str, str], str | None]:
    """Write the video, the strip and the error plot; (the artifacts' paths, the video's
    codec or None)."""
    horizons, sees = s.horizons, s.sees
    artifacts = {"report": str(out / "report.json")}
    codec = None
    if s.rows:
        codec = pictures.write_video(
            out / "video.mp4", pictures.side_by_side(truth.video, pred.video), s.cfg.fps
        )
        artifacts["video"] = str(out / "video.mp4")
        at = [h - 1 for h in horizons]
        pictures.write_png(out / "strip.png", pictures.strip(truth.video[0, at], pred.video[0, at]))
        artifacts["strip"] = str(out / "strip.png")
    keys_h = [str(h) for h in horizons]
    if not s.model.predicts_obs:  # no state error to plot
        return artifacts, codec
    pictures.plot_errors(
        out / "error_vs_horizon.png",
        horizons,
        [err["model"][k] for k in keys_h],
        [err["copy_last"][k] for k in keys_h],
        [err["const_velocity"][k] for k in keys_h],
        [img["psnr"]["model"][k] for k in keys_h] if sees else None,
        [img["psnr"]["copy_last"][k] for k in keys_h] if sees else None,
        title=f"{s.model.kind} on {s.task}",
    )
    artifacts["plot"] = str(out / "error_vs_horizon.png")
    return artifacts, codec


def _report(
    s: _Setup,
    replay: dict[str, float],
    err: dict[str, dict[str, float]],
    rew_err: dict[str, dict[str, float]],
    img: dict[str, Any],
    artifacts: dict[str, str],
    codec: str | None,
) -> dict[str, Any]:
    """The report, all but its `seconds`."""
    cfg, model = s.cfg, s.model
    report: dict[str, Any] = {
        "model": {
            "path": str(s.path),
            "kind": model.kind,
            "sees_pixels": s.sees,
            "obs_dim": model.obs_dim,
            "action_dim": model.action_dim,
        },
        "task": s.task,
        "data": str(s.ds.path),
        "episodes": s.which,
        "num_episodes": len(s.episodes),
        "settings": {
            "starts": cfg.starts,
            "context": cfg.context,
            "horizons": list(s.horizons),
            "video_starts": cfg.video_starts,
            "fps": cfg.fps,
            "seed": cfg.seed,
            "device": cfg.device,
        },
        "num_starts": s.n,
        "starts": [[e, t] for e, t in s.windows],
        "replay": replay,
        "state_error": err,
        "reward_error": rew_err,
    }
    if s.sees:
        report["frames"] = img
    if s.rows:
        report["video"] = {"rows": s.rows, "frames": s.longest, "codec": codec, "fps": cfg.fps}
    report["artifacts"] = artifacts
    if s.env.notes:
        report["notes"] = s.env.notes
    return report


def run_eval_wm(cfg: EvalWMCfg) -> None:
    """Entry point of `python run.py eval-wm`: evaluate, print a table and the files."""
    report = evaluate_world_model(cfg)
    m, sees = report["model"], report["model"]["sees_pixels"]
    print(
        f"eval-wm: {m['kind']}{' (pixels)' if sees else ''} on {report['task']}, "
        f"{report['num_starts']} starts in {report['num_episodes']} {report['episodes']} "
        f"episodes of {report['data']}, context {report['settings']['context']}"
    )
    replay = report["replay"]
    print(
        f"  replay check: max |replayed - recorded| obs {replay['max_abs_obs_diff']:.2e}, "
        f"reward {replay['max_abs_reward_diff']:.2e}"
    )
    err, rew = report["state_error"], report["reward_error"]
    predicts = bool(err["model"])  # else a model that predicts no observations
    head = "     h" + ("      model" if predicts else "") + "  copy-last  const-vel"
    head += ("    ratio" if predicts else "") + "   rew nmse   rew mae"
    if sees:
        head += "   PSNR (copy)   SSIM (copy)"
    print(head)
    for h in rew["nmse"]:
        cells = [f"{err['model'][h]:10.3e}"] if predicts else []
        cells += [f"{err['copy_last'][h]:10.3e}", f"{err['const_velocity'][h]:10.3e}"]
        cells += [f"{err['ratio'][h]:8.1f}"] if predicts else []
        cells += [f"{rew['nmse'][h]:10.3e}", f"{rew['mae'][h]:9.4f}"]
        line = f"  {h:>4} " + " ".join(cells)
        if sees:
            f = report["frames"]
            line += (
                f" {f['psnr']['model'][h]:6.2f} {f['psnr']['copy_last'][h]:6.2f}"
                f" {f['ssim']['model'][h]:6.3f} {f['ssim']['copy_last'][h]:6.3f}"
            )
        print(line)
    for name, file in report["artifacts"].items():
        print(f"  {name:<7} {file}")
    for note in report.get("notes", []):
        print(f"  note: {note}")
