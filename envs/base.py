"""The batched env: N copies of one task stepped together, torch tensors in and out.

Tasks fill in the Isaac Lab direct-workflow hooks (`_get_observations`,
`_get_rewards`, `_get_dones`, `_reset_idx`, optionally `_apply_action`) over the
`sim` protocol; this class owns everything else: action checks, action repeat,
time limits, same-step autoreset with the true final observation, divergence
handling, seeding and episode statistics.

Every episode has a seed (`episode_seed[i]` for the one running in env i), and
all randomness of its start (`uniform`/`normal` inside `_reset_idx`) is drawn
from it with the counter-based generator of `sim.rng`: `reset_envs(ids, seeds)`
replays any episode in any env, whatever ran there before. By default the seeds
come from the env's generator, seeded by `cfg.seed` or `reset(seed=...)`.

Contract of `step` (the Isaac Lab / Stable-Baselines3 convention, except that
the final observation is kept):
- `obs[i]` is the first observation of a new episode where `done[i]`;
- `info["final_obs"][i]` is the last observation of the finished episode there;
- `truncated` means the time limit (or a diverged world), never a task failure;
- tasks with a goal (`_get_success`) put `info["success"]` in every step: whether the
  episode that ran in each env this step reached its goal at any control step so far;
  and `info["at_goal"]`: whether it is at its goal at the end of this step (at the
  control step it ended on, for an episode that ended mid-repeat).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from sim import BACKENDS, make_sim, rng
from sim.randomization import DomainRandomizer, RandomizationCfg

ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass(kw_only=True)
class EnvCfg:
    """Configuration shared by every task; tasks subclass it with their own fields."""

    # batch and execution
    num_envs: int = 1
    """Number of parallel environments N."""
    seed: int = 0
    """Seed of the reset distribution and of any other task randomness."""
    device: str = "cpu"
    """Torch device of the tensors `reset` and `step` return."""
    backend: str = "mujoco"
    """Physics backend (see `sim.BACKENDS`)."""
    nthread: int = 0
    """Physics worker threads; 0 uses every CPU."""
    # timing
    substeps: int = 1
    """Physics steps per control step (control timestep / physics timestep)."""
    action_repeat: int = 1
    """Control steps per agent step, the action held; rewards are summed."""
    episode_length: int = 1000
    """Control steps before truncation (time limit / control timestep)."""
    # rendering
    render_width: int = 64
    """Width of `render()` frames [px]."""
    render_height: int = 64
    """Height of `render()` frames [px]."""
    render_camera: int | str = 0
    """MJCF camera (index or name) that `render()` uses."""
    obs: str = "state"
    """state: the task's observation vector, float32 `[N, obs_dim]`; pixels: `render()`
    frames, uint8 `[N, render_height, render_width, 3]` (batched on the warp backend)."""
    # domain randomization
    randomization: RandomizationCfg = field(default_factory=RandomizationCfg)
    """Per-episode physics parameters, observation and action noise, action delay."""


class BatchedEnv(ABC):
    """Base class of every batched task. See the module docstring for the contract."""

    cfg: EnvCfg
    model_file: str  # MJCF file under envs/assets
    name: str = "env"  # registry name, set by `envs.make`
    render_mode = "rgb_array"  # `render()` returns frames (read by the SB3 adapter)
    capture_final_frames = False  # put frames of finished episodes' last states in info
    unobserved_qpos: tuple[int, ...] = ()
    """qpos coordinates the observation leaves out (a legged body's forward position):
    `set_state_from_obs` keeps each world's own."""
    contact_obs: tuple[int, ...] = ()
    """Observation entries read from the contact forces of the last physics step (touch
    sensors): no physics state gives them back, so `set_state_from_obs` cannot."""
    periodic_obs: tuple[int, ...] = ()
    """Observation entries that are joint angles without bounds [rad] (observed as they
    are, spanning many turns): learners see them as (cos, sin) (`envs.features`)."""
    can_render = True  # `render()` draws the scene (kit-less Isaac Lab tasks cannot)

    def __init__(self, cfg: EnvCfg):
        _check_cfg(cfg)
        self.cfg = cfg
        self.num_envs = cfg.num_envs
        self.device = torch.device(cfg.device)
        self._ids: dict[tuple[str, str], int] = {}
        self._sensor_spans: dict[str, slice] = {}
        # the warp backend simulates on the env's device (CUDA graphs on a GPU); the
        # MuJoCo backend on the CPU, its tensors moved to `device` on the way out
        on_device = {"device": cfg.device} if cfg.backend == "warp" else {}
        self.sim = make_sim(
            cfg.backend,
            self.compile_model(cfg),
            cfg.num_envs,
            substeps=cfg.substeps,
            nthread=cfg.nthread,
            **on_device,
        )
        # the env's own buffers live beside the physics state (no copies per step)
        self.sim_device = dev = self.sim.qpos.device
        self._rng = torch.Generator().manual_seed(cfg.seed)
        n = cfg.num_envs
        self.episode_seed = torch.zeros(n, dtype=torch.int64, device=dev)  # each episode's
        self._draw_keys: torch.Tensor | None = None  # per-row keys while starting episodes
        self._draw_count = 0
        self.episode_length_buf = torch.zeros(n, dtype=torch.long, device=dev)
        self._episode_return = torch.zeros(n, dtype=torch.float64, device=dev)
        self._episode_success = torch.zeros(n, dtype=torch.bool, device=dev)
        self._at_goal: torch.Tensor | None = None  # the last control step's goal reached
        self.num_diverged = 0  # worlds reset because their physics diverged
        lo, hi = self.sim.ctrl_range.to(dev).unbind(-1)
        # [-1, 1] -> [lo, hi]; exact identity when the range is already [-1, 1]
        self._ctrl_scale = torch.where(torch.isfinite(hi - lo), (hi - lo) / 2, 1.0)
        self._ctrl_offset = torch.where(torch.isfinite(hi + lo), (hi + lo) / 2, 0.0)
        self.action_dim = self.sim.nu
        self.actions = torch.zeros(n, self.action_dim, dtype=torch.float64, device=dev)
        dr = cfg.randomization
        self.randomizer = (
            DomainRandomizer(dr, self.sim) if dr.physics or dr.action_delay != (0, 0) else None
        )
        self._obs_keys = torch.zeros(n, dtype=torch.int64, device=dev)  # noise streams
        self._act_keys = torch.zeros(n, dtype=torch.int64, device=dev)
        # actions waiting to be applied, newest first: row i applies entry delay[i]
        max_delay = dr.action_delay[1]
        self._queue = torch.zeros(
            n, max_delay + 1, self.action_dim, dtype=torch.float64, device=dev
        )
        self._has_goal = self._get_success() is not None
        self._obs = self._reset_all()
        # until something changes them, these initial states are what reset() returns,
        # so make(seed=s).reset() equals reset(seed=s) on any env of the task
        self._fresh = True
        if cfg.obs == "pixels":
            shape = (cfg.render_height, cfg.render_width, 3)
            self.observation_space = gym.spaces.Box(0, 255, shape=shape, dtype=np.uint8)
        else:
            self.observation_space = gym.spaces.Box(
                -np.inf, np.inf, shape=(self._obs.shape[1],), dtype=np.float32
            )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(self.action_dim,), dtype=np.float32)

    @classmethod
    def compile_model(cls, cfg: EnvCfg):
        """The task's MjModel: its MJCF asset, changed by `edit_spec` (every world and
        every peer that simulates the task starts from this model)."""
        import mujoco  # here: Isaac Lab tasks (no MJCF) never load it

        spec = mujoco.MjSpec.from_file(str(ASSETS / cls.model_file))
        cls.edit_spec(spec, cfg)
        return spec.compile()

    @classmethod
    def edit_spec(cls, spec, cfg: EnvCfg) -> None:
        """Change the asset's `mujoco.MjSpec` before it compiles, for a task whose model
        differs from its domain's asset (a finger's spinner damping); default: none."""
        del spec, cfg

    # ----------------------------------------------------------- task hooks
    @abstractmethod
    def _get_observations(self) -> torch.Tensor:
        """Observations of every env at the current state, float32 `[N, obs_dim]`."""

    @abstractmethod
    def _get_rewards(self) -> torch.Tensor:
        """Reward of the control step just taken, `[N]`."""

    def _get_dones(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(terminated, time_out) bool `[N]`; tasks without terminal states keep this."""
        time_out = self.episode_length_buf >= self.cfg.episode_length
        return torch.zeros_like(time_out), time_out

    def _get_success(self) -> torch.Tensor | None:
        """Whether each env is at its goal now, bool `[N]`; None: the task has no goal."""
        return None

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        """Start new episodes in `env_ids`; tasks extend this to sample initial states."""
        self.sim.reset_worlds(env_ids)
        self.episode_length_buf[env_ids] = 0
        self._episode_return[env_ids] = 0.0
        self._episode_success[env_ids] = False

    def _apply_action(self, actions: torch.Tensor) -> None:
        """Write actions in [-1, 1] to the actuators, scaled to their control range."""
        self.sim.ctrl.copy_(actions * self._ctrl_scale + self._ctrl_offset)

    def object_id(self, kind: str, name: str) -> int:
        """Index of a named MJCF object (`kind` as in mujoco.mjtObj: body, geom, joint)."""
        key = (kind, name)
        if key not in self._ids:
            self._ids[key] = self.sim.object_id(kind, name)
        return self._ids[key]

    def sensor(self, name: str) -> torch.Tensor:
        """Readings of the named MJCF sensor in every world, `[N, dim]`, current after `step`."""
        if name not in self._sensor_spans:
            sensor = self.object_id("sensor", name)
            model = self.sim.model
            adr, dim = int(model.sensor_adr[sensor]), int(model.sensor_dim[sensor])
            self._sensor_spans[name] = slice(adr, adr + dim)
        return self.sim.data("sensordata")[:, self._sensor_spans[name]]

    # ------------------------------------------------------------ protocol
    @property
    def observation_dim(self) -> int:
        return self.observation_space.shape[0]

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Start a new episode in every env; `seed` re-seeds the reset distribution."""
        if seed is not None:
            self._rng.manual_seed(seed)
        elif self._fresh:
            self._fresh = False
            return self._obs.to(self.device)
        self._fresh = False
        self._obs = self._reset_all()
        return self._obs.to(self.device)

    def reset_envs(self, env_ids: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Start the episodes with `seeds` `[n]` (int64) in `env_ids` `[n]`; other envs
        are untouched. Returns the observations of every env, `[N, obs_dim]`."""
        ids, seeds = check_reset_rows(env_ids, seeds, self.num_envs, self.name)
        self._start_episodes(ids, seeds)
        self.sim.forward(ids, acceleration=True)
        self._fresh = False
        self._obs = self._observe()
        return self._obs.to(self.device)

    def _start_episodes(self, env_ids: torch.Tensor, seeds: torch.Tensor | None = None) -> None:
        """`_reset_idx` with each row's draws taken from its episode seed."""
        if seeds is None:
            seeds = torch.randint(-(2**63), 2**63 - 1, (len(env_ids),), generator=self._rng)
        env_ids, seeds = env_ids.to(self.sim_device), seeds.to(self.sim_device)
        self.episode_seed[env_ids] = seeds
        self._draw_keys, self._draw_count = rng.substream(seeds, _RESET_STREAM), 0
        try:
            self._reset_idx(env_ids)
        finally:
            self._draw_keys = None
        if self.randomizer is not None:
            self.randomizer.sample(env_ids.cpu(), seeds.cpu())
        self._obs_keys[env_ids] = rng.substream(seeds, _OBS_NOISE_STREAM)
        self._act_keys[env_ids] = rng.substream(seeds, _ACTION_NOISE_STREAM)
        self._queue[env_ids] = 0.0

    def _observe(self) -> torch.Tensor:
        """Observations with the episode's observation noise (drawn per episode step),
        or the frames of every env with `obs="pixels"`."""
        if self.cfg.obs == "pixels":
            return self._frames()
        obs = self._get_observations()
        std = self.cfg.randomization.obs_noise_std
        if std:
            d = obs.shape[1]
            noise = rng.normal(self._obs_keys, self.episode_length_buf * 2 * d, d)
            obs = obs + (std * noise).to(obs.dtype)
        return obs

    def _delivered_action(self) -> torch.Tensor:
        """What reaches the actuators this step: the action with noise, `delay` steps late."""
        action = self.actions
        std = self.cfg.randomization.action_noise_std
        if std:
            a = self.action_dim
            noise = rng.normal(self._act_keys, self.episode_length_buf * 2 * a, a)
            action = (action + std * noise).clamp(-1.0, 1.0)
        if self._queue.shape[1] == 1:
            return action
        self._queue = torch.roll(self._queue, 1, dims=1)
        self._queue[:, 0] = action
        delay = self.randomizer.params["action_delay"].to(self.sim_device)
        return self._queue[torch.arange(self.num_envs, device=self.sim_device), delay]

    def episode_params(self, env: int) -> dict[str, list]:
        """Randomized parameters of env `env`'s current episode (empty without randomization)."""
        return {} if self.randomizer is None else self.randomizer.episode_params(env)

    def _reset_all(self) -> torch.Tensor:
        self._start_episodes(torch.arange(self.num_envs, device=self.sim_device))
        self.sim.forward(acceleration=True)
        return self._observe()

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every env by one agent step; see the module docstring."""
        self.actions = self._check_action(action)
        self._fresh = False
        self._apply_action(self._delivered_action())
        reward, terminated, truncated, diverged = self._control_step()
        at_goal = self._at_goal
        snap_obs = snap_mask = None  # last observations of episodes that ended mid-repeat
        for _ in range(1, self.cfg.action_repeat):
            ended = terminated | truncated
            if ended.any():
                if snap_obs is None:
                    snap_obs, snap_mask = self._observe(), ended.clone()
                elif (new := ended & ~snap_mask).any():
                    snap_obs[new] = self._observe()[new]
                    snap_mask |= new
            rew, term, time_out, div = self._control_step(~ended)
            if at_goal is not None:
                at_goal = torch.where(ended, at_goal, self._at_goal)
            reward += rew.masked_fill(ended, 0.0)  # an ended episode earns nothing more
            diverged |= div & ~ended
            terminated |= term & ~ended
            truncated |= time_out & ~ended
        obs = self._observe()
        done = terminated | truncated
        final_obs = obs if snap_obs is None else torch.where(_rows(snap_mask, obs), snap_obs, obs)
        if diverged.any():
            self.num_diverged += int(diverged.sum())
            final_obs = torch.where(_rows(diverged, obs), self._obs, final_obs)
        self._episode_return += reward
        info: dict[str, Any] = {"diverged": diverged}
        if self._has_goal:
            info["success"] = self._episode_success.clone()
            info["at_goal"] = at_goal.clone()
        if done.any():
            ids = done.nonzero().squeeze(-1)
            info["episode_return"] = self._episode_return.clone()
            info["episode_length"] = self.episode_length_buf.clone()
            final_obs = final_obs.clone()
            if self.capture_final_frames:  # the last state is gone once the env resets
                info["final_frames"] = self.render(ids)
            self._start_episodes(ids)
            self.sim.forward(ids, acceleration=True)
            obs = self._observe()
        self._obs = obs
        info["final_obs"] = final_obs
        return self._out(obs, reward.float(), terminated, truncated, info)

    def _control_step(self, running: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """One control step: (reward float64, terminated, time_out, diverged), all `[N]`.
        Goal success counts for the `running` rows (all if None)."""
        diverged = self.sim.step()
        self.episode_length_buf += 1
        reward = self._get_rewards().to(torch.float64)
        success = self._get_success()
        if success is not None:
            success = success & ~diverged
            self._episode_success |= success if running is None else success & running
        self._at_goal = success
        terminated, time_out = self._get_dones()
        if diverged.any():  # never pass a diverged world's state on: end its episode
            reward = reward.masked_fill(diverged, 0.0)
            terminated, time_out = terminated & ~diverged, time_out | diverged
        return reward, terminated, time_out, diverged

    def get_observations(self) -> torch.Tensor:
        """The current observation of every env, float32 `[N, obs_dim]`."""
        return self._obs.to(self.device)

    def get_physics_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(qpos `[N, nq]`, qvel `[N, nv]`) float64 copies of every world's state."""
        return self.sim.qpos.clone().to(self.device), self.sim.qvel.clone().to(self.device)

    def set_physics_state(
        self, qpos: torch.Tensor, qvel: torch.Tensor, env_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Overwrite the physics state of `env_ids` (all if None); returns the new observations."""
        ids = (
            torch.arange(self.num_envs)
            if env_ids is None
            else torch.as_tensor(env_ids).cpu().long()
        )
        qpos, qvel = torch.as_tensor(qpos).cpu(), torch.as_tensor(qvel).cpu()
        for label, value, width in (("qpos", qpos, self.sim.nq), ("qvel", qvel, self.sim.nv)):
            if tuple(value.shape) != (len(ids), width):
                raise ValueError(
                    f"{self.name}: {label} has shape {tuple(value.shape)}, expected "
                    f"({len(ids)}, {width}) for {len(ids)} env ids"
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"{self.name}: {label} contains NaN or inf")
        self.sim.set_state(qpos, qvel, ids)
        self._fresh = False
        self._obs = self._observe()
        return self._obs.to(self.device)

    def set_state_from_obs(
        self, obs: torch.Tensor, env_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Set the physics state of `env_ids` (all if None) so that their observations
        (before any observation noise) equal `obs` `[n, obs_dim]`; returns the new
        observations of every env. Draws observations that did not come from the
        simulator, such as a world model's predictions, with the env's own renderer.
        What the observation does not hold (a reacher's target) stays the episode's."""
        ids = (
            torch.arange(self.num_envs)
            if env_ids is None
            else torch.as_tensor(env_ids).cpu().long().reshape(-1)
        )
        if self.cfg.obs != "state":
            raise ValueError(
                f"{self.name}: set_state_from_obs needs state observations, "
                f"this env observes {self.cfg.obs}"
            )
        obs = torch.as_tensor(obs).detach().cpu()
        if tuple(obs.shape) != (len(ids), self.observation_dim):
            raise ValueError(
                f"{self.name}: obs has shape {tuple(obs.shape)}, expected "
                f"({len(ids)}, {self.observation_dim}) for {len(ids)} env ids"
            )
        qpos, qvel = self._state_from_obs(obs.to(torch.float64), ids)
        if self.unobserved_qpos:  # each world keeps its own
            full = self.sim.qpos[ids.to(self.sim_device)].to(qpos)
            observed = [i for i in range(self.sim.nq) if i not in self.unobserved_qpos]
            full[:, observed] = qpos
            qpos = full
        return self.set_physics_state(qpos, qvel, ids)

    @property
    def can_set_state_from_obs(self) -> bool:
        """Whether the task's observation gives back a physics state (`set_state_from_obs`):
        false where it leaves out orientations it cannot be drawn without (a quadruped's)."""
        return type(self)._state_from_obs is not BatchedEnv._state_from_obs

    def _state_from_obs(
        self, obs: torch.Tensor, env_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(qpos `[n, nq]`, qvel `[n, nv]`) whose observation is `obs` (float64 `[n, obs_dim]`);
        tasks whose observation determines their state implement this. qpos leaves out
        the `unobserved_qpos` columns, which `set_state_from_obs` fills in."""
        raise NotImplementedError(
            f"{self.name}: {type(self).__name__} does not implement set_state_from_obs "
            "(its observation does not give back a physics state)"
        )

    def render(
        self,
        env_ids: torch.Tensor | None = None,
        *,
        width: int | None = None,
        height: int | None = None,
    ) -> torch.Tensor:
        """RGB frames uint8 `[n, H, W, 3]` of `env_ids` (all if None), at the env's
        render size or at `width` x `height` (a video for people; the camera and scene
        are the env's)."""
        return self._frames(env_ids, width, height).to(self.device)

    def _frames(
        self,
        env_ids: torch.Tensor | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> torch.Tensor:
        return self.sim.render(
            env_ids,
            width=width or self.cfg.render_width,
            height=height or self.cfg.render_height,
            camera=self.cfg.render_camera,
            scene_hook=self._scene_hook,
        )

    _scene_hook = None  # tasks may set a (model, data, world) -> None callback

    def close(self) -> None:
        self.sim.close()

    # ------------------------------------------------------------- helpers
    def _check_action(self, action: torch.Tensor) -> torch.Tensor:
        return check_action(action, self.num_envs, self.action_dim, self.name, self.sim_device)

    def _out(self, obs, reward, terminated, truncated, info):
        if self.device.type == "cpu":
            return obs, reward, terminated, truncated, info
        move = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in info.items()}
        return (
            obs.to(self.device),
            reward.to(self.device),
            terminated.to(self.device),
            truncated.to(self.device),
            move,
        )

    def uniform(self, low: float | torch.Tensor, high: float | torch.Tensor, size) -> torch.Tensor:
        """float64 samples in [low, high), row i from the seed of the i-th episode
        being started; `size[0]` is the number of env ids `_reset_idx` got."""
        return low + (high - low) * self._draw(rng.uniform, size)

    def normal(self, size) -> torch.Tensor:
        """float64 standard normal samples, drawn like `uniform`."""
        return self._draw(rng.normal, size)

    def _draw(self, sample, size) -> torch.Tensor:
        if self._draw_keys is None:
            raise RuntimeError(
                f"{self.name}: uniform() and normal() draw from the episode seeds and are "
                "only available inside _reset_idx"
            )
        size = (size,) if isinstance(size, int) else tuple(size)
        if not size or size[0] != len(self._draw_keys):
            raise ValueError(
                f"{self.name}: sample size {size} must start with the number of envs being "
                f"reset ({len(self._draw_keys)})"
            )
        count = math.prod(size[1:])
        values = sample(self._draw_keys, self._draw_count, count)
        self._draw_count += count * (2 if sample is rng.normal else 1)
        return values.reshape(size)


# substreams of an episode seed
_RESET_STREAM = 0x5245534554  # initial state
_OBS_NOISE_STREAM = 0x4F4253  # observation noise
_ACTION_NOISE_STREAM = 0x414354  # action noise


def check_action(
    action, num_envs: int, action_dim: int, name: str, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The batch of actions as float64 on `device`, clipped to [-1, 1]; a clear error
    naming `name` for anything that is not a finite float tensor `[num_envs, action_dim]`
    (numpy arrays are accepted). Shared by every env that speaks the protocol."""
    expected = (num_envs, action_dim)
    if isinstance(action, np.ndarray):
        action = torch.from_numpy(action)
    if not isinstance(action, torch.Tensor):
        raise ValueError(
            f"{name}: action must be a torch.Tensor of shape {expected}, "
            f"got {type(action).__name__}"
        )
    if tuple(action.shape) != expected:
        raise ValueError(
            f"{name}: action has shape {tuple(action.shape)}, expected "
            f"{expected} (num_envs, action_dim)"
        )
    if not action.dtype.is_floating_point:
        raise ValueError(
            f"{name}: action dtype is {action.dtype}, expected a floating point "
            f"tensor (float32) of shape {expected}"
        )
    action = action.detach().to(device, torch.float64)
    finite = torch.isfinite(action).all(-1)
    if not finite.all():
        rows = (~finite).nonzero().squeeze(-1)[:8].tolist()
        raise ValueError(
            f"{name}: action contains NaN or inf in env rows {rows} "
            f"(expected finite values in [-1, 1], shape {expected})"
        )
    return action.clamp(-1.0, 1.0)


def check_reset_rows(env_ids, seeds, num_envs: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(env ids, seeds) of `reset_envs` as flat int64 CPU tensors, or a ValueError
    naming `name`: one integer seed per id, ids in [0, num_envs). Shared by every
    env that speaks the protocol."""
    ids = torch.as_tensor(env_ids).cpu().long().reshape(-1)
    seeds = rng.as_keys(seeds).cpu().reshape(-1)
    if len(seeds) != len(ids):
        raise ValueError(f"{name}: {len(seeds)} seeds for {len(ids)} env ids")
    if len(ids) and (ids.min() < 0 or ids.max() >= num_envs):
        raise ValueError(f"{name}: env ids must lie in [0, {num_envs})")
    return ids, seeds


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-row bool mask `[N]` shaped to broadcast over `like` `[N, ...]`."""
    return mask.reshape(-1, *[1] * (like.dim() - 1))


def _check_cfg(cfg: EnvCfg) -> None:
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r}; valid backends: {', '.join(BACKENDS)}")
    for name in ("num_envs", "substeps", "action_repeat", "episode_length"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if cfg.episode_length % cfg.action_repeat:
        raise ValueError(
            f"episode_length ({cfg.episode_length}) must be a multiple of action_repeat "
            f"({cfg.action_repeat}) so that every episode has whole agent steps"
        )
    if not isinstance(cfg.seed, int):
        raise ValueError(f"seed must be an integer, got {cfg.seed!r}")
    if cfg.obs not in ("state", "pixels"):
        raise ValueError(f"obs must be 'state' or 'pixels', got {cfg.obs!r}")
    if cfg.obs == "pixels" and cfg.randomization.obs_noise_std:
        raise ValueError("obs_noise_std perturbs state observations; obs='pixels' takes none")
