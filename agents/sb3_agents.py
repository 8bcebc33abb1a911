"""Stable-Baselines3 SAC and PPO as agents, and a learner that trains them on any
batched env of our protocol (a real task or an `ImaginedEnv`) through `Sb3VecEnv`.

An agent holds the SB3 *policy module* (`SACPolicy`: actor, critics and target
critics; `ActorCriticPolicy`: actor and value function) built from
(obs_dim, action_dim, config) alone, so a weights-only checkpoint rebuilds it.
Spaces are fixed by the protocol: observations Box(-inf, inf, (obs_dim,)),
actions Box(-1, 1, (action_dim,)), so SB3's action (un)scaling is the identity.

Actions, with mu(s) and sigma(s) the policy's Gaussian and eps the caller's
standard normal noise (SB3's own sampling is the same reparameterisation):

    SAC: deterministic tanh(mu),            exploring tanh(mu + sigma eps)
    PPO: deterministic clip(mu, -1, 1),     exploring clip(mu + sigma eps, -1, 1)

SAC's sigma depends on the state (log sigma clamped to [-20, 2] by SB3); PPO's is a
learned state-independent vector. gSDE is not offered: its noise is not the
caller's eps.

`Sb3Learner` owns an SB3 algorithm whose policy has the agent's architecture: it
loads the agent's weights, trains (`learn`, continuing the step count, replay
buffer and optimizers across calls) and copies the weights back into the agent.
`set_env` swaps in another env with the same dims and number of rows, e.g. a fresh
`ImaginedEnv` each closed-loop iteration; a SAC replay buffer keeps what the
earlier envs produced.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HumanOutputFormat, Logger
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.sac.policies import SACPolicy
from torch import nn

from agents.base import Agent
from envs.sb3 import Sb3VecEnv

__all__ = [
    "PpoAgent",
    "PpoCfg",
    "SacAgent",
    "SacCfg",
    "Sb3Agent",
    "Sb3Cfg",
    "Sb3Learner",
    "make_agent",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}


class Sb3Agent(Agent):
    """An SB3 policy module as an agent; subclasses set `kind`, `defaults` and `act`."""

    defaults: dict[str, Any]
    policy_class: type[nn.Module]

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any] | None = None):
        config = {**self.defaults, **(config or {})}
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"{self.kind} agent: unknown config key(s) {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(self.defaults))}"
            )
        if config["activation"] not in ACTIVATIONS:
            raise ValueError(
                f"{self.kind} agent: unknown activation {config['activation']!r}; "
                f"valid: {', '.join(ACTIVATIONS)}"
            )
        arch = config["net_arch"]  # plain lists: the config goes into weights-only checkpoints
        config["net_arch"] = (
            {k: [int(u) for u in v] for k, v in arch.items()}
            if isinstance(arch, dict)
            else [int(u) for u in arch]
        )
        super().__init__(obs_dim, action_dim, config)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        # the optimizers SB3 builds inside the policy are unused here: the learner's
        # algorithm has its own policy (and optimizers) and copies weights
        self.policy = self.policy_class(
            self.observation_space, self.action_space, lambda _: 0.0, **self.policy_kwargs()
        )

    def policy_kwargs(self) -> dict[str, Any]:
        """SB3 `policy_kwargs` of this architecture (what the learner's algorithm builds)."""
        kwargs = {k: v for k, v in self.config.items() if k != "activation"}
        return {**kwargs, "activation_fn": ACTIVATIONS[self.config["activation"]]}

    def _obs(self, obs: torch.Tensor) -> torch.Tensor:
        return self.check_obs(obs).to(next(self.parameters()).device)


class SacAgent(Sb3Agent):
    """SB3 SAC policy: tanh-squashed Gaussian actor, twin critics and their targets."""

    kind = "sac"
    policy_class = SACPolicy
    defaults: dict[str, Any] = {
        "net_arch": [256, 256],  # hidden units of the actor and each critic (or {pi, qf})
        "activation": "relu",
        "n_critics": 2,  # clipped double Q
    }

    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x = self._obs(obs)
        mean, log_std, _ = self.policy.actor.get_action_dist_params(x)
        if noise is not None:  # SquashedDiagGaussian.sample: tanh(mu + sigma eps)
            mean = mean + log_std.exp() * self.check_noise(noise, mean)
        return torch.tanh(mean).to(torch.as_tensor(obs).device)


class PpoAgent(Sb3Agent):
    """SB3 PPO actor-critic: Gaussian actor with a state-independent std, value net."""

    kind = "ppo"
    policy_class = ActorCriticPolicy
    defaults: dict[str, Any] = {
        "net_arch": [64, 64],  # hidden units of actor and value nets (or {pi, vf})
        "activation": "tanh",
        "log_std_init": 0.0,  # initial log sigma of the actions
        "ortho_init": True,  # orthogonal initialisation (PPO's usual choice)
        "obs_mean": None,  # fixed input standardisation of actor and value net (or None)
        "obs_std": None,
    }

    def policy_kwargs(self) -> dict[str, Any]:
        kwargs = super().policy_kwargs()
        mean, std = kwargs.pop("obs_mean"), kwargs.pop("obs_std")
        if mean is not None:
            kwargs["features_extractor_class"] = Standardize
            kwargs["features_extractor_kwargs"] = {"mean": mean, "std": std}
        return kwargs

    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x = self._obs(obs)
        dist = self.policy.get_distribution(x).distribution  # Normal(mu, sigma)
        action = dist.mean
        if noise is not None:
            action = action + dist.stddev * self.check_noise(noise, action)
        # SB3 clips (rather than squashes) PPO actions to the action space before stepping
        return action.clamp(-1.0, 1.0).to(torch.as_tensor(obs).device)


class Standardize(BaseFeaturesExtractor):
    """Features (x - mean) / std with a fixed mean and std (those of the data a policy
    was first trained on), shared by PPO's actor and value net: the value net of a
    policy cloned on standardised inputs sees them on the same scale."""

    def __init__(self, observation_space: gym.spaces.Box, mean: list[float], std: list[float]):
        super().__init__(observation_space, int(np.prod(observation_space.shape)))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs.flatten(1) - self.mean) / self.std


# ------------------------------------------------------------------ learner
@dataclass
class SacCfg:
    """SAC settings (SB3's defaults)."""

    net_arch: tuple[int, ...] = (256, 256)
    """Hidden units of the actor and of each critic (for a new agent)."""
    activation: str = "relu"
    """Activation of the hidden layers (for a new agent): relu, tanh, elu, silu, gelu."""
    n_critics: int = 2
    """Critics (clipped double Q with 2; for a new agent)."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity [transitions]."""
    learning_starts: int = 100
    """Transitions collected with uniform random actions before learning starts."""
    batch_size: int = 256
    """Transitions per gradient step."""
    tau: float = 0.005
    """Polyak coefficient of the target critics."""
    train_freq: int = 1
    """Steps of the batched env (num_envs transitions each) between updates."""
    gradient_steps: int = 1
    """Gradient steps per update (-1: as many as transitions collected)."""
    ent_coef: str = "auto"
    """Entropy coefficient: auto (learned, from 1), auto_<x> (learned, from x) or a number."""


@dataclass
class PpoCfg:
    """PPO settings (SB3's defaults)."""

    net_arch: tuple[int, ...] = (64, 64)
    """Hidden units of the actor and of the value net (for a new agent)."""
    activation: str = "tanh"
    """Activation of the hidden layers (for a new agent): relu, tanh, elu, silu, gelu."""
    log_std_init: float = 0.0
    """Initial log std of the actions (for a new agent)."""
    ortho_init: bool = True
    """Orthogonal initialisation (for a new agent)."""
    n_steps: int = 2048
    """Steps per env per rollout (a rollout is n_steps * num_envs transitions)."""
    batch_size: int = 64
    """Transitions per minibatch."""
    n_epochs: int = 10
    """Passes over each rollout."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """Clipping of the probability ratio."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Largest gradient norm."""


@dataclass
class Sb3Cfg:
    """Train a SAC or PPO agent with Stable-Baselines3 on a batched env."""

    algo: str = "sac"
    """Algorithm: sac or ppo (must match the agent's kind)."""
    learning_rate: float = 3e-4
    """Adam learning rate of every network."""
    gamma: float = 0.99
    """Discount factor."""
    seed: int = 0
    """Seed of SB3 (torch, numpy, random and the env's resets)."""
    device: str = "cpu"
    """Torch device of the learner's networks."""
    tensorboard_log: Path | None = None
    """TensorBoard directory (None: no TensorBoard)."""
    tb_log_name: str = "sb3"
    """Run name inside tensorboard_log; every learn() of a learner continues it."""
    verbose: int = 0
    """SB3 verbosity: 0 silent, 1 training summaries."""
    sac: SacCfg = field(default_factory=SacCfg)
    """Settings of --algo sac."""
    ppo: PpoCfg = field(default_factory=PpoCfg)
    """Settings of --algo ppo."""


ALGOS = {"sac": (SacAgent, SAC), "ppo": (PpoAgent, PPO)}
_ARCH_FIELDS = {
    "sac": ("net_arch", "activation", "n_critics"),
    "ppo": ("net_arch", "activation", "log_std_init", "ortho_init"),
}


def make_agent(cfg: Sb3Cfg, obs_dim: int, action_dim: int) -> Sb3Agent:
    """A new (untrained) agent of `cfg.algo` with the architecture of `cfg`."""
    if cfg.algo not in ALGOS:
        raise ValueError(f"unknown algo {cfg.algo!r}; valid: {', '.join(ALGOS)}")
    settings = getattr(cfg, cfg.algo)
    config = {k: getattr(settings, k) for k in _ARCH_FIELDS[cfg.algo]}
    return ALGOS[cfg.algo][0](obs_dim, action_dim, config)


def _ent_coef(value: str) -> str | float:
    if value == "auto" or value.startswith("auto_"):
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"ent_coef must be auto, auto_<x> or a number, got {value!r}") from None


class StepBar(BaseCallback):
    """Advances a tqdm bar by the transitions an SB3 algorithm collects."""

    def __init__(self, bar):
        super().__init__()
        self.bar, self._seen = bar, 0

    def _on_training_start(self) -> None:
        self._seen = self.model.num_timesteps

    def _on_step(self) -> bool:
        self.bar.update(self.model.num_timesteps - self._seen)
        self._seen = self.model.num_timesteps
        return True


class Sb3Learner:
    """Trains `agent` with SB3 on the batched env `env`; `agent=None` builds a new
    one from `cfg` (`make_agent`). The agent's config, not `cfg`, fixes the
    architecture of a given agent."""

    def __init__(self, agent: Sb3Agent | None, env, cfg: Sb3Cfg):
        if cfg.algo not in ALGOS:
            raise ValueError(f"unknown algo {cfg.algo!r}; valid: {', '.join(ALGOS)}")
        if agent is None:
            agent = make_agent(cfg, env.observation_dim, env.action_dim)
        if agent.kind != cfg.algo:
            raise ValueError(f"Sb3Cfg.algo is {cfg.algo!r} but the agent is a {agent.kind!r} agent")
        self.agent, self.cfg = agent, cfg
        self._check_env(env)
        common = dict(
            learning_rate=cfg.learning_rate,
            gamma=cfg.gamma,
            seed=cfg.seed,
            device=cfg.device,
            verbose=cfg.verbose,
            policy_kwargs=agent.policy_kwargs(),
            tensorboard_log=None if cfg.tensorboard_log is None else str(cfg.tensorboard_log),
        )
        vec = Sb3VecEnv(env)
        if cfg.algo == "sac":
            s = cfg.sac
            self.model = SAC(
                SACPolicy,
                vec,
                buffer_size=s.buffer_size,
                learning_starts=s.learning_starts,
                batch_size=s.batch_size,
                tau=s.tau,
                train_freq=s.train_freq,
                gradient_steps=s.gradient_steps,
                ent_coef=_ent_coef(s.ent_coef),
                **common,
            )
        else:
            p = cfg.ppo
            self.model = PPO(
                ActorCriticPolicy,
                vec,
                n_steps=p.n_steps,
                batch_size=p.batch_size,
                n_epochs=p.n_epochs,
                gae_lambda=p.gae_lambda,
                clip_range=p.clip_range,
                ent_coef=p.ent_coef,
                vf_coef=p.vf_coef,
                max_grad_norm=p.max_grad_norm,
                **common,
            )
        if cfg.tensorboard_log is None:  # SB3 would make an empty temp dir per learn()
            outputs = [HumanOutputFormat(sys.stdout)] if cfg.verbose else []
            self.model.set_logger(Logger(folder=None, output_formats=outputs))
        # in place: the algorithm's aliases (actor, critic) and optimizers stay valid
        self.model.policy.load_state_dict(agent.policy.state_dict())

    @property
    def num_timesteps(self) -> int:
        """Transitions collected so far, over every learn() and env."""
        return self.model.num_timesteps

    def learn(self, steps: int, callback: BaseCallback | None = None) -> Sb3Agent:
        """Train for `steps` more transitions (all env rows together; PPO rounds up to
        whole rollouts) and return the agent, holding the trained weights."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.model.learn(
            steps, callback=callback, reset_num_timesteps=False, tb_log_name=self.cfg.tb_log_name
        )
        self.agent.policy.load_state_dict(self.model.policy.state_dict())
        return self.agent

    def set_env(self, env) -> None:
        """Continue on `env` (same dims and rows); its first learn() starts with a reset."""
        self._check_env(env)
        self.model.set_env(Sb3VecEnv(env))

    def _check_env(self, env) -> None:
        name = getattr(env, "name", type(env).__name__)
        dims = (env.observation_dim, env.action_dim)
        if dims != (self.agent.obs_dim, self.agent.action_dim):
            raise ValueError(
                f"{name}: observation/action dims {dims} differ from the agent's "
                f"({self.agent.obs_dim}, {self.agent.action_dim})"
            )
        model = getattr(self, "model", None)
        if model is not None and env.num_envs != model.n_envs:
            raise ValueError(
                f"{name}: {env.num_envs} envs, but the learner's buffers hold "
                f"{model.n_envs} (set_env needs the same num_envs)"
            )
