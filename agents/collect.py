"""`python run.py collect`: roll a policy out in a batched env and record every episode.

Episode e of a run has seed `sim.rng.episode_seeds(seed, e)`; the env starts it
with `reset_envs` and the policy draws its noise from it, so the recorded episode
is a function of (settings, seed, e) only. Episodes go to whichever env is free,
finish at different steps, and are committed in shards (see `sim.dataset`): a
killed run keeps every committed episode and `--resume` records exactly the
missing ones, giving the dataset an uninterrupted run would have written.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import envs
from agents.base import load as load_agent
from agents.policies import POLICIES, AgentPolicy, Policy, make_policy
from sim import rng
from sim.dataset import DatasetWriter, Episode
from sim.randomization import RandomizationCfg
from sim.recorder import EpisodeRecorder

# settings that change how fast, not what, a run records: left out of env_args
_EXECUTION_FIELDS = ("num_envs", "device", "nthread", "seed", "backend")


@dataclass
class CollectCfg:
    """Record episodes of a policy into an HDF5 dataset (robomimic layout, sharded)."""

    task: str = "cartpole_swingup"
    """Task name (see `envs.list_tasks()`)."""
    backend: str = "mujoco"
    """Physics backend."""
    num_envs: int = 16
    """Parallel environments."""
    episodes: int = 64
    """Episodes the dataset holds when the run ends (a resumed run counts the old ones)."""
    policy: str = "random"
    """Policy: random, noise (correlated Gaussian), expert, expert+noise, or the path of
    an agent checkpoint (`agent.pt`, or a directory holding one)."""
    explore: bool = True
    """An agent acts with its exploration noise (drawn from each episode's seed);
    --no-explore: its deterministic action."""
    noise_std: float = 0.3
    """Std of the policy noise (expert+noise: each episode's std ~ U(0, noise_std))."""
    noise_rho: float = 0.9
    """One-step correlation of the policy noise."""
    out: Path = Path("runs/data/dataset")
    """Dataset directory."""
    pixels: int = 0
    """Render and record frames of this size [px] every step (0: no pixels)."""
    randomize: RandomizationCfg = field(default_factory=RandomizationCfg)
    """Domain randomization, drawn per episode and recorded in its attrs."""
    resume: bool = False
    """Continue the dataset at `out`: record only the episodes it lacks."""
    seed: int = 0
    """Seed of the run; episode e's seed is derived from it and e."""
    episode_length: int | None = None
    """Override the task's episode length [control steps]."""
    action_repeat: int | None = None
    """Override the task's action repeat [control steps per agent step]."""
    flush_episodes: int = 0
    """Commit a shard after this many finished episodes (0: one per num_envs)."""
    flush_seconds: float = 60.0
    """Also commit when this long has passed since the last commit [s]."""
    nthread: int = 0
    """Physics threads (0: every CPU)."""
    device: str = "cpu"
    """Device of the env (cpu, cuda, cuda:k): the warp and isaaclab backends simulate
    there; with --ray --worker-gpus, "cuda" is each worker's own GPU."""
    progress: bool = True
    """Show a progress bar."""
    episode_ids: tuple[int, ...] | None = None
    """Record only these of the run's episodes (their indices below `episodes`; a
    Ray worker's share); None: all."""
    ray: bool = False
    """Collect with Ray workers (extra `dist`): each records its share of the episodes
    with its own batched env into `out/workers/<k>/`; `out/index.json` lists them all."""
    workers: int = 2
    """Ray workers (tasks) with --ray."""
    address: str | None = None
    """Ray cluster to join with --ray (`ray start --head` prints it; "auto": the local
    one); None starts a Ray instance on this machine."""
    worker_cpus: float = 1.0
    """CPUs Ray reserves for each worker."""
    worker_gpus: float = 0.0
    """GPUs Ray reserves for each worker (fractions share one GPU among workers); the
    workers' envs run there (--device cuda). 0: workers see no GPU."""


def env_args(cfg: CollectCfg, env) -> dict:
    """What defines the recorded data: robomimic's env_args plus our run settings."""
    kwargs = {k: v for k, v in dataclasses.asdict(env.cfg).items() if k not in _EXECUTION_FIELDS}
    return {
        "env_name": cfg.task,
        "type": "wam-sandbox",
        "env_kwargs": kwargs,
        "backend": cfg.backend,
        "seed": cfg.seed,
        "policy": cfg.policy,
        "noise_std": cfg.noise_std if "noise" in cfg.policy else None,
        "noise_rho": cfg.noise_rho if "noise" in cfg.policy else None,
        "explore": cfg.explore if cfg.policy not in POLICIES else None,
        "pixels": cfg.pixels,
        "agent_dt": env.sim.dt * env.cfg.action_repeat,  # [s] between recorded steps
        "state_layout": ["qpos", "qvel"],
        "nq": env.sim.nq,
        "nv": env.sim.nv,
    }


def agent_policy(env, agent, explore: bool = True) -> AgentPolicy:
    """`agent` acting in `env` for collection (its dims checked against the env's)."""
    if (agent.obs_dim, agent.action_dim) != (env.observation_dim, env.action_dim):
        raise ValueError(
            f"{env.name}: the agent acts on ({agent.obs_dim} obs, {agent.action_dim} "
            f"actions), the env has ({env.observation_dim}, {env.action_dim})"
        )
    return AgentPolicy(env.num_envs, agent, explore=explore)


def collect(cfg: CollectCfg, policy_fn: Callable[[Any], Policy] | None = None) -> dict[str, float]:
    """Run the collection; returns a summary (episodes, transitions, rates, return).
    `policy_fn(env)`, if given, builds the policy that acts; `cfg.policy` then only
    labels the data in its env_args (the closed loop records several policies into
    one dataset this way)."""
    if cfg.episodes < 1 or cfg.num_envs < 1:
        raise ValueError("episodes and num_envs must be positive")
    if cfg.episode_ids is not None and any(not 0 <= e < cfg.episodes for e in cfg.episode_ids):
        raise ValueError(f"episode_ids must lie in [0, {cfg.episodes}), got {cfg.episode_ids}")
    if policy_fn is None and cfg.policy not in POLICIES:
        if not Path(cfg.policy).exists():
            raise ValueError(
                f"unknown policy {cfg.policy!r}; valid policies: "
                f"{', '.join(POLICIES)}, or an agent checkpoint"
            )
        agent = load_agent(cfg.policy)
        policy_fn = lambda env: agent_policy(env, agent, cfg.explore)  # noqa: E731
    if cfg.pixels < 0:
        raise ValueError(f"pixels must be >= 0, got {cfg.pixels}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device}: torch sees no CUDA device here")
    overrides: dict = {"randomization": cfg.randomize}
    if cfg.episode_length is not None:
        overrides["episode_length"] = cfg.episode_length
    if cfg.action_repeat is not None:
        overrides["action_repeat"] = cfg.action_repeat
    if cfg.pixels:
        overrides.update(render_width=cfg.pixels, render_height=cfg.pixels)
    env = envs.make(
        cfg.task,
        cfg.num_envs,
        cfg.backend,
        seed=cfg.seed,
        nthread=cfg.nthread,
        device=cfg.device,
        **overrides,
    )
    steps = env.cfg.episode_length // env.cfg.action_repeat
    if cfg.pixels:  # N whole episodes of frames live in memory until each ends
        need = env.num_envs * (steps + 1) * cfg.pixels**2 * 3
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if need > 0.8 * free:
            raise ValueError(
                f"pixel buffers for {env.num_envs} envs x {steps + 1} frames of "
                f"{cfg.pixels}x{cfg.pixels} need {need / 2**30:.1f} GiB, more than the "
                f"{free / 2**30:.1f} GiB free: use fewer envs or smaller frames"
            )
    if policy_fn is None:
        policy = make_policy(cfg.policy, env, cfg.noise_std, cfg.noise_rho)
    else:
        policy = policy_fn(env)
    writer = DatasetWriter(cfg.out, env_args(cfg, env), resume=cfg.resume, background=True)
    wanted = range(cfg.episodes) if cfg.episode_ids is None else cfg.episode_ids
    todo = [e for e in wanted if e not in writer.committed]
    recorder = EpisodeRecorder(
        env.num_envs,
        steps,
        env.observation_dim,
        env.action_dim,
        env.sim.nq,
        env.sim.nv,
        (cfg.pixels, cfg.pixels, 3) if cfg.pixels else None,
    )
    env.capture_final_frames = bool(cfg.pixels)
    flush_every = cfg.flush_episodes or env.num_envs
    episode_of = torch.full((env.num_envs,), -1, dtype=torch.long)  # -1: env idle
    seed_of = torch.zeros(env.num_envs, dtype=torch.int64)  # (the env's autoreset reseeds)
    params_of: list[dict] = [{} for _ in range(env.num_envs)]  # randomization per episode
    returns: list[float] = []
    successes: list[bool] = []
    bar = tqdm(total=len(todo), unit="ep", disable=not cfg.progress, dynamic_ncols=True)
    transitions, start = 0, time.perf_counter()
    last_flush = start

    def assign(env_ids: torch.Tensor) -> torch.Tensor:
        """Give the next wanted episodes to free envs; returns the observations."""
        nonlocal todo
        take, todo = todo[: len(env_ids)], todo[len(env_ids) :]
        episode_of[env_ids] = -1
        ids = env_ids[: len(take)]
        if len(take):
            episode_of[ids] = torch.tensor(take)
            seeds = rng.episode_seeds(cfg.seed, take)
            seed_of[ids] = seeds
            obs = env.reset_envs(ids, seeds)
            for i in ids.tolist():
                params_of[i] = env.episode_params(i)
            policy.reset(ids, seeds)
            if cfg.pixels:
                recorder.record_frames(env.render(ids), ids)
            return obs
        return env.get_observations()

    try:
        with torch.inference_mode():
            env.reset()
            obs = assign(torch.arange(env.num_envs))
            while (episode_of >= 0).any():
                qpos, qvel = env.get_physics_state()
                action = policy(obs)
                next_obs, reward, terminated, truncated, info = env.step(action)
                # the bookkeeping lives on the CPU, whatever the env's device
                terminated, truncated = terminated.cpu(), truncated.cpu()
                done = terminated | truncated
                recorder.record(obs, action, reward, qpos, qvel)
                active = episode_of >= 0
                transitions += int(active.sum())
                if cfg.pixels:
                    live = (active & ~done).nonzero().squeeze(-1)
                    recorder.record_frames(env.render(live), live)
                    if done.any():
                        recorder.record_frames(info["final_frames"], done.nonzero().squeeze(-1))
                obs = next_obs
                writer.poll()  # commit the shards the background writer has finished
                if done.any():
                    ended = done.nonzero().squeeze(-1)
                    for i in ended.tolist():
                        if episode_of[i] >= 0:
                            data = recorder.take(
                                i, info["final_obs"][i], bool(terminated[i]), bool(truncated[i])
                            )
                            returns.append(float(data["rewards"].sum()))
                            goal = {}  # tasks with a goal: whether the episode reached it
                            if "success" in info:
                                goal["success"] = bool(info["success"][i])
                                successes.append(goal["success"])
                            writer.add(
                                Episode(
                                    index=int(episode_of[i]),
                                    seed=int(seed_of[i]),
                                    pixels=data.pop("pixels", None),
                                    attrs={
                                        "episode_return": returns[-1],
                                        **goal,
                                        **policy.episode_attrs(i),
                                        **params_of[i],
                                    },
                                    **data,
                                )
                            )
                            bar.update(1)
                        else:
                            recorder.restart(torch.tensor([i]))
                    obs = assign(ended)
                    now = time.perf_counter()
                    if writer.num_pending >= flush_every or now - last_flush >= cfg.flush_seconds:
                        writer.flush()
                        last_flush = now
                    bar.set_postfix(transitions_per_s=f"{transitions / (now - start):,.0f}")
    finally:  # commit every finished episode, also after Ctrl-C or an error
        writer.close()
        bar.close()
        env.close()
    elapsed = time.perf_counter() - start
    summary = {
        "episodes_recorded": len(returns),
        "episodes_total": len(writer.committed),
        "transitions": transitions,
        "transitions_per_s": transitions / elapsed if elapsed > 0 else 0.0,
        "mean_return": sum(returns) / len(returns) if returns else float("nan"),
        "seconds": elapsed,
    }
    if successes:
        summary["success_rate"] = sum(successes) / len(successes)
    return summary


def run_collect(cfg: CollectCfg) -> None:
    """Entry point of `python run.py collect`: collect, then print the summary."""
    if cfg.worker_gpus and not cfg.ray:
        raise ValueError("--worker-gpus reserves GPUs for Ray workers: it needs --ray")
    if cfg.ray:
        from agents.ray_collect import collect_ray

        summary = collect_ray(cfg)
    else:
        summary = collect(cfg)
    print(
        f"{cfg.out}: recorded {summary['episodes_recorded']} episodes "
        f"({summary['transitions']:,} transitions, {summary['transitions_per_s']:,.0f}/s), "
        f"dataset holds {summary['episodes_total']}; mean return of the new episodes "
        f"{summary['mean_return']:.1f}"
        + (f", success rate {summary['success_rate']:.2f}" if "success_rate" in summary else "")
    )
