"""Humanoid (stand, walk, run), equal to the Control Suite's.

A 21-joint body on a free joint under 21 motors. Observation (67): the 21 joint
angles, the head's height, the hands' and feet's positions in the torso's frame
(12), the torso's z axis (3), the centre of mass's velocity (3) and the 27 joint
velocities (the free joint's six first). Reward: standing (head at 1.4 m or
higher, a Gaussian falling to 0.1 at 1.05 m) times upright (the torso's z axis at
0.9 of vertical or more, falling linearly to 0 upside down) times a small-control
term ((4 + mean of 1 - u^2) / 5), times, for stand, staying put (the mean of two
Gaussians of the centre of mass's horizontal velocity components, 0.1 at 2 m/s),
and for walk and run a horizontal-speed term ((5 m + 1) / 6, m rising linearly
from 0 at rest to 1 at 1 or 10 m/s). Episodes are 1000 control steps of 0.025 s
(5 physics steps); no terminal states. Each episode starts at rest with every
joint uniform within its limits and the torso's orientation random (a normalised
vector of four uniform numbers) 1.5 m above the origin, drawn again while any part
touches another or the floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envs.base import BatchedEnv, EnvCfg
from envs.joints import random_joints, start_without_contacts
from envs.registry import register
from envs.rewards import tolerance


@dataclass(kw_only=True)
class HumanoidCfg(EnvCfg):
    substeps: int = 5
    """Physics steps of 5 ms per control step (0.025 s)."""
    move_speed: float = 0.0
    """Horizontal speed of the centre of mass that earns full reward [m/s] (walk 1, run
    10); 0 rewards standing still."""
    stand_height: float = 1.4
    """Head height from which standing earns full reward [m]."""


class HumanoidEnv(BatchedEnv):
    cfg: HumanoidCfg
    model_file = "humanoid.xml"

    def _extremities(self) -> torch.Tensor:
        """Hands and feet (left hand, left foot, right hand, right foot) in the torso's
        frame, `[N, 12]`."""
        xpos, xmat = self.sim.data("xpos"), self.sim.data("xmat")
        torso = self.object_id("body", "torso")
        frame = xmat[:, torso].reshape(-1, 3, 3)
        limbs = [
            self.object_id("body", f"{s}_{b}") for s in ("left", "right") for b in ("hand", "foot")
        ]
        offsets = xpos[:, limbs] - xpos[:, torso : torso + 1]
        return (offsets @ frame).flatten(1)  # row vectors times the frame: x R

    def _get_observations(self) -> torch.Tensor:
        xmat = self.sim.data("xmat")
        torso, head = self.object_id("body", "torso"), self.object_id("body", "head")
        parts = (
            self.sim.qpos[:, 7:],
            self.sim.data("xpos")[:, head, 2:3],
            self._extremities(),
            xmat[:, torso, 6:9],  # zx, zy, zz
            self.sensor("torso_subtreelinvel"),
            self.sim.qvel,
        )
        return torch.cat(parts, dim=-1).float()

    def _get_rewards(self) -> torch.Tensor:
        cfg = self.cfg
        head = self.sim.data("xpos")[:, self.object_id("body", "head"), 2]
        upright = self.sim.data("xmat")[:, self.object_id("body", "torso"), 8]
        standing = tolerance(head, (cfg.stand_height, float("inf")), cfg.stand_height / 4)
        upright = tolerance(upright, (0.9, float("inf")), 1.9, "linear", value_at_margin=0.0)
        small_control = tolerance(
            self.sim.ctrl, margin=1.0, value_at_margin=0.0, sigmoid="quadratic"
        ).mean(-1)
        small_control = (4 + small_control) / 5
        velocity = self.sensor("torso_subtreelinvel")[:, :2]
        if cfg.move_speed == 0:
            dont_move = tolerance(velocity, margin=2.0).mean(-1)
            return small_control * standing * upright * dont_move
        move = tolerance(
            torch.linalg.vector_norm(velocity, dim=-1),
            (cfg.move_speed, float("inf")),
            cfg.move_speed,
            "linear",
            value_at_margin=0.0,
        )
        return small_control * standing * upright * (5 * move + 1) / 6

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        start_without_contacts(self, env_ids, lambda n: random_joints(self, n))


for _name, _gym_id, _speed in (
    ("humanoid_stand", "wam/HumanoidStand-v0", 0.0),
    ("humanoid_walk", "wam/HumanoidWalk-v0", 1.0),
    ("humanoid_run", "wam/HumanoidRun-v0", 10.0),
):
    register(_name, HumanoidEnv, HumanoidCfg, _gym_id, move_speed=_speed)
