"""Pendulum swing-up, equal to the Control Suite's.

Observation (3): pole frame zz and xz (cos and sin of the angle from upright),
angular velocity. Reward 1 while the pole is within 8 degrees of upright.
Episodes are 1000 control steps of 0.02 s; no terminal states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from envs.base import BatchedEnv, EnvCfg
from envs.rewards import tolerance


@dataclass(kw_only=True)
class PendulumCfg(EnvCfg):
    upright_angle: float = 8.0
    """Largest angle from vertical that earns reward [deg]."""


class PendulumEnv(BatchedEnv):
    cfg: PendulumCfg
    model_file = "pendulum.xml"

    def __init__(self, cfg: PendulumCfg):
        self._cos_bound = math.cos(math.radians(cfg.upright_angle))
        super().__init__(cfg)

    def _pole_frame(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(zz, xz) of the pole's frame, a rotation about y by the hinge angle: the
        cos and sin of its angle from upright (from qpos, no kinematics pass needed)."""
        angle = self.sim.qpos[:, 0]
        return torch.cos(angle), torch.sin(angle)

    def _get_observations(self) -> torch.Tensor:
        zz, xz = self._pole_frame()
        return torch.stack((zz, xz, self.sim.qvel[:, 0]), dim=-1).float()

    def _state_from_obs(self, obs: torch.Tensor, env_ids: torch.Tensor):
        return torch.atan2(obs[:, 1:2], obs[:, 0:1]), obs[:, 2:3]

    def _get_rewards(self) -> torch.Tensor:
        zz, _ = self._pole_frame()
        return tolerance(zz, (self._cos_bound, 1.0))

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        n = len(env_ids)
        qpos = self.uniform(-math.pi, math.pi, (n, 1))
        self.sim.set_state(qpos, torch.zeros(n, 1, dtype=torch.float64), env_ids, forward=False)
