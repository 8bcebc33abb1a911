"""An agent's return in the real simulator, and in a world model from the same starts.

`python run.py eval --agent CKPT [--task T] [--wm DIR]`:

- **Real**: N episodes of the task, started with one seed (`env.reset(seed)`, so
  every evaluation of every agent starts from the same N states), the agent
  acting deterministically; the return of each row's first episode and, for a
  task with a goal, the share of those episodes that reached it.
- **Imagined**: the world model served as an `ImaginedEnv` from the very same
  start observations (`ImaginedEnv.from_env` with the same seed), mean
  predictions, the same horizon; the agent acts on the imagined observations. A
  model without a decoder (`tdmpc2`) imagines no observations: in it, only an MPPI
  planner over that same model acts (on the model's latent states,
  `MppiAgent.act_latent`), and its video pane has no picture; any other agent is
  refused with a message.
- **Gap**: imagined minus real mean return: how much the model flatters (or
  wrongs) the policy. Returns are in the task's units (sum of rewards).
- **Model error** (`model_error`, a state model): the model's one-step error along
  the agent's own real episodes (`world_models.metrics.rollout_error`): what it
  gets wrong on the states this policy reaches, and the bias of its reward there
  (> 0: it pays more than the simulator), which is how a policy comes to fool it.
- **Video** (`video_steps` > 0): row 0's first episode, real (left) beside
  imagined (right), one frame per agent step, each pane `video_size` px high (256
  by default; as wide as the env's camera frames are for that height) whatever
  the size the agent and the model see. The real pane is drawn by the simulator
  at that size; a state model's imagined pane by a second env of the task (the
  same episode seed, so what the observation leaves out matches) set to the
  imagined observation (`set_state_from_obs`); a pixel model's predicted frames
  are scaled up to it, nearest neighbour. Each pane is labelled "real" or
  "imagined" with the step and the episode's return so far; a pane whose episode
  ended first stays black with its last step and return. `video_steps` frames at
  most, 25 a second.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import envs
from agents.base import Agent, read_checkpoint
from agents.base import from_checkpoint as agent_from_checkpoint
from sim.data.atomic import write_json_atomic
from sim.randomization import RandomizationCfg
from world_models import pictures
from world_models.base import WorldModel
from world_models.base import load as load_world_model
from world_models.imagined_env import ImaginedEnv, ImaginedEnvCfg
from world_models.metrics import rollout_error
from world_models.success import SuccessHead

VIDEO_SIZE = 256  # [px] height of a video pane
MIN_VIDEO_SIZE = 16
VIDEO_FPS = 25


@dataclass
class EvalCfg:
    """An agent's return in the real simulator and in imagination from the same starts."""

    agent: Path
    """Agent checkpoint: agent.pt, or a directory holding one (a loop's output)."""
    task: str | None = None
    """Task (default: the task the agent was trained on, with its settings)."""
    wm: Path | None = None
    """World model for the imagined return (a directory holding model.pt, or a file)."""
    backend: str | None = None
    """Physics backend (default: the one the agent's data was recorded on, else mujoco)."""
    action_repeat: int | None = None
    """Override the action repeat (default: the agent's training setting, else the task's)."""
    episodes: int = 8
    """Evaluation episodes (all in parallel)."""
    seed: int = 1000
    """Seed of the start states."""
    video_steps: int = 0
    """Agent steps of the real-vs-imagined video (0: none; needs --wm)."""
    video_size: int = VIDEO_SIZE
    """Height [px] of each pane of the video (its width follows the camera's aspect),
    rendered by the simulator at that size whatever the size the agent and model see."""
    out: Path | None = None
    """Directory of report.json and video.mp4 (default: beside the agent)."""
    device: str = "cpu"
    """Torch device of the agent and the model."""
    demos: Path | None = None
    """Recorded episodes (held-out demonstrations of the task) on which the agent's
    actions are scored against the recorded ones and the task's scripted expert's
    (action plausibility); the agent acts along each with the recorded history."""


def make_eval_env(
    env_args: dict | None, task: str | None, n: int, backend: str | None = None, **overrides
):
    """The env an agent is evaluated in: the dataset env it was trained on
    (`env_args`), or `task`, with `overrides`, on `backend` (None: the recorded one, or
    mujoco). Whatever randomization the agent trained with, it is evaluated on the
    task's nominal physics unless `overrides` set a `randomization`."""
    if task is None and env_args is None:
        raise ValueError("the agent checkpoint names no task: pass --task")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides.setdefault("randomization", RandomizationCfg())
    if task is None or (env_args is not None and task == env_args["env_name"]):
        if backend is not None:
            overrides["backend"] = backend
        return envs.make_from_args(env_args, n, **overrides)
    return envs.make(task, num_envs=n, backend=backend or "mujoco", **overrides)


def agent_env(agent: Agent, ckpt: dict, task: str | None, n: int, **overrides):
    """`make_eval_env` for `agent` (its checkpoint `ckpt`): an agent that acts on
    camera frames observes the camera at its frame size; a ValueError where the env's
    observations or actions are not the agent's."""
    camera = {}
    if agent.frame_shape is not None:
        h, w, _ = agent.frame_shape
        camera = {"obs": "pixels", "render_height": h, "render_width": w}
    env = make_eval_env(ckpt.get("env_args"), task, n, **overrides, **camera)
    obs_dim = env.observation_dim if not camera else tuple(env.observation_space.shape)
    want = agent.obs_dim if not camera else agent.frame_shape
    if (obs_dim, env.action_dim) != (want, agent.action_dim):
        env.close()
        raise ValueError(
            f"{env.name} has ({obs_dim} obs, {env.action_dim} actions); "
            f"the agent acts on ({want}, {agent.action_dim})"
        )
    return env


@dataclass
class Trace:
    """The steps of `run_episodes`' first episodes, filled in by it: each `[N, T, *]`
    over the T steps until the last row's episode ended; `mask` `[N, T]` marks the
    steps of each row's own first episode (a prefix)."""

    obs: torch.Tensor | None = None
    actions: torch.Tensor | None = None
    next_obs: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    mask: torch.Tensor | None = None


@torch.no_grad()
def run_episodes(
    agent: Agent,
    env,
    first_obs: torch.Tensor,
    video_steps: int = 0,
    draw=None,
    noise: torch.Generator | None = None,
    trace: Trace | None = None,
) -> tuple:
    """Episodes from `first_obs`, deterministic (or exploring with standard normal
    noise drawn from `noise`): returns `[N]` float64 of each row's first episode,
    whether it reached the task's goal (bool `[N]`, None for a task without one),
    and up to `video_steps` frames of row 0's first episode, one before each of its
    steps, drawn by `draw(env, obs, step, ret)` (`ret`: the episode's return so far).
    With a `trace`, its fields are filled with the episodes' steps (on the CPU)."""
    n = env.num_envs
    agent.reset(torch.arange(n))
    obs, total = first_obs, torch.zeros(n, dtype=torch.float64)
    running = torch.ones(n, dtype=torch.bool)
    success = None
    frames = []
    steps: list[tuple[torch.Tensor, ...]] = []
    while running.any():
        if len(frames) < video_steps and running[0]:
            frames.append(draw(env, obs, len(frames), float(total[0])))
        if noise is None:
            action = agent.act(obs)
        else:
            action = agent.act(obs, torch.randn(n, agent.action_dim, generator=noise))
        before = obs
        obs, reward, terminated, truncated, info = env.step(action)
        if trace is not None:  # the finished rows' true last observation, not the reset one
            after = info.get("final_obs", obs)
            steps.append(
                tuple(x.cpu() for x in (before, action, after, reward)) + (running.clone(),)
            )
        total += torch.where(running, reward.double().cpu(), 0.0)
        if "success" in info:  # the episode's outcome so far, kept when it ends
            success = torch.zeros(n, dtype=torch.bool) if success is None else success
            success = torch.where(running, info["success"].cpu(), success)
        running &= ~(terminated | truncated).cpu()
    if trace is not None:
        fields = ("obs", "actions", "next_obs", "rewards", "mask")
        for name, column in zip(fields, zip(*steps, strict=True), strict=True):
            setattr(trace, name, torch.stack(column, 1))
    return total, success, frames


def evaluate(
    agent: Agent,
    env,
    wm: WorldModel | None = None,
    seed: int = 1000,
    video_steps: int = 0,
    video_path: Path | None = None,
    noise_seed: int | None = None,
    video_size: int = VIDEO_SIZE,
    success_head: SuccessHead | None = None,
) -> dict[str, Any]:
    """Real (and imagined) returns of `agent` on the starts of `env.reset(seed)`;
    with `success_head` (`world_models.success`), the imagined success rate too;
    deterministic, or with `noise_seed` exploring with standard normal noise from a
    generator of that seed (the same sequence in both runs). With a model and
    `video_steps`, the video at `video_path`, panes `video_size` px high (see the
    module docstring)."""

    def noise() -> torch.Generator | None:
        return None if noise_seed is None else torch.Generator().manual_seed(noise_seed)

    steps = env.cfg.episode_length // env.cfg.action_repeat
    video_steps = min(video_steps, steps) if wm is not None and video_path is not None else 0
    report: dict[str, Any] = {"episodes": env.num_envs, "seed": seed, "steps": steps}
    imagined_frames: list[torch.Tensor] = []
    if video_steps and not getattr(env, "can_render", True):
        raise ValueError(f"{env.name} renders no frames (a kit-less Isaac Lab task): no video")
    pane = pane_size(env, video_size) if video_steps else (0, 0)

    def labelled(frame: torch.Tensor, who: str, step: int, ret: float) -> torch.Tensor:
        return pictures.label(frame, [who, f"step {step}  return {ret:.2f}"])

    if wm is not None:
        imagined = ImaginedEnv.from_env(
            wm,
            env,
            ImaginedEnvCfg(
                num_envs=env.num_envs,
                seed=seed,
                episode_length=steps,
                sample=False,
                termination="model",
            ),
        )
        imagined.use_success_head(success_head)
        viewer = None
        drawable = wm.sees_pixels or getattr(env, "can_set_state_from_obs", False)
        drawable = drawable and not imagined.latent_obs
        actor = latent_actor(agent, wm) if imagined.latent_obs else agent
        if video_steps and not wm.sees_pixels and drawable:
            viewer = state_viewer(env, *pane)

        def draw(_, obs, step, ret):
            if wm.sees_pixels:  # the model's frame, scaled up to the pane
                frame = pictures.resize(imagined.render([0]).cpu(), *pane)[0]
            elif not drawable:  # the observation holds no whole state to draw
                blank = torch.zeros(*pane, 3, dtype=torch.uint8)
                what = "latent: no picture" if imagined.latent_obs else "not drawable"
                lines = [f"imagined ({what})", f"step {step}  return {ret:.2f}"]
                return pictures.label(blank, lines)
            elif not torch.isfinite(obs[0]).all():
                frame = torch.zeros(*pane, 3, dtype=torch.uint8)
            else:
                viewer.set_state_from_obs(obs[:1].cpu())
                frame = viewer.render()[0].cpu()
            return labelled(frame, "imagined", step, ret)

        imagined_ret, imagined_success, imagined_frames = run_episodes(
            actor, imagined, imagined.reset(), video_steps, draw, noise()
        )
        report["imagined_return"] = _stats(imagined_ret)
        if imagined_success is not None:
            report["imagined_success_rate"] = float(imagined_success.float().mean())
        if viewer is not None:
            viewer.close()
    obs = env.reset(seed=seed)

    def draw_real(e, _, step, ret):
        return labelled(render_at(e, *pane)[0].cpu(), "real", step, ret)

    trace = Trace() if wm is not None and not wm.sees_pixels else None
    ret, success, real_frames = run_episodes(
        agent, env, obs, video_steps, draw_real, noise(), trace
    )
    report["real_return"] = _stats(ret)
    if trace is not None:  # the model's one-step error along the agent's own real episodes
        report["model_error"] = rollout_error(
            wm, trace.obs, trace.actions, trace.next_obs, trace.rewards, trace.mask
        )
    if success is not None:
        report["real_success_rate"] = float(success.float().mean())
    if wm is not None:
        report["gap"] = report["imagined_return"]["mean"] - report["real_return"]["mean"]
    if video_steps:
        length = max(len(real_frames), len(imagined_frames))

        def film(frames: list[torch.Tensor], who: str, total: float) -> torch.Tensor:
            """The pane's frames, black after its episode ended (with its last step and
            return) until the other's ends."""
            end = labelled(torch.zeros(*pane, 3, dtype=torch.uint8), who, len(frames), total)
            return torch.stack(frames + [end] * (length - len(frames)))[None]

        real = film(real_frames, "real", float(ret[0]))
        imag = film(imagined_frames, "imagined", float(imagined_ret[0]))
        pictures.write_video(video_path, pictures.side_by_side(real, imag), fps=VIDEO_FPS)
        report["video"] = str(video_path)
    return report


class _LatentActor:
    """An MPPI planner acting on its world model's latent states (the observations of
    that model's imagined env), behind `run_episodes`' part of the agent interface."""

    def __init__(self, planner):
        self.planner, self.action_dim = planner, planner.action_dim

    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.planner.act_latent(obs, noise)

    def reset(self, env_ids: torch.Tensor) -> None:
        self.planner.reset(env_ids)


def latent_actor(agent: Agent, wm: WorldModel) -> _LatentActor:
    """What acts in the imagination of `wm`, a model that predicts no observations:
    `agent` itself if it is an MPPI planner over the same model (its weights), acting
    on the latent states; else a ValueError saying why nothing can."""
    planner_wm = getattr(agent, "world_model", None)
    if not callable(getattr(agent, "act_latent", None)) or planner_wm is None:
        raise ValueError(
            f"the {wm.kind} world model predicts no observations (it has no decoder): "
            f"a {agent.kind} agent, which acts on observations, cannot act in its "
            "imagination; only an mppi agent planning over this same model can"
        )
    mine, theirs = planner_wm.state_dict(), wm.state_dict()
    same = planner_wm.kind == wm.kind and mine.keys() == theirs.keys()
    if not same or not all(torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine):
        raise ValueError(
            f"the {wm.kind} world model predicts no observations: its imagined "
            "observations are its own latent states, which only a planner over this same "
            "model reads; the mppi agent plans over another model"
        )
    return _LatentActor(agent)


def pane_size(env, video_size: int) -> tuple[int, int]:
    """(height, width) [px] of a video pane `video_size` px high showing `env`'s
    camera: as wide as the env's own frames are for that height."""
    if video_size < MIN_VIDEO_SIZE:
        raise ValueError(f"video_size must be at least {MIN_VIDEO_SIZE} px, got {video_size}")
    cfg = env.cfg
    return video_size, max(1, round(video_size * cfg.render_width / cfg.render_height))


def render_at(env, height: int, width: int, env_ids=(0,)) -> torch.Tensor:
    """`env.render(env_ids)` at `height` x `width` px: the env's own camera, scene and
    renderer, drawn at another size; the env's frames, and its observations, keep
    their size."""
    cfg = env.cfg
    if (cfg.render_height, cfg.render_width) == (height, width):
        return env.render(list(env_ids))
    return env.render(list(env_ids), width=width, height=height)


def state_viewer(env, height: int, width: int):
    """A one-world copy of `env` (its task and settings) that renders `height` x
    `width` frames, in the episode that `env`'s row 0 runs (the same episode seed, so
    what an observation leaves out, a reacher's target, matches): the imagined pane
    of a state model, set to each imagined observation by `set_state_from_obs`."""
    cfg = dataclasses.replace(
        env.cfg, num_envs=1, render_height=height, render_width=width, obs="state"
    )
    viewer = type(env)(cfg)
    viewer.name = env.name
    viewer.reset_envs(torch.zeros(1, dtype=torch.int64), env.episode_seed[:1].cpu())
    return viewer


@torch.no_grad()
def action_errors(agent: Agent, demos: Path, env) -> dict[str, Any]:
    """Mean squared action errors of `agent` along the recorded episodes of `demos`:
    at every step it acts on the recorded observation, then is told the recorded
    action (`executed`), so a stateful agent's history is the recording's. Errors
    against the recorded action and against `env`'s scripted expert on the same
    observation (the noise-free target), beside the recorded actions' own error
    against the expert and the expert actions' variance (the error of their mean)."""
    from envs.experts import make_expert
    from sim.data.dataset import Dataset
    from sim.data.loader import EpisodeData

    dataset = Dataset(demos)
    task = dataset.env_args.get("env_name")
    if task != env.name:
        raise ValueError(f"{demos}: episodes of {task!r}, the agent is evaluated on {env.name!r}")
    if not dataset.episodes:
        raise ValueError(f"{demos}: no episodes")
    # every episode as one window from its first step, masked past its end
    frames = agent.frame_shape is not None  # an agent that acts on the recorded frames
    held = tuple(dataset.frame_shape()) if dataset.has_pixels() else "no frames"
    if frames and held != agent.frame_shape:
        raise ValueError(
            f"{demos}: the agent acts on frames of shape {agent.frame_shape}; "
            f"the episodes hold {held}"
        )
    data = EpisodeData(
        dataset, sequence_length=int(max(map(dataset.length, dataset.episodes))), pixels=frames
    )
    episodes = data.__getitems__((data.step == 0).nonzero().squeeze(-1))
    obs, rec, valid = episodes["obs"].float(), episodes["actions"].float(), episodes["mask"]
    seen = episodes["pixels"] if frames else obs
    n, longest = valid.shape
    # the expert reads state vectors: an env that observes frames lends it the demos' own
    twin = envs.make_from_args(dataset.env_args, 1) if frames else None
    try:
        expert = make_expert(twin or env)
        acted = torch.zeros_like(rec)
        agent.reset(torch.arange(n))
        for t in range(longest):
            acted[:, t] = agent.act(seen[:, t]).cpu()
            agent.executed(rec[:, t])
        target = expert(obs.reshape(-1, agent.obs_dim)).reshape(rec.shape)
    finally:
        if twin is not None:
            twin.close()

    def mse(a, b):
        return float((a - b)[valid].pow(2).mean())

    return {
        "demos": str(demos),
        "episodes": n,
        "transitions": int(valid.sum()),
        "mse_recorded": mse(acted, rec),
        "mse_expert": mse(acted, target),
        "recorded_mse_expert": mse(rec, target),
        "expert_action_var": float(target[valid].var(0).mean()),
    }


def _stats(values: torch.Tensor) -> dict[str, float]:
    n = len(values)
    std = float(values.std()) if n > 1 else 0.0
    return {
        "mean": float(values.mean()),
        "std": std,
        "min": float(values.min()),
        "max": float(values.max()),
        "stderr": std / math.sqrt(n),
    }


def run_eval(cfg: EvalCfg) -> dict[str, Any]:
    """Entry point of `python run.py eval`."""
    ckpt = read_checkpoint(cfg.agent)
    agent = agent_from_checkpoint(ckpt, cfg.agent).to(cfg.device)
    if agent.frame_shape is not None and cfg.wm is not None:
        raise ValueError(
            f"{cfg.agent}: the agent acts on camera frames; imagined "
            "episodes (--wm) serve state vectors"
        )
    env = agent_env(
        agent,
        ckpt,
        cfg.task,
        cfg.episodes,
        seed=cfg.seed,
        backend=cfg.backend,
        action_repeat=cfg.action_repeat,
    )
    wm = None if cfg.wm is None else load_world_model(cfg.wm).to(cfg.device)
    agent_path = Path(cfg.agent)
    out = cfg.out or (agent_path if agent_path.is_dir() else agent_path.parent) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    report = evaluate(
        agent, env, wm, cfg.seed, cfg.video_steps, out / "video.mp4", video_size=cfg.video_size
    )
    report.update(agent=str(cfg.agent), task=env.name, wm=None if cfg.wm is None else str(cfg.wm))
    if cfg.demos is not None:
        report["actions"] = action_errors(agent, cfg.demos, env)
    env.close()
    write_json_atomic(out / "report.json", report)
    real = report["real_return"]
    print(
        f"{env.name}: real return {real['mean']:.1f} +- {real['std']:.1f} "
        f"over {report['episodes']} episodes"
    )
    if "real_success_rate" in report:
        print(f"  real success rate {report['real_success_rate']:.2f}")
    if wm is not None:
        imag = report["imagined_return"]
        print(
            f"  imagined return {imag['mean']:.1f} +- {imag['std']:.1f} from the same starts, "
            f"gap (imagined - real) {report['gap']:+.1f}"
        )
    if "model_error" in report:
        err = report["model_error"]
        obs_error = "none (no decoder)" if err["obs_error"] is None else f"{err['obs_error']:.4f}"
        print(
            f"  model along the agent's real episodes: one-step observation error {obs_error} "
            f"(copy-last {err['copy_last_error']:.4f}), reward error {err['reward_error']:.4f}, "
            f"reward bias {err['reward_bias']:+.4f} a step"
        )
    if "actions" in report:
        act = report["actions"]
        print(
            f"  action error on {act['transitions']:,} recorded steps: {act['mse_expert']:.4f} "
            f"against the expert (its action variance {act['expert_action_var']:.4f}), "
            f"{act['mse_recorded']:.4f} against the recorded actions"
        )
    print(f"  report: {out / 'report.json'}")
    return report
