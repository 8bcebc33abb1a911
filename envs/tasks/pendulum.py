"""Pendulum swing-up, equal to the Control Suite's.

Observation (3): pole frame zz and xz (cos and sin of the angle from upright),
angular velocity. Reward 1 while the pole is within 8 degrees of upright.
Episodes are 1000 control steps of 0.02 s; no terminal states.

Scripted expert (`PendulumExpert`): the torque limit (1 N m) is a fifth of the peak
gravity torque (m g l = 4.9 N m), so the pole cannot be lifted directly. With
E = I t'^2 / 2 + m g l (cos t - 1) and dE/dt = u t' - b t'^2, the pump
u = u_max sgn(t') while E is below the upright energy (and the opposite above)
adds energy at the largest rate each swing (slightly past the upright energy, to
cover the damping loss of the last rise). Within 15 degrees of upright, where the
saturated torque still exceeds gravity's pull, the LQR catches and holds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from envs.base import BatchedEnv, EnvCfg
from envs.experts import (
    Expert,
    dlqr,
    linearize,
    physics_steps,
    pole_constants,
    signum,
)
from envs.registry import register
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


# ------------------------------------------------------------ scripted expert
class PendulumExpert(Expert):
    """Bang-bang energy pumping, LQR (torque-saturated) balance near upright."""

    switch_cos = math.cos(math.radians(15))
    """LQR may take over inside this angle from upright."""
    energy_margin = 0.2
    """Pump to this much above the upright energy [J] to cover damping on the last rise."""

    def __init__(self, env):
        super().__init__(env)
        model = env.sim.model
        if model.nv != 1 or model.nu != 1:
            raise ValueError(f"{self.task}: expected one hinge and one actuator")
        self.inertia, self.mgl = pole_constants(model, np.zeros(model.nq), 0)
        a, b = linearize(model, np.zeros(model.nq), physics_steps(env))
        dt = model.opt.timestep * physics_steps(env)
        self.gain = torch.from_numpy(dlqr(a, b, dt * np.diag([10.0, 0.1]), dt * np.eye(1)))

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        cos, sin, w = obs.unbind(-1)
        angle = torch.atan2(sin, cos)
        state = torch.stack((angle, w), dim=-1)
        balance = -state @ self.gain.to(obs.device).T
        energy = 0.5 * self.inertia * w**2 + self.mgl * (cos - 1)
        pump = signum(w) * torch.where(energy < self.energy_margin, 1.0, -1.0)
        return torch.where((cos > self.switch_cos)[:, None], balance, pump[:, None])


# ------------------------------------------------------------------- tasks
register(
    "pendulum_swingup", PendulumEnv, PendulumCfg, "wam/PendulumSwingup-v0", expert=PendulumExpert
)
