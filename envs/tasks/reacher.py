"""Reacher (easy and hard), equal to the Control Suite's.

A planar two-link arm must touch a target sphere with its fingertip. Observation
(6): joint angles, fingertip-to-target vector (x, y), joint velocities. Reward 1
while the fingertip touches the target. Episodes are 1000 control steps of
0.02 s; no terminal states. The target lives in the model (a world geom), moved
per world, so renders show each world's own target.

Scripted expert (`ReacherExpert`): fingertip p(q) = s + R(q0) (w + R(q1) f) with the link
offsets of the model; its Jacobian has columns J0 = perp(R(q0) w + R(q0+q1) f) and
J1 = perp(R(q0+q1) f), perp(x, y) = (-y, x). The observation holds the
fingertip-to-target vector d, so the damped least-squares joint step
dq = J' (J J' + l^2 I)^-1 d (well defined at the stretched-arm singularity) is
driven by a joint-space PD law u = kp dq - kd q' with torques scaled by the
actuator gear. Joint damping dominates the arm's tiny inertia, so the PD mostly
sets a joint velocity proportional to the remaining error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from envs.base import BatchedEnv, EnvCfg
from envs.experts import Expert, action_scale
from envs.registry import register


@dataclass(kw_only=True)
class ReacherCfg(EnvCfg):
    target_size: float = 0.05
    """Radius of the target sphere [m] (easy 0.05, hard 0.015)."""
    target_distance: tuple[float, float] = (0.05, 0.20)
    """Range of the target's uniform distance from the shoulder [m]."""


class PlanarArm:
    """The reacher's two-link arm (bodies arm, hand, finger; joints shoulder, wrist),
    shared by the tasks built on it: its link offsets and fingertip position."""

    _link_xy: torch.Tensor | None = None  # set on first use, from the model

    def _links(self) -> torch.Tensor:
        """Planar offsets `[3, 2]`: shoulder from the origin, wrist from the shoulder,
        fingertip from the wrist, read once from the model (bodies are unrotated)."""
        if self._link_xy is None:
            model = self.sim.model
            arm, hand, finger = (self.object_id("body", b) for b in ("arm", "hand", "finger"))
            tip = self.object_id("geom", "finger")
            identity = [1.0, 0.0, 0.0, 0.0]
            if any(model.body_quat[b].tolist() != identity for b in (arm, hand, finger)):
                raise ValueError(f"{self.model_file}: arm bodies must not be rotated")
            offsets = np.stack(
                (
                    model.body_pos[arm],
                    model.body_pos[hand],
                    model.body_pos[finger] + model.geom_pos[tip],
                )
            )
            self._link_xy = torch.tensor(
                offsets[:, :2], dtype=torch.float64, device=self.sim_device
            )
        return self._link_xy

    def _arm_pose(self, n: int) -> torch.Tensor:
        """Joint angles `[n, 2]` of new episodes (inside `_reset_idx`): the shoulder
        uniform on the circle, the wrist uniform within its limits."""
        wrist = self.object_id("joint", "wrist")
        low, high = (float(v) for v in self.sim.model.jnt_range[wrist])
        return torch.stack((self.uniform(-math.pi, math.pi, n), self.uniform(low, high, n)), -1)

    def _fingertip(self) -> torch.Tensor:
        """Fingertip position in the plane, `[N, 2]`.

        Forward kinematics of the two hinges about z: tip = s + R(q0) (w + R(q1) f),
        computed directly instead of by a kinematics pass after every step.
        """
        shoulder, wrist, finger = self._links()
        q0, q1 = self.sim.qpos[:, 0:1], self.sim.qpos[:, 1:2]
        c0, s0, c01, s01 = torch.cos(q0), torch.sin(q0), torch.cos(q0 + q1), torch.sin(q0 + q1)
        tip_x = shoulder[0] + c0 * wrist[0] - s0 * wrist[1] + c01 * finger[0] - s01 * finger[1]
        tip_y = shoulder[1] + s0 * wrist[0] + c0 * wrist[1] + s01 * finger[0] + c01 * finger[1]
        return torch.cat((tip_x, tip_y), dim=-1)


class ReacherEnv(PlanarArm, BatchedEnv):
    cfg: ReacherCfg
    periodic_obs = (0,)  # the shoulder turns without limit
    model_file = "reacher.xml"

    def _target(self) -> int:
        return self.object_id("geom", "target")

    def _to_target(self) -> torch.Tensor:
        """Target minus fingertip position in the plane, `[N, 2]`."""
        target = self.sim.model_field("geom_pos")[:, self._target(), :2]  # a world-body geom
        return target - self._fingertip()

    def _get_observations(self) -> torch.Tensor:
        qpos, qvel = self.sim.qpos, self.sim.qvel
        return torch.cat((qpos, self._to_target(), qvel), dim=-1).float()

    def _state_from_obs(self, obs: torch.Tensor, env_ids: torch.Tensor):
        # joint angles and velocities as they are; the fingertip-to-target vector follows
        # from the angles and the episode's own target
        return obs[:, 0:2], obs[:, 4:6]

    def _get_rewards(self) -> torch.Tensor:
        size = self.sim.model_field("geom_size")
        radii = size[:, self._target(), 0] + size[:, self.object_id("geom", "finger"), 0]
        return reacher_reward(self._to_target(), radii)

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        n = len(env_ids)
        self.sim.model_field("geom_size")[env_ids, self._target(), 0] = self.cfg.target_size
        qpos = self._arm_pose(n)
        angle = self.uniform(0.0, 2 * math.pi, n)
        distance = self.uniform(*self.cfg.target_distance, n)
        self._write_target(
            torch.stack((distance * torch.sin(angle), distance * torch.cos(angle)), -1), env_ids
        )
        self.sim.set_state(qpos, torch.zeros(n, 2, dtype=torch.float64), env_ids, forward=False)

    def _write_target(self, xy: torch.Tensor, env_ids: torch.Tensor) -> None:
        field = self.sim.model_field("geom_pos")
        field[env_ids, self._target(), :2] = xy.to(field)

    def target_position(self) -> torch.Tensor:
        """Target (x, y) of every world [m], float64 `[N, 2]`."""
        return self.sim.model_field("geom_pos")[:, self._target(), :2].to(torch.float64, copy=True)

    def set_target(self, xy: torch.Tensor, env_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Move the targets of `env_ids` (all if None) to `xy` `[n, 2]`; returns observations."""
        ids = (
            torch.arange(self.num_envs)
            if env_ids is None
            else torch.as_tensor(env_ids).cpu().long()
        )
        xy = torch.as_tensor(xy, dtype=torch.float64).cpu()
        if xy.shape != (len(ids), 2):
            raise ValueError(
                f"{self.name}: target has shape {tuple(xy.shape)}, expected ({len(ids)}, 2)"
            )
        self._write_target(xy, ids)
        self._fresh = False
        self.sim.forward(ids)
        self._obs = self._observe()
        return self._obs.to(self.device)


def reacher_reward(to_target: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """1 while the fingertip sphere overlaps the target sphere (centre distance <= radii)."""
    distance = torch.linalg.vector_norm(to_target, dim=-1)
    inside = distance <= radii
    return inside.to(distance.dtype)


# ------------------------------------------------------------ scripted expert
class ReacherExpert(Expert):
    """Damped least-squares inverse-Jacobian PD toward the target."""

    kp = 40.0
    """Joint torque per radian of joint-step error, in units of the damping [1/s]."""
    kd = 1.0
    """Extra velocity damping, in units of the joint damping."""
    damping_length = 0.05
    """Damped least-squares length l [m]: limits joint steps near singular poses."""

    def __init__(self, env):
        super().__init__(env)
        model = env.sim.model
        links = env._links().numpy()  # shoulder, wrist, fingertip offsets [3, 2]
        self.wrist, self.finger = (torch.from_numpy(v.copy()) for v in links[1:])
        dofs = [model.jnt_dofadr[env.object_id("joint", j)] for j in ("shoulder", "wrist")]
        # gains in torque = damping * velocity: the arm's steady speed per unit torque
        self.joint_damping = torch.from_numpy(model.dof_damping[dofs].copy())
        act_ids = [env.object_id("actuator", a) for a in ("shoulder", "wrist")]
        self.torque_per_action = torch.from_numpy(
            model.actuator_gear[act_ids, 0] * action_scale(model)[act_ids]
        )

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        return self._toward(obs[:, 0:2], obs[:, 4:6], obs[:, 2:4])

    def _toward(self, q: torch.Tensor, qvel: torch.Tensor, to_target: torch.Tensor):
        """Actions moving the fingertip by `to_target` `[N, 2]` from joint angles and
        velocities `[N, 2]`."""
        q0, q1 = q[:, 0], q[:, 1]
        wrist, finger = self.wrist.to(q.device), self.finger.to(q.device)

        def rotate(angle: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            c, s = torch.cos(angle), torch.sin(angle)
            return torch.stack((c * v[0] - s * v[1], s * v[0] + c * v[1]), dim=-1)

        def perp(v: torch.Tensor) -> torch.Tensor:
            return torch.stack((-v[:, 1], v[:, 0]), dim=-1)

        forearm = rotate(q0 + q1, finger)
        jac = torch.stack((perp(rotate(q0, wrist) + forearm), perp(forearm)), dim=-1)  # [N,2,2]
        jjt = jac @ jac.transpose(1, 2)
        eye = torch.eye(2, dtype=q.dtype, device=q.device)
        step = jac.transpose(1, 2) @ torch.linalg.solve(
            jjt + self.damping_length**2 * eye, to_target[:, :, None]
        )
        damping = self.joint_damping.to(q.device)
        torque = damping * (self.kp * step[:, :, 0] - self.kd * qvel)
        return torque / self.torque_per_action.to(q.device)


# ------------------------------------------------------------------- tasks
register(
    "reacher_easy",
    ReacherEnv,
    ReacherCfg,
    "wam/ReacherEasy-v0",
    expert=ReacherExpert,
    target_size=0.05,
)
register(
    "reacher_hard",
    ReacherEnv,
    ReacherCfg,
    "wam/ReacherHard-v0",
    expert=ReacherExpert,
    target_size=0.015,
)
