"""Data-collection policies with per-episode randomness.

A policy acts for N envs at once. `reset(env_ids, seeds)` starts episodes; all of
an episode's randomness is drawn from its seed with `sim.rng`, counted by the
episode's step, so an episode's actions do not depend on which env ran it. This
is what makes a resumed collection equal to an uninterrupted one.

- `random`: i.i.d. uniform actions in [-1, 1].
- `noise`: temporally correlated Gaussian noise, an AR(1) process per action
  dimension, x_t = rho x_{t-1} + sqrt(1 - rho^2) sigma eps_t, started from its
  stationary law N(0, sigma^2), so every step has std sigma and neighbouring steps
  correlation rho (rho = exp(-dt / tau) for a correlation time tau).
- `expert`: the task's scripted expert.
- `expert+noise`: the expert plus the AR(1) noise with a per-episode sigma drawn
  uniformly from [0, noise_std]: from near-expert to very noisy episodes, the
  spread of behaviour world models need.
- `AgentPolicy`: any agent (`agents.base.Agent`), deterministic or exploring
  with standard normal noise drawn from the episode's seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sim import rng

_POLICY_STREAM = 0x504F4C  # substream of an episode seed for policy randomness
POLICIES = ("random", "noise", "expert", "expert+noise")


class Policy:
    """A batched policy over N envs; subclasses fill `_act` and, if stateful, `_reset`."""

    def __init__(self, num_envs: int, action_dim: int):
        self.num_envs, self.action_dim = num_envs, action_dim
        self.keys = torch.zeros(num_envs, dtype=torch.int64)  # per-episode random keys
        self.t = torch.zeros(num_envs, dtype=torch.int64)  # step within the episode

    def reset(self, env_ids: torch.Tensor, seeds: torch.Tensor) -> None:
        """Start the episodes with `seeds` in `env_ids`."""
        self.keys[env_ids] = rng.substream(seeds, _POLICY_STREAM)
        self.t[env_ids] = 0
        self._reset(env_ids)

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions `[N, action_dim]` in [-1, 1] for observations `[N, obs_dim]`."""
        action = self._act(obs)
        self.t += 1
        return action.clamp(-1.0, 1.0).float()

    def episode_attrs(self, env: int) -> dict[str, float]:
        """Parameters of env `env`'s current episode worth recording."""
        return {}

    def _reset(self, env_ids: torch.Tensor) -> None:
        pass

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class RandomPolicy(Policy):
    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        d = self.action_dim
        return 2.0 * rng.uniform(self.keys, self.t * d, d) - 1.0


class NoisePolicy(Policy):
    """AR(1) Gaussian noise, added to a base policy's actions (zero if none).

    Args:
        noise_std: sigma, or the upper end of the per-episode sigma range when
            `random_std` is set.
        rho: one-step correlation of the noise.
        base: a function obs -> actions in [-1, 1] (e.g. a scripted expert).
        random_std: draw each episode's sigma uniformly from [0, noise_std].
    """

    def __init__(
        self,
        num_envs: int,
        action_dim: int,
        noise_std: float,
        rho: float,
        base: Callable[[torch.Tensor], torch.Tensor] | None = None,
        random_std: bool = False,
    ):
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"noise correlation rho must lie in [0, 1), got {rho}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        super().__init__(num_envs, action_dim)
        self.noise_std, self.rho, self.base, self.random_std = noise_std, rho, base, random_std
        self.sigma = torch.full((num_envs, 1), float(noise_std), dtype=torch.float64)
        self.x = torch.zeros(num_envs, action_dim, dtype=torch.float64)

    def _reset(self, env_ids: torch.Tensor) -> None:
        keys = self.keys[env_ids]
        if self.random_std:  # counter -1: draws of the steps use 0, 1, ...
            self.sigma[env_ids] = self.noise_std * rng.uniform(keys, -1, 1)
        self.x[env_ids] = 0.0  # the first step draws from the stationary law

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        d = self.action_dim
        eps = rng.normal(self.keys, self.t * 2 * d, d)
        first = (self.t == 0)[:, None]
        innovation = torch.where(first, 1.0, math.sqrt(1.0 - self.rho**2)) * eps
        self.x = torch.where(first, 0.0, self.rho * self.x) + innovation * self.sigma
        base = 0.0 if self.base is None else self.base(obs).to("cpu", torch.float64)
        return (base + self.x).to(obs.device)

    def episode_attrs(self, env: int) -> dict[str, float]:
        return {"policy_noise_std": float(self.sigma[env])}


class ExpertPolicy(Policy):
    def __init__(self, num_envs: int, action_dim: int, expert: Callable):
        super().__init__(num_envs, action_dim)
        self.expert = expert

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.expert(obs)


def make_policy(name: str, env, noise_std: float = 0.3, noise_rho: float = 0.9) -> Policy:
    """The collection policy `name` (one of POLICIES) for `env`."""
    n, d = env.num_envs, env.action_dim
    if name == "random":
        return RandomPolicy(n, d)
    if name == "noise":
        return NoisePolicy(n, d, noise_std, noise_rho)
    if name in ("expert", "expert+noise"):
        from envs.experts import make_expert

        expert = make_expert(env)
        if name == "expert":
            return ExpertPolicy(n, d, expert)
        return NoisePolicy(n, d, noise_std, noise_rho, base=expert, random_std=True)
    raise ValueError(
        f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)} "
        "(or an agent checkpoint, for collect)"
    )


class AgentPolicy(Policy):
    """An agent acting for collection: deterministic, or exploring with its own
    noise (`agent.act(obs, noise)`), the noise drawn from each episode's seed."""

    def __init__(self, num_envs: int, agent, explore: bool = True):
        super().__init__(num_envs, agent.action_dim)
        self.agent, self.explore = agent, explore

    def _reset(self, env_ids: torch.Tensor) -> None:
        self.agent.reset(env_ids)

    def _noise(self, obs: torch.Tensor) -> torch.Tensor | None:
        """This step's exploration noise of each row (None: deterministic)."""
        if not self.explore:
            return None
        d = self.action_dim
        return rng.normal(self.keys, self.t * 2 * d, d).float().to(obs.device)

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.agent.act(obs, self._noise(obs))


class SharedAgentPolicy(AgentPolicy):
    """Two agents sharing one collection: the rows `second_rows` (bool `[N]`) act with
    `second`, the others with `agent`, each exploring as `AgentPolicy` does; every
    episode records which acted (`second_agent`: 1.0 or 0.0)."""

    def __init__(self, num_envs: int, agent, second, second_rows: torch.Tensor):
        super().__init__(num_envs, agent)
        self.second, self.second_rows = second, second_rows.bool()

    def _reset(self, env_ids: torch.Tensor) -> None:
        self.agent.reset(env_ids)
        self.second.reset(env_ids)

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        noise = self._noise(obs)
        first, second = self.agent.act(obs, noise), self.second.act(obs, noise)
        return torch.where(self.second_rows.to(obs.device)[:, None], second, first)

    def episode_attrs(self, env: int) -> dict[str, float]:
        return {"second_agent": float(self.second_rows[env])}
