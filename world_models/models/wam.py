"""What the World Action Models over state vectors share (`joint`, `cascaded`).

Their config is checked against the class's `defaults`; observations are
standardised with the training transitions' statistics, and one-step changes of
the standardised observation are predicted in units of their own spread `s` per
dimension (`delta_std`), so that every dimension's change is learned at unit scale
however small it is. Both act (`acts`): `action_chunk(state)` and
`advance(state, action, obs)` (`agents.wam_policy`).
"""

from __future__ import annotations

from typing import Any

import torch

from world_models.base import WorldModel

STD_FLOOR = 1e-2  # smallest observation std used to standardise
DELTA_FLOOR = 1e-4  # smallest spread of standardised one-step changes


class StateWAM(WorldModel):
    """Base class: checked config, observation statistics, standardisation."""

    acts = True
    defaults: dict[str, Any] = {}
    pixel_support = False  # whether the class can observe camera frames (`pixels`)

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any]):
        config = {**self.defaults, **config}
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"{self.kind} WAM: unknown config key(s) {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(self.defaults))}"
            )
        if config.get("pixels") and not self.pixel_support:
            raise ValueError(
                f"{self.kind} WAM: state vectors only; the joint WAM sees frames (--joint.pixels)"
            )
        super().__init__(obs_dim, action_dim, config)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("delta_std", torch.ones(obs_dim))

    @torch.no_grad()
    def prepare(self, batch: dict[str, torch.Tensor]) -> None:
        obs, nxt = batch["obs"].float(), batch["next_obs"].float()
        self.obs_mean.copy_(obs.mean(0))
        self.obs_std.copy_(obs.std(0, correction=0).clamp_min(STD_FLOOR))
        delta = (nxt - obs) / self.obs_std
        self.delta_std.copy_(delta.std(0, correction=0).clamp_min(DELTA_FLOOR))

    @classmethod
    def window(cls, config: dict[str, Any]) -> int:
        """Steps per training window (`EpisodeData`'s sequence_length) of a config."""
        raise NotImplementedError

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs.float() - self.obs_mean) / self.obs_std
