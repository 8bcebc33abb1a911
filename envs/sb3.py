"""Stable-Baselines3 `VecEnv` over any batched env (real or imagined).

SB3's contract: numpy observations, `dones = terminated | truncated`, the
observation returned for a done row is the first of the next episode and the
true last one is in `infos[i]["terminal_observation"]`; `TimeLimit.truncated`
tells bootstrapping algorithms that the episode was cut, not ended. Finished
episodes also carry Monitor's `infos[i]["episode"] = {"r", "l", "t"}` (and, for
tasks with a goal, `infos[i]["is_success"]`), so SB3
logs `rollout/ep_rew_mean` without a Monitor wrapper around each env.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from envs.base import BatchedEnv


class Sb3VecEnv(VecEnv):
    """The batched env as an SB3 VecEnv; all rows live in one process."""

    def __init__(self, env: BatchedEnv):
        self.env = env
        super().__init__(env.num_envs, env.observation_space, env.action_space)
        self._actions: torch.Tensor | None = None
        self._t0 = time.perf_counter()

    def reset(self) -> np.ndarray:
        seed = self._seeds[0]  # one generator drives every row
        obs = self.env.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        return obs.cpu().numpy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = torch.as_tensor(np.asarray(actions, dtype=np.float32))

    def step_wait(self):
        obs, reward, terminated, truncated, info = self.env.step(self._actions)
        done = (terminated | truncated).cpu().numpy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        rows = np.flatnonzero(done)
        if len(rows):
            final = info["final_obs"].cpu().numpy()
            term = terminated.cpu().numpy()
            ret = info["episode_return"].cpu().numpy()
            length = info["episode_length"].cpu().numpy() // self.env.cfg.action_repeat
            elapsed = round(time.perf_counter() - self._t0, 6)
            for i in rows:
                infos[i] = {
                    "terminal_observation": final[i],
                    "TimeLimit.truncated": not term[i],
                    "episode": {"r": float(ret[i]), "l": int(length[i]), "t": elapsed},
                }
                if "success" in info:  # SB3 logs the mean as rollout/success_rate
                    infos[i]["is_success"] = bool(info["success"][i])
        return obs.cpu().numpy(), reward.cpu().numpy(), done, infos

    def close(self) -> None:
        self.env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return list(self.env.render().cpu().numpy())

    # Every row is the same env object: attributes and methods are the batched env's.
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.env, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *args, indices: VecEnvIndices = None, **kwargs):
        method = getattr(self.env, method_name)
        return [method(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
