"""One policy interface for every agent, and checkpoints that say what they hold.

An agent maps a batch of observations to actions, whatever it is inside (a
learned actor, an SB3 policy, a planner over a world model, a behaviour-cloned
network, a scripted expert):

    action = agent.act(obs)              # deterministic: [N, obs_dim] -> [N, act_dim] in [-1, 1]
    action = agent.act(obs, noise)       # exploring: noise ~ N(0, I), [N, act_dim]
    agent.reset(env_ids)                 # new episodes in these rows (stateful agents)
    agent.executed(action)               # the action taken was another (replayed data)
    agents.base.save(agent, path); agent = agents.base.load(path)

The caller draws the exploration noise, so that a collection keyed by episode
seeds (`agents.policies.AgentPolicy`) replays exactly; each agent says what the
noise means (a Gaussian policy's reparameterisation noise, noise added to a
planner's or an expert's action). Checkpoints are plain dicts (`format`,
`kind`, `config`, `dims`, `state_dict`, and whatever the trainer adds) written
atomically and read with `weights_only=True`; `config` holds everything needed
to rebuild the agent (a planner's world model included), so a checkpoint alone
acts.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

import agents
import world_models  # noqa: F401  (registers the world model kinds)
from world_models.base import FORMAT as WM_FORMAT
from world_models.base import KINDS as WM_KINDS
from world_models.base import build, kind_class, payload, read_file, save_atomic

FORMAT = "wam-sandbox/agent"
AGENTS: dict[str, type[Agent]] = {}
"""Every registered agent kind (a subclass of `Agent` that sets `kind` registers itself)."""


def _register(kind: str) -> None:
    """Import the modules of the `agents` package, in turn, until one has registered
    `kind`: an agent kind is one module there, and no list names them."""
    for module in sorted(m.name for m in pkgutil.iter_modules(agents.__path__) if not m.ispkg):
        if kind in AGENTS:
            return
        importlib.import_module(f"agents.{module}")


class Agent(nn.Module, ABC):
    """Base class: subclasses set `kind` and build their modules from (dims, config)."""

    kind: str

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if getattr(cls, "kind", None):
            AGENTS[cls.kind] = cls

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any]):
        super().__init__()
        self.obs_dim, self.action_dim, self.config = obs_dim, action_dim, dict(config)

    @property
    def frame_shape(self) -> tuple[int, int, int] | None:
        """(H, W, 3) of the camera frames an agent that acts on pixels takes as its
        observations (an env made with `obs="pixels"`), else None: state vectors."""
        return None

    @abstractmethod
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Actions `[N, action_dim]` in [-1, 1] for observations `[N, obs_dim]`; with
        `noise` (standard normal, `[N, action_dim]`) the exploring action, without it
        the deterministic one. Never builds a graph."""

    def reset(self, env_ids: torch.Tensor) -> None:  # noqa: B027 - optional
        """Episodes start in rows `env_ids` (planners drop their warm starts)."""

    def executed(self, action: torch.Tensor) -> None:  # noqa: B027 - optional
        """The env took `action` `[N, action_dim]`, not the one `act` returned (replaying
        recorded episodes): agents with a history of their actions record it."""

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        return payload(self, FORMAT, **extra)

    def check_noise(self, noise: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """`noise` on `like`'s device and dtype, or a ValueError if its shape differs."""
        noise = torch.as_tensor(noise)
        if noise.shape != like.shape:
            raise ValueError(
                f"{self.kind} agent: noise has shape {tuple(noise.shape)}, "
                f"expected {tuple(like.shape)}"
            )
        return noise.to(like.device, like.dtype)

    def check_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """`obs` as float32 `[N, obs_dim]`, or a ValueError naming the problem."""
        obs = torch.as_tensor(obs)
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(
                f"{self.kind} agent: observations have shape {tuple(obs.shape)}, "
                f"expected (N, {self.obs_dim})"
            )
        return obs.float()


def save(agent: Agent, path: str | os.PathLike, **extra: Any) -> None:
    """Write `agent`'s checkpoint atomically (temporary file, fsync, rename), sealed
    with its checksum, which `load` checks (`world_models.base.save_atomic`)."""
    save_atomic(agent.checkpoint(**extra), path)


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The file of agent checkpoint `path`: itself, or in a directory its agent.pt (a
    World Action Model's directory, train-wm's output: its model.pt)."""
    path = Path(path)
    if path.is_dir():
        wm_dir = not (path / "agent.pt").exists() and (path / "model.pt").exists()
        path = path / ("model.pt" if wm_dir else "agent.pt")
    return path


def read_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """A checked agent checkpoint dict (tensors on the CPU)."""
    path = checkpoint_file(path)
    if not path.exists():
        raise ValueError(f"{path}: no such agent checkpoint")
    ckpt = read_file(path, (FORMAT, WM_FORMAT), "agent")
    if ckpt["format"] == WM_FORMAT:  # a world model that acts: wrapped as an agent
        if not getattr(WM_KINDS.get(ckpt.get("kind")), "acts", False):
            raise ValueError(
                f"{path}: a {ckpt.get('kind')!r} world model does not act; "
                "give an agent checkpoint or a World Action Model's "
                "(train-wm --model joint or cascaded)"
            )
        _register("wam")
        agent = AGENTS["wam"].from_world_model(ckpt)
        ckpt = agent.checkpoint(env_args=ckpt.get("env_args"))  # its data's env acts
    _register(ckpt.get("kind"))
    kind_class(AGENTS, ckpt, path, "agent")
    if kind is not None and ckpt["kind"] != kind:
        raise ValueError(f"{path}: holds a {ckpt['kind']!r} agent, expected {kind!r}")
    return ckpt


def load(path: str | os.PathLike, kind: str | None = None) -> Agent:
    """The agent saved at `path` (a file, or a directory holding agent.pt), in eval mode."""
    return from_checkpoint(read_checkpoint(path, kind), path)


def from_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> Agent:
    """The agent of a checkpoint dict (from `read_checkpoint` or `Agent.checkpoint`)."""
    _register(ckpt.get("kind"))
    return build(kind_class(AGENTS, ckpt, path, "agent"), ckpt, path, "agent")
