"""Gymnasium views of the batched env: a single `gymnasium.Env` and a `VectorEnv`.

- `GymEnv` is one environment (a batch of one) with Gymnasium's episode
  semantics: no autoreset, the true last observation at the end, `reset()` to
  start again. It passes `gymnasium.utils.env_checker.check_env`.
- `GymVectorEnv` is the batched env itself behind numpy arrays, with its
  same-step autoreset declared in `metadata["autoreset_mode"]` and reported the
  way `gymnasium.vector.SyncVectorEnv` reports it (`final_obs` / `_final_obs`,
  `final_info` / `_final_info`).

`envs.registry.register` registers the Gymnasium id of every task that has one, so that
`gymnasium.make("wam/CartpoleSwingup-v0")` and
`gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")` work.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.base import BatchedEnv
from envs.registry import make


def _info_numpy(info: dict[str, Any], row: int | slice) -> dict[str, Any]:
    """The entries of a batched info dict for one row (or rows), as numpy."""
    return {
        k: v[row].cpu().numpy() if torch.is_tensor(v) else v
        for k, v in info.items()
        if k != "final_obs"
    }


class GymEnv(gym.Env):
    """One environment of a task, Gymnasium style (numpy in and out, no autoreset)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, task: str, render_mode: str | None = None, **cfg: Any):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.batched: BatchedEnv = make(task, num_envs=1, **cfg)
        self.render_mode = render_mode
        self.observation_space = self.batched.observation_space
        self.action_space = self.batched.action_space
        step_s = self.batched.sim.dt * self.batched.cfg.action_repeat
        self.metadata = {**self.metadata, "render_fps": round(1 / step_s)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs = self.batched.reset(seed=seed)
        return obs[0].cpu().numpy(), {}

    def step(self, action):
        action = torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, -1)
        obs, reward, terminated, truncated, info = self.batched.step(action)
        done = bool(terminated[0] or truncated[0])
        # the batched env has already started the next episode: report the one that ended
        last = info["final_obs"] if done else obs
        return (
            last[0].cpu().numpy(),
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            _info_numpy(info, 0),
        )

    def render(self):
        if self.render_mode == "rgb_array":
            return self.batched.render(torch.tensor([0]))[0].cpu().numpy()
        return None

    def close(self):
        self.batched.close()


class GymVectorEnv(VectorEnv):
    """A batched task as a Gymnasium `VectorEnv` with same-step autoreset."""

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, task: str, num_envs: int = 1, render_mode: str | None = None, **cfg: Any):
        self.batched: BatchedEnv = make(task, num_envs=num_envs, **cfg)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space = self.batched.observation_space
        self.single_action_space = self.batched.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        return self.batched.reset(seed=seed).cpu().numpy(), {}

    def step(self, actions):
        actions = torch.as_tensor(np.asarray(actions, dtype=np.float32))
        obs, reward, terminated, truncated, info = self.batched.step(actions)
        done = (terminated | truncated).cpu().numpy()
        infos = _info_numpy(info, slice(None))
        if done.any():
            final = info["final_obs"].cpu().numpy()
            # SyncVectorEnv's layout: an object array of rows, None where not done
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = final[i]
            infos.update(
                final_obs=final_obs,
                _final_obs=done,
                final_info={
                    k: v for k, v in infos.items() if k.startswith("episode") or k == "success"
                },
                _final_info=done,
            )
        return (
            obs.cpu().numpy(),
            reward.cpu().numpy(),
            terminated.cpu().numpy(),
            truncated.cpu().numpy(),
            infos,
        )

    def render(self):
        return tuple(self.batched.render().cpu().numpy())

    def close_extras(self, **kwargs):
        self.batched.close()
