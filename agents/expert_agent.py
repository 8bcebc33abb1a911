"""The task's scripted expert (`envs.experts`) in the agent interface.

The expert's constants come from the task's MuJoCo model, so the agent's config
holds what rebuilds that model, a dataset's `env_args` (as `agents.jobs.collect.env_args`
writes them), instead of weights: loading the checkpoint rebuilds a one-row env
with `envs.make_from_args` and derives the expert again. With `noise` the action is
clamp(expert(obs) + noise_std * noise, -1, 1): white Gaussian exploration around
the expert (collection's `expert+noise` policy uses correlated noise instead).
"""

from __future__ import annotations

from typing import Any

import torch

import envs
from agents.base import Agent
from agents.jobs.collect import CollectCfg, env_args
from envs.experts import make_expert


class ExpertAgent(Agent):
    """Scripted expert; config {"env_args": dict, "noise_std": float}. No parameters."""

    kind = "expert"

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any]):
        if not isinstance(config.get("env_args"), dict):
            raise ValueError("expert agent: config needs env_args (a dataset's env_args dict)")
        noise_std = float(config.get("noise_std", 0.0))
        if noise_std < 0:
            raise ValueError(f"expert agent: noise_std must be >= 0, got {noise_std}")
        super().__init__(obs_dim, action_dim, {**config, "noise_std": noise_std})
        env = envs.make_from_args(config["env_args"], 1)
        try:
            if (env.observation_dim, env.action_dim) != (obs_dim, action_dim):
                raise ValueError(
                    f"expert agent: task {env.name} has observation/action dims "
                    f"({env.observation_dim}, {env.action_dim}), not ({obs_dim}, {action_dim})"
                )
            self.expert = make_expert(env)  # holds its constants, not the env
        finally:
            env.close()
        self.noise_std = noise_std

    @classmethod
    def for_env(cls, env, noise_std: float = 0.3) -> ExpertAgent:
        """The expert of a live real env (built by `envs.make`)."""
        args = env_args(CollectCfg(task=env.name, backend=env.cfg.backend), env)
        return cls(env.observation_dim, env.action_dim, {"env_args": args, "noise_std": noise_std})

    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        obs = self.check_obs(obs)
        action = self.expert(obs)
        if noise is not None:
            action = action + self.noise_std * self.check_noise(noise, action)
        return action.clamp(-1.0, 1.0)
