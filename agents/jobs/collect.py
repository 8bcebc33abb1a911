"""`python run.py collect`: roll a policy out in a batched env and record every episode.

Episode e of a run has seed `sim.rng.episode_seeds(seed, e)`; the env starts it
with `reset_envs` and the policy draws its noise from it, so the recorded episode
is a function of (settings, seed, e) only. Episodes go to whichever env is free,
finish at different steps, and are committed in shards (see `sim.data.dataset`): a
killed run keeps every committed episode and `--resume` records exactly the
missing ones, giving the dataset an uninterrupted run would have written.
"""

from __future__ import annotations

import dataclasses
import json
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
from sim.data.dataset import DatasetWriter, Episode
from sim.data.recorder import EpisodeRecorder
from sim.randomization import RandomizationCfg

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
    """What defines the recorded data: robomimic's env_args plus our run settings, as a
    dataset stores them (JSON values: lists, not tuples)."""
    kwargs = {k: v for k, v in dataclasses.asdict(env.cfg).items() if k not in _EXECUTION_FIELDS}
    args = {
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
    return json.loads(json.dumps(args))


def recorded_env_args(cfg: CollectCfg) -> dict:
    """The env_args a collection with `cfg` records (its env built and closed)."""
    env = _make_env(dataclasses.replace(cfg, num_envs=1))
    try:
        return env_args(cfg, env)
    finally:
        env.close()


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
    policy_fn = _check(cfg, policy_fn)
    env = _make_env(cfg)
    steps = env.cfg.episode_length // env.cfg.action_repeat
    if cfg.pixels:
        _check_pixel_memory(cfg, env, steps)
    if policy_fn is None:
        policy = make_policy(cfg.policy, env, cfg.noise_std, cfg.noise_rho)
    else:
        policy = policy_fn(env)
    run = _Collection(cfg, env, policy, steps)
    try:
        with torch.inference_mode():
            run.record()
    finally:  # commit every finished episode, also after Ctrl-C or an error
        run.close()
    return run.summary()


def _check(
    cfg: CollectCfg, policy_fn: Callable[[Any], Policy] | None
) -> Callable[[Any], Policy] | None:
    """Refuse bad settings; returns the policy builder (an agent checkpoint's, if named)."""
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
    return policy_fn


def _make_env(cfg: CollectCfg):
    """The batched env of the run, with the task's settings that `cfg` overrides."""
    overrides: dict = {"randomization": cfg.randomize}
    if cfg.episode_length is not None:
        overrides["episode_length"] = cfg.episode_length
    if cfg.action_repeat is not None:
        overrides["action_repeat"] = cfg.action_repeat
    if cfg.pixels:
        overrides.update(render_width=cfg.pixels, render_height=cfg.pixels)
    return envs.make(
        cfg.task,
        cfg.num_envs,
        cfg.backend,
        seed=cfg.seed,
        nthread=cfg.nthread,
        device=cfg.device,
        **overrides,
    )


def _check_pixel_memory(cfg: CollectCfg, env, steps: int) -> None:
    """Refuse frame buffers beyond memory: N whole episodes of frames live until each ends."""
    need = env.num_envs * (steps + 1) * cfg.pixels**2 * 3
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > 0.8 * free:
        raise ValueError(
            f"pixel buffers for {env.num_envs} envs x {steps + 1} frames of "
            f"{cfg.pixels}x{cfg.pixels} need {need / 2**30:.1f} GiB, more than the "
            f"{free / 2**30:.1f} GiB free: use fewer envs or smaller frames"
        )


class _Collection:
    """A collection run's state: which episode each env plays, what is recorded and
    committed; `record` steps every env until the wanted episodes are done."""

    def __init__(self, cfg: CollectCfg, env, policy: Policy, steps: int):
        self.cfg, self.env, self.policy = cfg, env, policy
        self.writer = DatasetWriter(cfg.out, env_args(cfg, env), resume=cfg.resume, background=True)
        wanted = range(cfg.episodes) if cfg.episode_ids is None else cfg.episode_ids
        self.todo = [e for e in wanted if e not in self.writer.committed]
        self.recorder = EpisodeRecorder(
            env.num_envs,
            steps,
            env.observation_dim,
            env.action_dim,
            env.sim.nq,
            env.sim.nv,
            (cfg.pixels, cfg.pixels, 3) if cfg.pixels else None,
        )
        env.capture_final_frames = bool(cfg.pixels)
        self.flush_every = cfg.flush_episodes or env.num_envs
        self.episode_of = torch.full((env.num_envs,), -1, dtype=torch.long)  # -1: env idle
        # the seed of each env's episode (the env's autoreset reseeds)
        self.seed_of = torch.zeros(env.num_envs, dtype=torch.int64)
        self.params_of: list[dict] = [{} for _ in range(env.num_envs)]  # randomization per episode
        self.returns: list[float] = []
        self.successes: list[bool] = []
        self.bar = tqdm(
            total=len(self.todo), unit="ep", disable=not cfg.progress, dynamic_ncols=True
        )
        self.transitions, self.start = 0, time.perf_counter()
        self.last_flush = self.start

    def assign(self, env_ids: torch.Tensor) -> torch.Tensor:
        """Give the next wanted episodes to free envs; returns the observations."""
        take, self.todo = self.todo[: len(env_ids)], self.todo[len(env_ids) :]
        self.episode_of[env_ids] = -1
        ids = env_ids[: len(take)]
        if len(take):
            self.episode_of[ids] = torch.tensor(take)
            seeds = rng.episode_seeds(self.cfg.seed, take)
            self.seed_of[ids] = seeds
            obs = self.env.reset_envs(ids, seeds)
            for i in ids.tolist():
                self.params_of[i] = self.env.episode_params(i)
            self.policy.reset(ids, seeds)
            if self.cfg.pixels:
                self.recorder.record_frames(self.env.render(ids), ids)
            return obs
        return self.env.get_observations()

    def record(self) -> None:
        """Step every env until no wanted episode is left to play."""
        self.env.reset()
        obs = self.assign(torch.arange(self.env.num_envs))
        while (self.episode_of >= 0).any():
            obs = self.step(obs)

    def step(self, obs: torch.Tensor) -> torch.Tensor:
        """One step of every env: record it, and write the episodes that end."""
        env, recorder = self.env, self.recorder
        qpos, qvel = env.get_physics_state()
        action = self.policy(obs)
        next_obs, reward, terminated, truncated, info = env.step(action)
        # the bookkeeping lives on the CPU, whatever the env's device
        terminated, truncated = terminated.cpu(), truncated.cpu()
        done = terminated | truncated
        recorder.record(obs, action, reward, qpos, qvel, info.get("at_goal"))
        active = self.episode_of >= 0
        self.transitions += int(active.sum())
        if self.cfg.pixels:
            live = (active & ~done).nonzero().squeeze(-1)
            recorder.record_frames(env.render(live), live)
            if done.any():
                recorder.record_frames(info["final_frames"], done.nonzero().squeeze(-1))
        obs = next_obs
        self.writer.poll()  # commit the shards the background writer has finished
        if done.any():
            obs = self._end(done.nonzero().squeeze(-1), terminated, truncated, info)
        return obs

    def _end(
        self,
        ended: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        info: dict[str, Any],
    ) -> torch.Tensor:
        """Write the ended envs' episodes, give the envs new ones, commit a shard when due."""
        for i in ended.tolist():
            if self.episode_of[i] >= 0:
                self._add_episode(i, bool(terminated[i]), bool(truncated[i]), info)
                self.bar.update(1)
            else:
                self.recorder.restart(torch.tensor([i]))
        obs = self.assign(ended)
        now = time.perf_counter()
        due = now - self.last_flush >= self.cfg.flush_seconds
        if self.writer.num_pending >= self.flush_every or due:
            self.writer.flush()
            self.last_flush = now
        self.bar.set_postfix(transitions_per_s=f"{self.transitions / (now - self.start):,.0f}")
        return obs

    def _add_episode(self, i: int, terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        """Hand env i's finished episode, with its attrs, to the writer."""
        data = self.recorder.take(i, info["final_obs"][i], terminated, truncated)
        self.returns.append(float(data["rewards"].sum()))
        goal = {}  # tasks with a goal: whether the episode reached it
        if "success" in info:
            goal["success"] = bool(info["success"][i])
            self.successes.append(goal["success"])
        self.writer.add(
            Episode(
                index=int(self.episode_of[i]),
                seed=int(self.seed_of[i]),
                pixels=data.pop("pixels", None),
                attrs={
                    "episode_return": self.returns[-1],
                    **goal,
                    **self.policy.episode_attrs(i),
                    **self.params_of[i],
                },
                **data,
            )
        )

    def close(self) -> None:
        """Commit every finished episode and release the env."""
        self.writer.close()
        self.bar.close()
        self.env.close()

    def summary(self) -> dict[str, float]:
        """Episodes, transitions, rates and mean return (and success rate) of the run."""
        elapsed = time.perf_counter() - self.start
        returns, successes = self.returns, self.successes
        summary = {
            "episodes_recorded": len(returns),
            "episodes_total": len(self.writer.committed),
            "transitions": self.transitions,
            "transitions_per_s": self.transitions / elapsed if elapsed > 0 else 0.0,
            "mean_return": sum(returns) / len(returns) if returns else float("nan"),
            "seconds": elapsed,
        }
        if successes:
            summary["success_rate"] = sum(successes) / len(successes)
        return summary
