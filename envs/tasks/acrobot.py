"""Acrobot swing-up, equal to the Control Suite's.

Two 1 m links hang from an unactuated shoulder; a torque at the elbow (2 N m at
most) must swing the tip up to a target 4 m above the floor, 2 m above the
shoulder. Observation (6): the x and z components of both links' axes
(horizontal and vertical: sin and cos of their angles from upright), the two
joint velocities. Reward: 1 with the tip within 0.2 m of the target, falling as a
Gaussian of the distance beyond (0.1 at 1 m). Episodes are 1000 control steps of
0.01 s; no terminal states. Each episode starts with both joints uniform on
[-pi, pi) and at rest.

Scripted expert (`AcrobotExpert`): with the shoulder angle q1 from upright and the
elbow angle q2, the model is M(q) q'' + h(q, q') + G(q) + D q' = (0, tau), where
M = [[a + 2b cos q2, c + b cos q2], [c + b cos q2, c]] and the potential is
V = g1 cos q1 + g2 cos(q1 + q2); a, b, c, g1, g2 are read from MuJoCo's mass
matrix and gravity forces at three poses. The energy E = q'M q'/2 + V is g1 + g2
upright at rest and changes as dE/dt = tau q2' - q'D q'. The swing-up is Spong's
collocated partial feedback linearisation: the torque
    tau = (c - m12^2 / m11) v + n2 - m12 n1 / m11 + k_E (E_up - E) q2'
gives the elbow the acceleration v = k_p (q2* - q2) - k_d q2' toward
q2* = alpha atan(k_w q1') sat((E_up - E) / E_s), a bend in phase with the shoulder's
swing that fades as the energy reaches the upright's, plus an energy pump
(n = h + G + D q'). Where the quadratic form x'P x of the balance LQR (the
model's own linearisation about upright, `linearize` / `dlqr`) is small, the LQR
balances. The elbow's 2 N m is far below gravity's pull (4.9 N m on the lower
link alone): linearised about upright, the slow unstable mode (2.7 /s) is
recoverable only within 0.06 of its coordinate, so the catch rarely succeeds and
the expert's return stays near 100 (random actions: about 3); it mostly swings
the tip through the target's neighbourhood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np
import torch

from envs.base import BatchedEnv, EnvCfg
from envs.experts import Expert, action_scale, dlqr, linearize, physics_steps
from envs.joints import wrap_angle
from envs.registry import register
from envs.rewards import tolerance


@dataclass(kw_only=True)
class AcrobotCfg(EnvCfg):
    sparse: bool = False
    """Reward 1 only with the tip inside the target, else 0."""


class AcrobotEnv(BatchedEnv):
    cfg: AcrobotCfg
    model_file = "acrobot.xml"

    def _get_observations(self) -> torch.Tensor:
        xmat = self.sim.data("xmat")
        arms = [self.object_id("body", b) for b in ("upper_arm", "lower_arm")]
        horizontal, vertical = xmat[:, arms, 2], xmat[:, arms, 8]  # xz, zz
        return torch.cat((horizontal, vertical, self.sim.qvel), dim=-1).float()

    def _state_from_obs(self, obs: torch.Tensor, env_ids: torch.Tensor):
        upper = torch.atan2(obs[:, 0], obs[:, 2])
        lower = torch.atan2(obs[:, 1], obs[:, 3])
        return torch.stack((upper, wrap_angle(lower - upper)), dim=-1), obs[:, 4:6]

    def _get_rewards(self) -> torch.Tensor:
        sites = self.sim.data("site_xpos")
        target, tip = (self.object_id("site", s) for s in ("target", "tip"))
        distance = torch.linalg.vector_norm(sites[:, target] - sites[:, tip], dim=-1)
        radius = float(self.sim.model.site_size[target, 0])
        return tolerance(distance, (0.0, radius), margin=0.0 if self.cfg.sparse else 1.0)

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        n = len(env_ids)
        qpos = self.uniform(-math.pi, math.pi, (n, 2))
        qvel = torch.zeros(n, 2, dtype=torch.float64, device=self.sim_device)
        self.sim.set_state(qpos, qvel, env_ids, forward=False)


# ------------------------------------------------------------ scripted expert
class AcrobotExpert(Expert):
    """Spong's energy-gated collocated swing-up, LQR balance near upright."""

    swing_angle = 0.75
    """Scale of the swing's elbow bend, alpha: the bend is at most alpha pi / 2 [rad]."""
    swing_rate_gain = 0.75
    """Slope of the bend's atan in the shoulder's rate, k_w [s/rad]."""
    energy_scale = 10.0
    """Energy deficit at which the bend is full, E_s [J]."""
    energy_gain = 0.5
    """Elbow torque per unit energy deficit per unit elbow rate, k_E [N m s/(J rad)]."""
    elbow_kp, elbow_kd = 8.0, 0.2
    """Gains of the elbow's acceleration command [1/s^2, 1/s]."""
    lqr_q = (10.0, 1.0, 1.0, 1.0)
    """LQR state weights (shoulder, elbow, their rates), per second."""
    lqr_r = 1.5
    """LQR action weight, per second."""
    balance_cost = 17.0
    """The LQR balances where x'P x (its cost-to-go) is below this."""

    def __init__(self, env):
        super().__init__(env)
        model = env.sim.model
        dofs = [model.jnt_dofadr[env.object_id("joint", j)] for j in ("shoulder", "elbow")]
        if dofs != [0, 1] or model.nu != 1:
            raise ValueError(f"{self.task}: expected dofs (shoulder, elbow) and one actuator")
        data = mujoco.MjData(model)
        mass = np.zeros((2, 2))

        def at(q1: float, q2: float) -> tuple[np.ndarray, np.ndarray]:
            """Mass matrix and gravity forces at rest in pose (q1, q2)."""
            mujoco.mj_resetData(model, data)
            data.qpos[:] = (q1, q2)
            mujoco.mj_forward(model, data)
            mujoco.mj_fullM(model, data, mass)
            return mass.copy(), data.qfrc_bias.copy()

        # at rest qfrc_bias is dV/dq, V = g1 cos q1 + g2 cos(q1 + q2)
        bent, bent_bias = at(0.0, math.pi / 2)  # m11 = a, m22 = c; dV/dq2 = -g2
        straight, _ = at(0.0, 0.0)  # m12 = c + b
        _, level_bias = at(math.pi / 2, -math.pi / 2)  # dV/dq1 = -g1
        self.a, self.c = float(bent[0, 0]), float(bent[1, 1])
        self.b = float(straight[0, 1]) - self.c
        self.g1, self.g2 = -float(level_bias[0]), -float(bent_bias[1])
        self.damping = [float(d) for d in model.dof_damping[dofs]]
        self.torque_per_action = float(model.actuator_gear[0, 0] * action_scale(model)[0])
        self.upright_energy = self.g1 + self.g2

        a, b = linearize(model, np.zeros(2), physics_steps(env))
        dt = model.opt.timestep * physics_steps(env)
        q, r = dt * np.diag(self.lqr_q), dt * np.array([[self.lqr_r]])
        gain = dlqr(a, b, q, r)
        # the cost-to-go P of the gain: the Lyapunov equation of the closed loop
        closed = a - b @ gain
        p = q.copy()
        for _ in range(100_000):
            p_next = q + gain.T @ r @ gain + closed.T @ p @ closed
            if np.abs(p_next - p).max() <= 1e-12 * max(1.0, np.abs(p_next).max()):
                break
            p = p_next
        self.gain = torch.from_numpy(gain)  # [1, 4]
        self.cost_to_go = torch.from_numpy(p_next / dt)  # per second of cost, as the weights

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        upper = torch.atan2(obs[:, 0], obs[:, 2])
        elbow = wrap_angle(torch.atan2(obs[:, 1], obs[:, 3]) - upper)
        w1, w2 = obs[:, 4], obs[:, 5]
        state = torch.stack((upper, elbow, w1, w2), -1)
        balance = -state @ self.gain.to(obs.device).T
        cost = ((state @ self.cost_to_go.to(obs.device)) * state).sum(-1)
        near_upright = cost < self.balance_cost

        cos2, sin2 = torch.cos(elbow), torch.sin(elbow)
        m11 = self.a + 2 * self.b * cos2
        m12 = self.c + self.b * cos2
        sin12 = torch.sin(upper + elbow)
        n1 = (
            -self.b * sin2 * (2 * w1 * w2 + w2 * w2)
            - self.g1 * torch.sin(upper)
            - self.g2 * sin12
            + self.damping[0] * w1
        )
        n2 = self.b * sin2 * w1 * w1 - self.g2 * sin12 + self.damping[1] * w2
        kinetic = 0.5 * (m11 * w1 * w1 + 2 * m12 * w1 * w2 + self.c * w2 * w2)
        potential = self.g1 * torch.cos(upper) + self.g2 * torch.cos(upper + elbow)
        deficit = self.upright_energy - (kinetic + potential)

        bend = (
            self.swing_angle
            * torch.atan(self.swing_rate_gain * w1)
            * (deficit / self.energy_scale).clamp(0.0, 1.0)
        )
        accel = self.elbow_kp * (bend - elbow) - self.elbow_kd * w2
        torque = (self.c - m12 * m12 / m11) * accel + n2 - m12 * n1 / m11
        torque = torque + self.energy_gain * deficit * w2
        swing = (torque / self.torque_per_action)[:, None]
        return torch.where(near_upright[:, None], balance, swing)


register(
    "acrobot_swingup",
    AcrobotEnv,
    AcrobotCfg,
    "wam/AcrobotSwingup-v0",
    expert=AcrobotExpert,
    sparse=False,
)
