"""Planar walker (stand, walk, run), equal to the Control Suite's.

A torso with two three-link legs moves in the x-z plane under six hip, knee and
ankle motors. Observation (24): the xx and xz entries of the frames of its seven
bodies (orientations), the torso's height, the nine joint velocities. Reward:
standing (torso at 1.2 m or higher, falling to 0.1 at 0.6 m) and upright
((1 + torso zz) / 2), weighted 3 : 1; walk and run multiply it by (5 m + 1) / 6,
where m rises linearly from 0.5 at half the target speed to 1 at the target (1 and
8 m/s of the centre of mass). Episodes are 1000 control steps of 0.025 s (10
physics steps); no terminal states. Each episode starts with every leg joint
uniform within its limits and the torso's pitch uniform on the circle, at the
standing height (the walker falls from there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envs.base import BatchedEnv, EnvCfg
from envs.joints import start_at_random_joints, wrap_angle
from envs.registry import register
from envs.rewards import tolerance


@dataclass(kw_only=True)
class WalkerCfg(EnvCfg):
    substeps: int = 10
    """Physics steps of 2.5 ms per control step (0.025 s)."""
    move_speed: float = 0.0
    """Target forward speed of the centre of mass [m/s]; 0 rewards standing only."""
    stand_height: float = 1.2
    """Torso height from which standing earns full reward [m]."""


class WalkerEnv(BatchedEnv):
    cfg: WalkerCfg
    model_file = "walker.xml"
    unobserved_qpos = (1,)  # rootx, the forward position

    def _state_from_obs(self, obs: torch.Tensor, env_ids: torch.Tensor):
        # each body's pitch from its frame (a rotation about y: xx = cos, xz = sin); the
        # torso's is rooty, each leg joint (axis -y) the parent's pitch minus the child's
        pitch = torch.atan2(obs[:, 1:14:2], obs[:, 0:14:2])  # torso, right x3, left x3
        parent = pitch[:, [0, 1, 2, 0, 4, 5]]
        joints = wrap_angle(parent - pitch[:, 1:])
        torso_z = float(self.sim.model.body_pos[self.object_id("body", "torso"), 2])
        qpos = torch.cat((obs[:, 14:15] - torso_z, pitch[:, :1], joints), dim=-1)  # but rootx
        return qpos, obs[:, 15:24]

    def _get_observations(self) -> torch.Tensor:
        xmat = self.sim.data("xmat")[:, 1:]  # every body but the world
        orientations = xmat[..., [0, 2]].flatten(1)  # xx, xz
        height = self.sim.data("xpos")[:, self.object_id("body", "torso"), 2:3]
        return torch.cat((orientations, height, self.sim.qvel), dim=-1).float()

    def _get_rewards(self) -> torch.Tensor:
        cfg = self.cfg
        torso = self.object_id("body", "torso")
        height = self.sim.data("xpos")[:, torso, 2]
        upright = (1 + self.sim.data("xmat")[:, torso, 8]) / 2
        standing = tolerance(height, (cfg.stand_height, float("inf")), cfg.stand_height / 2)
        stand = (3 * standing + upright) / 4
        if cfg.move_speed == 0:
            return stand
        speed = self.sensor("torso_subtreelinvel")[:, 0]  # of the centre of mass
        move = tolerance(
            speed,
            (cfg.move_speed, float("inf")),
            cfg.move_speed / 2,
            value_at_margin=0.5,
            sigmoid="linear",
        )
        return stand * (5 * move + 1) / 6

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        start_at_random_joints(self, env_ids)


for _name, _gym_id, _speed in (
    ("walker_stand", "wam/WalkerStand-v0", 0.0),
    ("walker_walk", "wam/WalkerWalk-v0", 1.0),
    ("walker_run", "wam/WalkerRun-v0", 8.0),
):
    register(_name, WalkerEnv, WalkerCfg, _gym_id, move_speed=_speed)
