"""Isaac Lab tasks as batched envs: `envs.make("Isaac-Cartpole-Direct", backend="isaaclab")`.

Any Isaac Lab task registered with Gymnasium (direct or manager-based workflow)
is built from its own config (`isaaclab_tasks.utils.parse_env_cfg`) and spoken
to through our protocol (`docs/env-protocol.md`):

- observations are the task's `policy` group, float32 `[N, obs_dim]`;
- actions are checked like every env's (shape, NaN) and clipped to [-1, 1]; a task
  whose action space is bounded gets them mapped linearly onto its bounds, one
  with an unbounded space (most Isaac Lab tasks: they scale actions themselves,
  the cart-pole by 100 N) gets them as they are;
- same-step autoreset with the **true** final observation: Isaac Lab resets
  finished envs inside `step` before computing observations; its
  `compute_final_obs` setting makes it compute the observations once more before
  that reset, and `info["final_obs"]` holds them where an episode ended;
- `terminated` is the task's failure, `truncated` its time limit (kept apart);
- seeding: `seed` seeds Isaac Lab's generators when the env is built,
  `reset(seed=s)` reseeds them, and `reset_envs(ids, seeds)` starts each row's
  episode from its own seed (a row's start depends on its seed alone).

Without Isaac Sim (kit-less, Newton physics), a task runs offline when its assets
are local: `sim.isaaclab_assets` points the tasks it knows at files shipped with
the installed packages. Isaac Lab lives in its own Python 3.12 environment
(`python -m sim.isaaclab_setup`), the import happens when the env is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.base import check_action, check_reset_rows
from sim.randomization import RandomizationCfg


@dataclass(kw_only=True)
class IsaacLabCfg:
    """How an Isaac Lab task is run as a batched env (the task is named apart)."""

    num_envs: int = 1
    """Number of parallel environments N."""
    seed: int = 0
    """Seed of Isaac Lab's generators (reset distribution, events)."""
    device: str = "cpu"
    """Torch device of the simulation and of the returned tensors (cpu, cuda:0)."""
    backend: str = "isaaclab"
    """Always isaaclab (read by the data writers)."""
    episode_length: int | None = None
    """Control steps before truncation (None: the task's own time limit)."""
    action_repeat: int = 1
    """Control steps per agent step (Isaac Lab's decimation is inside one control step)."""
    offline_assets: bool = True
    """Point the task at local asset files where `sim.isaaclab_assets` knows them."""
    nthread: int = 0
    """Unused: Warp schedules Isaac Lab's CPU work itself (kept for a common signature)."""
    randomization: RandomizationCfg = field(default_factory=RandomizationCfg)
    """Must stay empty: an Isaac Lab task randomizes through its own event config."""


class IsaacLabEnv:
    """N copies of an Isaac Lab task behind the batched env protocol."""

    render_mode = "rgb_array"
    capture_final_frames = False
    can_render = False  # frames come from Isaac Lab's cameras, not from render()

    def __init__(self, task: str, cfg: IsaacLabCfg):
        if cfg.randomization != RandomizationCfg():
            raise ValueError(
                f"{task}: domain randomization of an Isaac Lab task is its own event config "
                "(task_cfg.events); --randomize settings do not apply"
            )
        if cfg.num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {cfg.num_envs!r}")
        if cfg.action_repeat != 1:
            raise ValueError(
                "isaaclab: action_repeat must be 1 (set the task's decimation in its config)"
            )
        self.cfg = cfg
        self.name = task
        self.num_envs = cfg.num_envs
        self.device = torch.device(cfg.device)
        task_cfg = task_config(task, cfg)
        self._env = gym.make(task, cfg=task_cfg).unwrapped
        space = getattr(self._env, "single_action_space", self._env.action_space)
        self.action_dim = int(np.prod(space.shape))
        low = torch.tensor(np.broadcast_to(space.low, space.shape), dtype=torch.float32)
        high = torch.tensor(np.broadcast_to(space.high, space.shape), dtype=torch.float32)
        bounded = torch.isfinite(low) & torch.isfinite(high)
        self._act_scale = torch.where(bounded, (high - low) / 2, 1.0).to(self.device)
        self._act_offset = torch.where(bounded, (high + low) / 2, 0.0).to(self.device)
        self.step_dt = float(self._env.step_dt)
        self.cfg.episode_length = int(self._env.max_episode_length)
        self._obs = self._policy(self._env.reset(seed=cfg.seed)[0])
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, shape=(self._obs.shape[1],), dtype=np.float32
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(self.action_dim,), dtype=np.float32)
        self.episode_seed = torch.zeros(self.num_envs, dtype=torch.int64)
        self._episode_return = torch.zeros(self.num_envs, dtype=torch.float64)
        self._episode_steps = torch.zeros(self.num_envs, dtype=torch.long)
        nq = sum(a.data.joint_pos.torch.shape[-1] for a in self._articulations())
        # what the data writers read of a simulator: state sizes and the control step
        self.sim = SimpleNamespace(nq=nq, nv=nq, dt=self.step_dt)

    # -------------------------------------------------------------- protocol
    @property
    def observation_dim(self) -> int:
        return self.observation_space.shape[0]

    @property
    def unwrapped(self):
        """The Isaac Lab env itself."""
        return self._env

    @property
    def episode_length_buf(self) -> torch.Tensor:
        """Isaac Lab's step counter of each env's episode `[N]` (its own tensor: writing
        into it moves where each episode's time limit falls)."""
        return self._env.episode_length_buf

    def episode_params(self, env: int) -> dict[str, list]:
        """Randomized parameters of an episode: none that we draw."""
        return {}

    def _policy(self, obs: Any) -> torch.Tensor:
        """A copy of the `policy` group, float32 `[N, obs_dim]` on our device (Isaac Lab
        refills its buffers in place every step, so nothing handed out may alias them)."""
        if isinstance(obs, dict):
            if "policy" not in obs:
                raise ValueError(f"{self.name}: observations have no 'policy' group: {list(obs)}")
            obs = obs["policy"]
        return obs.reshape(self.num_envs, -1).to(self.device, torch.float32, copy=True)

    def _observe(self) -> torch.Tensor:
        """The policy observations of the current simulation state, computed afresh
        (after a reset or a state written outside `step`)."""
        manager = getattr(self._env, "observation_manager", None)  # manager-based tasks
        return self._policy(
            manager.compute() if manager is not None else self._env._compute_observations()
        )

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Start a new episode in every env; `seed` reseeds Isaac Lab's generators."""
        obs, _ = self._env.reset(seed=seed)
        self._episode_return.zero_()
        self._episode_steps.zero_()
        self._obs = self._policy(obs)
        return self._obs

    def reset_envs(self, env_ids: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Start the episodes with `seeds` `[n]` in `env_ids` `[n]`, each row's start
        drawn from its own seed (one Isaac Lab reset per row); other envs are
        untouched. Returns the observations of every env."""
        ids, seeds = check_reset_rows(env_ids, seeds, self.num_envs, self.name)
        env, dev = self._env, self._env.device
        devices = [dev] if str(dev).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):  # the caller's generators are untouched
            for i, s in zip(ids.tolist(), seeds.tolist(), strict=True):
                torch.manual_seed(s & 0x7FFF_FFFF_FFFF_FFFF)
                env._reset_idx(torch.tensor([i], device=dev, dtype=torch.int32))
        env.scene.write_data_to_sim()
        env.sim.forward()
        env.scene.update(dt=0.0)
        self.episode_seed[ids] = seeds
        self._episode_return[ids] = 0.0
        self._episode_steps[ids] = 0
        self._obs = self._observe()
        return self._obs

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every env by one control step (see the module docstring)."""
        action = check_action(action, self.num_envs, self.action_dim, self.name)
        action = action.to(self.device, torch.float32) * self._act_scale + self._act_offset
        obs, reward, terminated, truncated, extras = self._env.step(action)
        # Isaac Lab refills its buffers in place every step: copy what we hand out
        obs = self._policy(obs)
        terminated = terminated.to(self.device, torch.bool).reshape(-1).clone()
        truncated = truncated.to(self.device, torch.bool).reshape(-1) & ~terminated
        reward = reward.to(self.device, torch.float32).reshape(-1).clone()
        done = terminated | truncated
        self._episode_return += reward.double().cpu()
        self._episode_steps += 1
        info: dict[str, Any] = {}
        final_obs = obs
        if done.any():
            before = self._policy(extras["final_obs"])  # computed before the reset
            final_obs = torch.where(done[:, None], before, obs)
            info["episode_return"] = self._episode_return.clone()
            info["episode_length"] = self._episode_steps.clone()
            ended = done.cpu()
            self._episode_return[ended] = 0.0
            self._episode_steps[ended] = 0
        info["final_obs"] = final_obs  # `obs` itself where no episode ended, as BatchedEnv
        info["log"] = extras.get("log", {})
        self._obs = obs
        return obs, reward, terminated, truncated, info

    def get_observations(self) -> torch.Tensor:
        return self._obs.clone()

    # ---------------------------------------------------------- physics state
    def _articulations(self) -> list:
        arts = list(self._env.scene.articulations.values())
        if not arts:
            raise ValueError(f"{self.name}: the scene has no articulation")
        return arts

    def get_physics_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(joint positions `[N, nq]`, joint velocities `[N, nv]`) float64 of every
        articulation in the scene, concatenated in the scene's order."""
        arts = self._articulations()
        qpos = torch.cat([a.data.joint_pos.torch for a in arts], -1)
        qvel = torch.cat([a.data.joint_vel.torch for a in arts], -1)
        return qpos.to("cpu", torch.float64), qvel.to("cpu", torch.float64)

    def set_physics_state(
        self, qpos: torch.Tensor, qvel: torch.Tensor, env_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Write joint positions and velocities (as `get_physics_state` returns them)
        into the rows `env_ids` (all by default); returns the recomputed observations."""
        ids = torch.arange(self.num_envs) if env_ids is None else torch.as_tensor(env_ids).long()
        dev = self._env.device
        want = (len(ids), self.sim.nq)
        qpos, qvel = torch.as_tensor(qpos), torch.as_tensor(qvel)
        if tuple(qpos.shape) != want or tuple(qvel.shape) != want:
            raise ValueError(
                f"{self.name}: qpos {tuple(qpos.shape)} and qvel {tuple(qvel.shape)} must have "
                f"shape {want}"
            )
        if not (torch.isfinite(qpos).all() and torch.isfinite(qvel).all()):
            raise ValueError(f"{self.name}: qpos or qvel contains NaN or inf")
        ids_dev = ids.to(dev, torch.int32)
        start = 0
        for art in self._articulations():
            n = art.data.joint_pos.torch.shape[-1]
            pos = qpos[:, start : start + n].to(dev, torch.float32)
            vel = qvel[:, start : start + n].to(dev, torch.float32)
            art.write_joint_position_to_sim_index(position=pos, env_ids=ids_dev)
            art.write_joint_velocity_to_sim_index(velocity=vel, env_ids=ids_dev)
            start += n
        self._env.sim.forward()
        self._env.scene.update(dt=0.0)
        self._obs = self._observe()
        return self._obs

    def render(self, env_ids: torch.Tensor | None = None) -> torch.Tensor:
        raise ValueError(
            f"{self.name}: frames of Isaac Lab tasks come from its cameras (an Isaac Sim or "
            "a tiled-camera task); kit-less state tasks have no renderer here"
        )

    def close(self) -> None:
        self._env.close()


def task_config(task: str, cfg: IsaacLabCfg):
    """The Isaac Lab task config of `cfg`: device, N, seed, final observations on,
    the episode length and, with `offline_assets`, local asset files."""
    try:
        import isaaclab_tasks  # noqa: F401 - registers the tasks with Gymnasium
        from isaaclab_tasks.utils import parse_env_cfg
    except ImportError as err:
        raise ImportError(
            "backend 'isaaclab' needs Isaac Lab (Python 3.12): build its environment with "
            "`python -m sim.isaaclab_setup` and run there"
        ) from err
    if task not in gym.registry:
        isaac = sorted(k for k in gym.registry if k.startswith("Isaac-"))
        raise ValueError(
            f"unknown Isaac Lab task {task!r}; registered Isaac Lab tasks include: "
            f"{', '.join(isaac[:12])}, ..."
        )
    task_cfg = parse_env_cfg(task, device=cfg.device, num_envs=cfg.num_envs)
    task_cfg.seed = cfg.seed
    task_cfg.compute_final_obs = True
    if cfg.episode_length is not None:
        if cfg.episode_length < 1:
            raise ValueError(f"episode_length must be positive, got {cfg.episode_length}")
        step_dt = task_cfg.sim.dt * task_cfg.decimation
        task_cfg.episode_length_s = (cfg.episode_length - 0.5) * step_dt
    if cfg.offline_assets:
        from sim.isaaclab_assets import use_local_assets

        use_local_assets(task, task_cfg)
    return task_cfg


def make(task: str, num_envs: int = 1, seed: int = 0, **cfg: Any) -> IsaacLabEnv:
    valid = {f.name for f in dataclasses.fields(IsaacLabCfg)}
    unknown = sorted(set(cfg) - valid)
    if unknown:
        raise ValueError(
            f"{task}: unknown config field(s) {', '.join(unknown)} for an Isaac Lab task; "
            f"valid fields: {', '.join(sorted(valid))}"
        )
    return IsaacLabEnv(task, IsaacLabCfg(num_envs=num_envs, seed=seed, **cfg))
