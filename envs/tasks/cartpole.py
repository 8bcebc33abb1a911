"""Cart-pole balance and swing-up (dense and sparse), equal to the Control Suite's.

Observation (5): cart position, pole cos, pole sin, cart velocity, pole angular
velocity. Episodes are 1000 control steps of 0.01 s; no terminal states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from envs.base import BatchedEnv, EnvCfg
from envs.rewards import tolerance


@dataclass(kw_only=True)
class CartpoleCfg(EnvCfg):
    # task
    swing_up: bool = False
    """Start hanging down (swing-up) instead of near upright (balance)."""
    sparse: bool = False
    """Reward 1 only inside the cart and angle bounds, else 0."""
    # initial state
    balance_cart_range: float = 0.1  # [m] balance: cart position ~ U(-r, r)
    """Balance: half-width of the uniform initial cart position [m]."""
    balance_angle_range: float = 0.034
    """Balance: half-width of the uniform initial pole angle [rad]."""
    swingup_noise: float = 0.01
    """Swing-up: std of the Gaussian noise on cart position and pole angle [m, rad]."""
    velocity_noise: float = 0.01
    """Std of the Gaussian initial joint velocities [m/s, rad/s]."""
    # sparse reward bounds
    cart_bounds: tuple[float, float] = (-0.25, 0.25)
    """Sparse: cart positions that count as centred [m]."""
    cos_bounds: tuple[float, float] = (0.995, 1.0)
    """Sparse: pole angle cosines that count as upright."""
    # dense reward shaping
    rew_centered_margin: float = 2.0
    """Dense: distance [m] at which the centred term falls to 0.1."""
    rew_control_margin: float = 1.0
    """Dense: control magnitude at which the small-control term falls to 0."""
    rew_velocity_margin: float = 5.0
    """Dense: angular speed [rad/s] at which the small-velocity term falls to 0.1."""


class CartpoleEnv(BatchedEnv):
    cfg: CartpoleCfg
    model_file = "cartpole.xml"

    def _pole_frame(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of the pole angle: entries zz and xz of its frame, a rotation
        about y by the hinge angle (computed from qpos, no kinematics pass needed)."""
        angle = self.sim.qpos[:, 1]
        return torch.cos(angle), torch.sin(angle)

    def _get_observations(self) -> torch.Tensor:
        cos, sin = self._pole_frame()
        qpos, qvel = self.sim.qpos, self.sim.qvel
        return torch.stack((qpos[:, 0], cos, sin, qvel[:, 0], qvel[:, 1]), dim=-1).float()

    def _state_from_obs(self, obs: torch.Tensor, env_ids: torch.Tensor):
        angle = torch.atan2(obs[:, 2], obs[:, 1])  # the pole angle, wrapped to [-pi, pi]
        return torch.stack((obs[:, 0], angle), -1), obs[:, 3:5]

    def _get_rewards(self) -> torch.Tensor:
        cfg = self.cfg
        cart = self.sim.qpos[:, 0]
        cos, _ = self._pole_frame()
        if cfg.sparse:
            return tolerance(cart, cfg.cart_bounds) * tolerance(cos, cfg.cos_bounds)
        return cartpole_dense_reward(cart, cos, self.sim.qvel[:, 1], self.sim.ctrl[:, 0], cfg)

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        cfg, n = self.cfg, len(env_ids)
        qpos = torch.empty(n, 2, dtype=torch.float64, device=self.sim_device)
        if cfg.swing_up:
            qpos[:, 0] = cfg.swingup_noise * self.normal(n)
            qpos[:, 1] = math.pi + cfg.swingup_noise * self.normal(n)
        else:
            qpos[:, 0] = self.uniform(-cfg.balance_cart_range, cfg.balance_cart_range, n)
            qpos[:, 1] = self.uniform(-cfg.balance_angle_range, cfg.balance_angle_range, n)
        qvel = cfg.velocity_noise * self.normal((n, 2))
        self.sim.set_state(qpos, qvel, env_ids, forward=False)


def cartpole_dense_reward(
    cart: torch.Tensor, cos: torch.Tensor, ang_vel: torch.Tensor, ctrl: torch.Tensor, cfg
) -> torch.Tensor:
    """upright * centred * small control * small velocity, each term in [0, 1]."""
    upright = (cos + 1) / 2
    centered = (1 + tolerance(cart, margin=cfg.rew_centered_margin)) / 2
    small_control = tolerance(
        ctrl, margin=cfg.rew_control_margin, value_at_margin=0.0, sigmoid="quadratic"
    )
    small_control = (4 + small_control) / 5
    small_velocity = (1 + tolerance(ang_vel, margin=cfg.rew_velocity_margin)) / 2
    return upright * small_control * small_velocity * centered
