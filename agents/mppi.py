"""MPPI: model predictive path integral control over a world model.

Williams et al. 2017, in the form TD-MPC (Hansen et al. 2022) and TD-MPC2 use:
a Gaussian over action sequences `N(mean, std^2)`, `[H, A]` per env, refitted
for a few iterations to the best of `samples` sequences drawn from it, each
scored by rolling the world model's mean prediction out from the env's state:

    G = sum_{t<H} gamma^t c_{<t} r_t + gamma^H c_{<H} V(o_H),   c_{<t} = prod_{k<t} cont_k

(`cont_k` the model's continuation probability after step k; V a learned
terminal value, else 0). V is a value agent's `value(o_H)` of the predicted
observation if one is given; else, for a world model that carries its own value
and policy prior (`plans`, the `tdmpc2` model), the model's `value(z_H)` of its
state (TD-MPC2: Q(z_H, a ~ pi(z_H)), the mean of two random Q-functions), unless
`model_value` is off. Over such a model `policy_samples` of the samples are not
drawn from the Gaussian but are trajectories of its policy prior, rolled out once
per agent step from the env's state and scored again in every iteration (TD-MPC2's
24 of 512). TD-MPC2's own settings are `TDMPC2_PLANNER`. The `elites` highest
returns G_k refit the Gaussian with exponential weights

    w_k = softmax_k(temperature * G_k)          (TD-MPC's convention: larger is greedier;
    mean = sum_k w_k a_k                          Williams' lambda is 1 / temperature)
    std = clamp(sqrt(sum_k w_k (a_k - mean)^2), min_std, max_std)

and the agent acts with the first step of the final mean (plus the final std
times the caller's noise when exploring). The first sample of every row is the
current mean itself, so an iteration always scores the plan it refines. A warm
start begins the next step's search from the last mean shifted by one step
(the new last step 0); `reset(env_ids)` drops it for new episodes. All N envs
plan as one batch of N * samples model rows, and sampling draws from a
generator seeded by the config, so planning is reproducible.

The agent's config holds the world model's checkpoint (and a value agent's, if
any), so an agent checkpoint alone plans. `act_latent` acts on the model's own
states instead of observations: in the imagined env of a model that predicts no
observations, whose observations are its latent states.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch

import world_models  # noqa: F401  (registers the world model kinds)
from agents import base
from agents.base import Agent
from world_models.base import KINDS, MODEL_KEYS, WorldModel
from world_models.base import from_checkpoint as wm_from_checkpoint

_DIVERGED = -1e9  # the return a non-finite rollout counts as

TDMPC2_PLANNER: dict[str, Any] = {
    "horizon": 3,
    "samples": 512,
    "elites": 64,
    "policy_samples": 24,
    "iterations": 6,
    "temperature": 0.5,
    "min_std": 0.05,
    "max_std": 2.0,
}
"""TD-MPC2's planner (github.com/nicklashansen/tdmpc2, `config.yaml`), as `MppiCfg`
fields."""


@dataclass
class MppiCfg:
    """Settings of the MPPI planner."""

    horizon: int = 15
    """Planning horizon H [agent steps]."""
    samples: int = 256
    """Action sequences drawn per env and iteration."""
    iterations: int = 4
    """Refits of the Gaussian per agent step."""
    elites: int = 32
    """Highest-return sequences that refit the Gaussian (top-k, as in TD-MPC)."""
    temperature: float = 0.5
    """Weights of the elites: softmax(temperature * return); larger is greedier."""
    min_std: float = 0.05
    """Lower bound of the sampling std (actions in [-1, 1])."""
    max_std: float = 1.0
    """Upper bound, and the std of the first iteration."""
    gamma: float = 0.99
    """Discount per step."""
    warm_start: bool = True
    """Start each step from the previous mean shifted by one step."""
    policy_samples: int = 0
    """Of the samples, trajectories of the world model's own policy prior (a model
    that `plans`; TD-MPC2: 24 of 512)."""
    model_value: bool = True
    """Without a value agent, bootstrap with the world model's own value at the horizon
    (a model that `plans`; its discount must equal gamma)."""
    seed: int = 0
    """Seed of the sampling generator."""

    def check(self) -> None:
        if self.horizon < 1 or self.samples < 1 or self.iterations < 1:
            raise ValueError(
                f"mppi: horizon, samples and iterations must be >= 1, got "
                f"{self.horizon}, {self.samples}, {self.iterations}"
            )
        if not 0 <= self.policy_samples < self.samples:
            raise ValueError(
                f"mppi: policy_samples must lie in [0, samples={self.samples}), got "
                f"{self.policy_samples}"
            )
        if not 1 <= self.elites <= self.samples:
            raise ValueError(
                f"mppi: elites must lie in [1, samples={self.samples}], got {self.elites}"
            )
        if not 0.0 < self.min_std <= self.max_std:
            raise ValueError(
                f"mppi: need 0 < min_std <= max_std, got {self.min_std}, {self.max_std}"
            )
        if self.temperature <= 0.0:
            raise ValueError(f"mppi: temperature must be > 0, got {self.temperature}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"mppi: gamma must lie in (0, 1], got {self.gamma}")


class Plan(NamedTuple):
    """The final Gaussian of a planning step, `[N, H, A]` each."""

    mean: torch.Tensor
    std: torch.Tensor


class MppiAgent(Agent):
    """MPPI over the world model in `config["world_model"]` (a checkpoint dict),
    with the terminal value of the agent in `config["value"]` (a checkpoint dict
    of an agent with `value(obs) -> [B]`, or None)."""

    kind = "mppi"

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any]):
        config = dict(config)
        if not isinstance(config.get("world_model"), dict):
            raise ValueError(
                "mppi: config['world_model'] must be a world model checkpoint "
                "dict (WorldModel.checkpoint())"
            )
        settings = {k: v for k, v in config.items() if k not in ("world_model", "value")}
        valid = {f.name for f in fields(MppiCfg)}
        unknown = sorted(set(settings) - valid)
        if unknown:
            raise ValueError(f"mppi: unknown settings {unknown}; valid: {sorted(valid)}")
        cfg = MppiCfg(**settings)
        cfg.check()
        wm_ckpt = {k: v for k, v in config["world_model"].items() if k in MODEL_KEYS}
        if wm_ckpt.get("kind") not in KINDS:
            raise ValueError(
                f"mppi: unknown world model kind {wm_ckpt.get('kind')!r}; known: {sorted(KINDS)}"
            )
        world_model = wm_from_checkpoint(wm_ckpt, "mppi world model")
        if (world_model.obs_dim, world_model.action_dim) != (obs_dim, action_dim):
            dims = (world_model.obs_dim, world_model.action_dim)
            raise ValueError(
                f"mppi: the world model has (obs, action) dims {dims}, the agent "
                f"{(obs_dim, action_dim)}"
            )
        if world_model.sees_pixels:
            raise ValueError(
                "mppi: plans from state vectors; a world model that sees frames cannot encode them"
            )
        value_agent = None
        if config.get("value") is not None and not world_model.predicts_obs:
            raise ValueError(
                f"mppi: the {world_model.kind} model predicts no observations, so a value "
                "agent of observations cannot score its states; it plans with its own value"
            )
        if cfg.policy_samples and not world_model.plans:
            raise ValueError(
                f"mppi: policy_samples {cfg.policy_samples} need a world model with a policy "
                f"prior; the {world_model.kind} model has none"
            )
        model_value = config.get("value") is None and cfg.model_value and world_model.plans
        if model_value and world_model.config.get("discount", cfg.gamma) != cfg.gamma:
            raise ValueError(
                f"mppi: gamma {cfg.gamma} differs from the discount "
                f"{world_model.config['discount']} that the {world_model.kind} model's value "
                "was trained with"
            )
        if config.get("value") is not None:
            value_agent = base.from_checkpoint(config["value"], "mppi value agent")
            if not callable(getattr(value_agent, "value", None)):
                raise ValueError(
                    f"mppi: the value agent ({value_agent.kind}) has no value(obs) method"
                )
            if value_agent.obs_dim != obs_dim:
                raise ValueError(
                    f"mppi: the value agent takes {value_agent.obs_dim}-dim "
                    f"observations, the agent {obs_dim}"
                )
        super().__init__(
            obs_dim,
            action_dim,
            {**asdict(cfg), "world_model": wm_ckpt, "value": config.get("value")},
        )
        self.cfg = cfg
        self.world_model: WorldModel = world_model
        self.value_agent: Agent | None = value_agent
        self.model_value = model_value
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self._prev_mean: torch.Tensor | None = None  # warm start `[N, H, A]`, zeros: cold
        self._refresh_config()

    @classmethod
    def build(
        cls, world_model: WorldModel, value_agent: Agent | None = None, **settings: Any
    ) -> MppiAgent:
        """A planner over (a copy of) `world_model`, in eval mode; `settings` are
        `MppiCfg` fields."""
        config = {
            **settings,
            "world_model": world_model.checkpoint(),
            "value": None if value_agent is None else value_agent.checkpoint(),
        }
        return cls(world_model.obs_dim, world_model.action_dim, config).eval()

    def _refresh_config(self) -> None:
        """Point the config's weights at the live modules: no foreign references, and
        `torch.save` writes each storage once although config and state_dict share it."""
        self.config["world_model"] = {
            **self.config["world_model"],
            "state_dict": self.world_model.state_dict(),
        }
        if self.value_agent is not None:
            self.config["value"] = {
                **self.config["value"],
                "state_dict": self.value_agent.state_dict(),
            }

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        self._refresh_config()
        return super().checkpoint(**extra)

    # ------------------------------------------------------------ planning
    @torch.no_grad()
    def returns(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Model returns G `[N, S]` of action sequences `[N, S, H', A]` from `obs` `[N, obs_dim]`
        (any length H'; the terminal value after the last step)."""
        obs = self.check_obs(obs)
        if (
            actions.dim() != 4
            or actions.shape[0] != len(obs)
            or actions.shape[3] != self.action_dim
        ):
            raise ValueError(
                f"mppi: action sequences have shape {tuple(actions.shape)}, expected "
                f"({len(obs)}, S, H, {self.action_dim})"
            )
        n, s = actions.shape[:2]
        state = self.world_model.encode(obs).repeat_interleave(s, 0)
        return self._rollout(state, actions.flatten(0, 1)).view(n, s)

    def _rollout(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """G `[B]` of sequences `[B, H, A]` from model states `[B, ...]` (mean prediction)."""
        ret = torch.zeros(len(actions), device=actions.device)
        alive = torch.ones_like(ret)  # c_{<t}
        discount = 1.0  # gamma^t
        obs = None
        for t in range(actions.shape[1]):
            step = self.world_model.next(state, actions[:, t], None)
            ret = ret + discount * alive * step.reward
            alive = alive * step.cont
            discount *= self.cfg.gamma
            state, obs = step.state, step.obs
        if self.value_agent is not None and obs is not None:
            ret = ret + discount * alive * self.value_agent.value(obs).reshape(-1)
        elif self.model_value:
            ret = ret + discount * alive * self.world_model.value(state, self.generator)
        # a diverged rollout is the worst, never an elite ahead of a finite one
        return torch.nan_to_num(ret, nan=_DIVERGED, posinf=_DIVERGED, neginf=_DIVERGED)

    @torch.no_grad()
    def plan(self, obs: torch.Tensor) -> Plan:
        """The refitted Gaussian over action sequences for observations `[N, obs_dim]`,
        started from the warm start (if any, and of the same N)."""
        obs = self.check_obs(obs)
        return self.plan_from(self.world_model.encode(obs))

    @torch.no_grad()
    def plan_from(self, start: torch.Tensor) -> Plan:
        """`plan` from the world model's states `[N, ...]` of the envs."""
        cfg, device = self.cfg, start.device
        n, s, k, h, a = len(start), cfg.samples, cfg.elites, cfg.horizon, self.action_dim
        p = cfg.policy_samples
        mean = torch.zeros(n, h, a, device=device)
        if cfg.warm_start and self._prev_mean is not None and len(self._prev_mean) == n:
            mean[:, :-1] = self._prev_mean[:, 1:].to(device)
        std = torch.full_like(mean, cfg.max_std)
        prior = self._prior_trajectories(start) if p else None  # [N, P, H, A]
        state = start.repeat_interleave(s, 0)  # row i * s + j: env i
        rows = torch.arange(n, device=device)[:, None]
        for _ in range(cfg.iterations):
            eps = torch.randn(n, s - p, h, a, generator=self.generator).to(device)
            eps[:, 0] = 0.0  # the first Gaussian sample: the current mean
            actions = (mean[:, None] + std[:, None] * eps).clamp(-1.0, 1.0)  # [N, S - P, H, A]
            if prior is not None:
                actions = torch.cat((prior, actions), 1)
            ret = self._rollout(state, actions.flatten(0, 1)).view(n, s)
            elite_ret, idx = ret.topk(k, dim=1)  # [N, K]
            elite = actions[rows, idx]  # [N, K, H, A]
            w = torch.softmax(cfg.temperature * elite_ret, dim=1)[:, :, None, None]
            mean = (w * elite).sum(1)
            std = (w * (elite - mean[:, None]) ** 2).sum(1).sqrt().clamp(cfg.min_std, cfg.max_std)
        return Plan(mean, std)

    def _prior_trajectories(self, start: torch.Tensor) -> torch.Tensor:
        """`policy_samples` action sequences `[N, P, H, A]` per env: the model's policy
        prior sampled along its own rollout from the env's state."""
        cfg, wm = self.cfg, self.world_model
        state = start.repeat_interleave(cfg.policy_samples, 0)
        steps = []
        for t in range(cfg.horizon):
            steps.append(wm.policy(state, self.generator))
            if t + 1 < cfg.horizon:
                state = wm.next(state, steps[-1], None).state
        return torch.stack(steps, 1).view(len(start), cfg.policy_samples, cfg.horizon, -1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """First step of the planned mean; with `noise` `[N, A]`, plus the planned std
        times it (clamped to [-1, 1])."""
        obs = self.check_obs(obs)
        return self._act(self.world_model.encode(obs), noise)

    @torch.no_grad()
    def act_latent(self, state: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """`act` on the world model's own states `[N, ...]` (the observations of an
        imagined env over a model that predicts no observations)."""
        state = torch.as_tensor(state).float()
        width = self.world_model.state_dim
        if state.dim() != 2 or state.shape[1] != width:
            raise ValueError(
                f"mppi: model states have shape {tuple(state.shape)}, the "
                f"{self.world_model.kind} model's are (N, {width})"
            )
        return self._act(state, noise)

    def _act(self, start: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is not None:  # before planning, which moves the warm start
            noise = self.check_noise(noise, start.new_empty(len(start), self.action_dim))
        mean, std = self.plan_from(start)
        self._prev_mean = mean  # a new N replaces the buffer whole
        action = mean[:, 0]
        if noise is not None:
            action = (action + std[:, 0] * noise.to(action)).clamp(-1.0, 1.0)
        return action

    def reset(self, env_ids: torch.Tensor) -> None:
        """Drop the warm start of rows `env_ids` (a zero mean is a cold start)."""
        if self._prev_mean is not None:
            self._prev_mean[torch.as_tensor(env_ids, device=self._prev_mean.device).long()] = 0.0
