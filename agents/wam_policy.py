"""A World Action Model acting in an env: a joint WAM's action head, or a cascaded
WAM's predicted future with the actions extracted from it.

The agent keeps, for every env row, the model state of its history (a joint WAM's
window of recent observations and the actions it took, a cascaded WAM's last
observation): a row's first observation after `reset` starts a new one
(`encode`), every later one is added after the action the agent returned for the
step before (`advance`), or the one it is told the env took (`executed`). It acts
with the first action of the chunk predicted at the newest observation (receding
horizon), clamped to [-1, 1]; exploring, it adds `noise_std` times the caller's
standard normal noise.

A joint WAM that sees acts on camera frames: its observations are the uint8
`[N, H, W, 3]` frames of an env made with `obs="pixels"` at the model's frame size
(`frame_shape`; `run.py eval` makes that env).

The agent's config holds the model's checkpoint, so an agent checkpoint alone acts;
`agents.base.load` also wraps a WAM's own checkpoint (`train-wm --model joint` or
`cascaded` output) in this agent, so `run.py eval --agent runs/wm` acts with it.
"""

from __future__ import annotations

from typing import Any

import torch

import world_models  # noqa: F401  (registers the world model kinds)
from agents.base import Agent
from world_models.base import MODEL_KEYS
from world_models.base import from_checkpoint as wm_from_checkpoint


class WamPolicy(Agent):
    """Acts with a World Action Model's action chunks, keeping each row's history."""

    kind = "wam"

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any]):
        if "world_model" not in config:
            raise ValueError(
                "wam agent: config needs a World Action Model's checkpoint (`world_model`)"
            )
        wm_ckpt = {k: v for k, v in config["world_model"].items() if k in MODEL_KEYS}
        config = {"noise_std": 0.1, **config, "world_model": wm_ckpt}
        unknown = sorted(set(config) - {"noise_std", "world_model"})
        if unknown:
            raise ValueError(
                f"wam agent: unknown config key(s) {', '.join(unknown)}; "
                "valid keys: noise_std, world_model"
            )
        super().__init__(obs_dim, action_dim, config)
        model = wm_from_checkpoint(wm_ckpt, "wam agent's world model")
        if not model.acts:
            raise ValueError(
                f"wam agent: a {model.kind!r} model does not act; train a "
                "World Action Model (train-wm --model joint or cascaded)"
            )
        if (model.obs_dim, model.action_dim) != (obs_dim, action_dim):
            raise ValueError(
                f"wam agent: the model has obs/action dims "
                f"{model.obs_dim}/{model.action_dim}, the agent "
                f"{obs_dim}/{action_dim}"
            )
        self.model = model
        self.state: torch.Tensor | None = None  # each row's model state (its history)
        self.fresh: torch.Tensor | None = None  # rows whose next observation starts one
        self.last: torch.Tensor | None = None  # the action each row took last

    @property
    def frame_shape(self) -> tuple[int, int, int] | None:
        return self.model.frame_shape

    def _observations(self, obs: torch.Tensor) -> torch.Tensor:
        """Checked observations on the model's device: state vectors, or frames for a
        model that sees."""
        shape = self.frame_shape
        if shape is None:
            return self.check_obs(obs).to(self.model.obs_mean.device)
        obs = torch.as_tensor(obs)
        if obs.dim() != 4 or tuple(obs.shape[1:]) != shape:
            want = ", ".join(map(str, shape))
            raise ValueError(
                f"wam agent: the model sees frames: observations have shape "
                f"{tuple(obs.shape)}, expected (N, {want}) (an env made with "
                "obs='pixels' at the model's frame size)"
            )
        return obs.to(self.model.obs_mean.device)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(None, x) if self.frame_shape else self.model.encode(x)

    @classmethod
    def from_world_model(cls, ckpt: dict[str, Any], **config: Any) -> WamPolicy:
        """The agent of a World Action Model's checkpoint dict."""
        return cls(
            ckpt["dims"]["obs"], ckpt["dims"]["action"], {**config, "world_model": ckpt}
        ).eval()

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        # the config's weights point at the live model: fine-tuned weights are saved,
        # and `torch.save` writes storages shared with the state_dict once
        self.config["world_model"] = {
            **self.config["world_model"],
            "state_dict": self.model.state_dict(),
        }
        return super().checkpoint(**extra)

    def reset(self, env_ids: torch.Tensor) -> None:
        if self.fresh is not None:
            self.fresh[torch.as_tensor(env_ids, device=self.fresh.device)] = True

    def executed(self, action: torch.Tensor) -> None:
        self.last = torch.as_tensor(action).to(self.model.obs_mean.device).float()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x = self._observations(obs)
        n = len(x)
        if self.state is None or len(self.state) != n:
            self.state = self._encode(x)
            self.fresh = torch.zeros(n, dtype=torch.bool, device=x.device)
        else:
            if self.frame_shape:
                self.state = self.model.advance(self.state, self.last, None, x)
            else:
                self.state = self.model.advance(self.state, self.last, x)
            if self.fresh.any():  # new episodes start from their observation alone
                self.state[self.fresh] = self._encode(x[self.fresh])
                self.fresh[:] = False
        action = self.model.action_chunk(self.state)[:, 0]
        if noise is not None:
            action = action + self.config["noise_std"] * self.check_noise(noise, action)
        action = action.clamp(-1.0, 1.0)
        self.last = action
        return action.to(torch.as_tensor(obs).device)
