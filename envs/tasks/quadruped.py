"""Quadruped (walk, run), equal to the Control Suite's.

A four-legged body on a free joint walks on a flat floor under twelve
first-order filtered position actuators (each leg's hip yaw, and lift and extend
through tendons). Observation (78): egocentric state (the 16 hinge angles and
velocities, the 12 actuator activations), the torso's velocity in its own frame
(3), its upright component (the z entry of its z axis), the IMU (accelerometer
and gyro, 6), and arcsinh of the force and torque at each toe (24). The
acceleration-stage readings (accelerometer, forces, torques) are those of the last
physics step. Reward: upright (1 upright, falling linearly to 0 upside down)
times a forward-speed term (the torso's own x velocity, 0.5 at rest rising
linearly to 1 at 0.5 m/s for walk, 5 m/s for run). Episodes are 1000 control steps
of 0.02 s (4 physics steps); no terminal states. Each episode starts at rest with
the legs at their default pose, the torso's orientation uniform (a normalised
Gaussian quaternion) above the origin, at the lowest height on a 1 cm grid where
nothing touches. The floor is drawn 20 s times the target speed wide (10 m, 100 m).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import mujoco
import torch

from envs.base import BatchedEnv, EnvCfg
from envs.joints import start_without_contacts
from envs.registry import register
from envs.rewards import tolerance


@dataclass(kw_only=True)
class QuadrupedCfg(EnvCfg):
    substeps: int = 4
    """Physics steps of 5 ms per control step (0.02 s)."""
    move_speed: float = 0.5
    """The torso's forward speed that earns full reward [m/s] (walk 0.5, run 5)."""
    floor_size: float = 10.0
    """Half-width of the drawn floor [m] (the Control Suite's 20 s at the target speed:
    10 walk, 100 run); collisions treat it as unbounded."""
    drop_step: float = 0.01
    """Height grid on which a new episode's body is raised until nothing touches [m]."""


class QuadrupedEnv(BatchedEnv):
    cfg: QuadrupedCfg
    model_file = "quadruped.xml"
    contact_obs = tuple(range(51, 78))  # accelerometer, forces and torques: last step's

    @classmethod
    def edit_spec(cls, spec, cfg: QuadrupedCfg) -> None:
        spec.geom("floor").size = [cfg.floor_size, cfg.floor_size, 0.5]

    _hinge_ids: tuple[list[int], list[int]] | None = None

    def _hinges(self) -> tuple[list[int], list[int]]:
        """qpos and qvel addresses of the hinge joints, in joint order (read once)."""
        if self._hinge_ids is None:
            model = self.sim.model
            hinge = mujoco.mjtJoint.mjJNT_HINGE
            joints = [j for j in range(model.njnt) if model.jnt_type[j] == hinge]
            self._hinge_ids = (
                [int(model.jnt_qposadr[j]) for j in joints],
                [int(model.jnt_dofadr[j]) for j in joints],
            )
        return self._hinge_ids

    def _get_observations(self) -> torch.Tensor:
        qpos_ids, qvel_ids = self._hinges()
        upright = self.sim.data("xmat")[:, self.object_id("body", "torso"), 8:9]
        imu = torch.cat((self.sensor("imu_accel"), self.sensor("imu_gyro")), -1)
        legs = ("front_left", "front_right", "back_right", "back_left")
        force_torque = torch.cat(
            [self.sensor(f"{kind}_toe_{leg}") for kind in ("force", "torque") for leg in legs], -1
        )
        parts = (
            self.sim.qpos[:, qpos_ids],
            self.sim.qvel[:, qvel_ids],
            self.sim.data("act"),
            self.sensor("velocimeter"),
            upright,
            imu,
            torch.asinh(force_torque),
        )
        return torch.cat(parts, dim=-1).float()

    def _get_rewards(self) -> torch.Tensor:
        upright = self.sim.data("xmat")[:, self.object_id("body", "torso"), 8]
        upright = tolerance(upright, (1.0, float("inf")), 2.0, "linear", value_at_margin=0.0)
        speed = self.cfg.move_speed
        move = tolerance(
            self.sensor("velocimeter")[:, 0],
            (speed, float("inf")),
            speed,
            "linear",
            value_at_margin=0.5,
        )
        return upright * move

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        n = len(env_ids)
        orientation = self.normal((n, 4))
        orientation = orientation / torch.linalg.vector_norm(orientation, dim=-1, keepdim=True)
        qpos = torch.as_tensor(self.sim.model.qpos0, device=self.sim_device).repeat(n, 1)
        qpos[:, 3:7] = orientation
        qpos[:, 0:2] = 0.0
        heights = itertools.count()

        def raised(rows: int) -> torch.Tensor:
            """The body one `drop_step` higher than the last try, from the floor (z = 0)."""
            qpos[:, 2] = next(heights) * self.cfg.drop_step
            return qpos

        start_without_contacts(self, env_ids, raised)


for _name, _gym_id, _speed in (
    ("quadruped_walk", "wam/QuadrupedWalk-v0", 0.5),
    ("quadruped_run", "wam/QuadrupedRun-v0", 5.0),
):
    register(_name, QuadrupedEnv, QuadrupedCfg, _gym_id, move_speed=_speed, floor_size=20 * _speed)
