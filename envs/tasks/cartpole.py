"""Cart-pole balance and swing-up (dense and sparse), equal to the Control Suite's.

Observation (5): cart position, pole cos, pole sin, cart velocity, pole angular
velocity. Episodes are 1000 control steps of 0.01 s; no terminal states.

Scripted expert (`CartpoleExpert`): with the pole
angle t from upright, hinge inertia I and gravity torque m g l sin t, the pole
obeys I t'' = m g l sin t - m l cos t x'' for a cart acceleration x'', so its
energy E = I t'^2 / 2 + m g l (cos t - 1) (0 upright at rest) changes as
    dE/dt = -m l x'' t' cos t.
Swing-up picks x'' = -k_E (0 - E) sgn(t' cos t) (saturated), which raises E
monotonically to the upright energy, plus a PD term pulling the cart to the
centre, and converts x'' into force with the total mass. Near upright (cos t
above a threshold) the LQR takes over; its weights are the quadratic expansion
of the dense reward (upright (1 + cos t)/2 ~ 1 - t^2/4, centred, small control,
small angular velocity), so on balance tasks it simply balances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np
import torch

from envs.base import BatchedEnv, EnvCfg
from envs.experts import (
    Expert,
    action_scale,
    dlqr,
    linearize,
    physics_steps,
    pole_constants,
    signum,
)
from envs.registry import register
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


# ------------------------------------------------------------ scripted expert
class CartpoleExpert(Expert):
    """Energy-pumping swing-up with cart centring, LQR balance near upright."""

    switch_cos = 0.65
    """LQR balances where cos(pole angle) exceeds this (within about 50 degrees)."""
    energy_gain = 20.0
    """Cart acceleration per unit of missing pole energy [m/s^2 / J] before saturation."""
    max_accel = 1.0
    """Swing-up cart acceleration from the energy term, as a fraction of the largest."""
    centre_kp, centre_kd = 2.0, 2.0
    """Swing-up cart centring PD gains [1/s^2, 1/s]."""

    def __init__(self, env):
        super().__init__(env)
        model = env.sim.model
        slider, hinge = (model.jnt_dofadr[env.object_id("joint", j)] for j in ("slider", "hinge_1"))
        if (slider, hinge) != (0, 1) or model.nu != 1:
            raise ValueError(f"{self.task}: expected dofs (slider, hinge_1) and one actuator")
        self.inertia, self.mgl = pole_constants(model, np.zeros(model.nq), hinge)
        rest = np.zeros((model.nv, model.nv))
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        mujoco.mj_fullM(model, data, rest)
        self.total_mass = float(rest[slider, slider])  # cart + pole moving together
        # largest cart force per unit action
        self.force_per_action = float(model.actuator_gear[0, 0] * action_scale(model)[0])
        a, b = linearize(model, np.zeros(model.nq), physics_steps(env))
        dt = model.opt.timestep * physics_steps(env)
        # stage cost = 1 - (dense reward) to second order (the terms multiply, so
        # their deficits add): upright (1 + cos t)/2 ~ 1 - t^2/4; centred
        # (1 + exp(-ln10 x^2/m^2))/2 ~ 1 - ln10 x^2 / (2 m^2), likewise the small
        # angular velocity; small control (5 - u^2/m^2)/5. The reward ignores the cart
        # velocity; a small weight on it damps the cart's return to the centre.
        cfg = env.cfg
        c_x = math.log(10) / (2 * cfg.rew_centered_margin**2)
        c_w = math.log(10) / (2 * cfg.rew_velocity_margin**2)
        q = dt * np.diag([c_x, 0.25, 0.01, c_w])
        r = dt * np.array([[0.2 / cfg.rew_control_margin**2]])
        self.gain = torch.from_numpy(dlqr(a, b, q, r))  # [1, 4]

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        x, cos, sin, x_dot, w = obs.unbind(-1)
        angle = torch.atan2(sin, cos)
        state = torch.stack((x, angle, x_dot, w), dim=-1)
        balance = -state @ self.gain.to(obs.device).T

        energy = 0.5 * self.inertia * w**2 + self.mgl * (cos - 1)
        pump = (self.energy_gain * -energy).clamp(-self.max_accel, self.max_accel)
        max_accel = self.force_per_action / self.total_mass
        accel = -pump * max_accel * signum(w * cos)
        accel = accel - self.centre_kp * x - self.centre_kd * x_dot
        swing = (self.total_mass * accel / self.force_per_action)[:, None]
        return torch.where((cos > self.switch_cos)[:, None], balance, swing)


# ------------------------------------------------------------------- tasks
for _name, _gym_id, _swing_up, _sparse in (
    ("cartpole_balance", "wam/CartpoleBalance-v0", False, False),
    ("cartpole_balance_sparse", "wam/CartpoleBalanceSparse-v0", False, True),
    ("cartpole_swingup", "wam/CartpoleSwingup-v0", True, False),
    ("cartpole_swingup_sparse", "wam/CartpoleSwingupSparse-v0", True, True),
):
    register(
        _name,
        CartpoleEnv,
        CartpoleCfg,
        _gym_id,
        expert=CartpoleExpert,
        swing_up=_swing_up,
        sparse=_sparse,
    )
