"""Planar hopper (stand, hop), equal to the Control Suite's.

A one-legged body (torso, pelvis, thigh, calf, foot) moves in the x-z plane under
waist, hip, knee and ankle motors. Observation (15): joint positions but the
forward one (6), the seven joint velocities, and log(1 + force) of the touch
sensors at the toe and the heel. Reward: standing (the torso's centre of mass 0.6
to 2 m above the foot's) times, for stand, a small-control term ((4 + mean of
1 - u^2) / 5) and, for hop, a forward-speed term rising linearly from 0.5 at 1 m/s
to 1 at 2 m/s. Episodes are 1000 control steps of 0.02 s (4 physics steps); no
terminal states. Each episode starts with every limited joint uniform within its
limits and the torso's pitch uniform on the circle, at the standing height.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envs.base import BatchedEnv, EnvCfg
from envs.joints import start_at_random_joints
from envs.registry import register
from envs.rewards import tolerance


@dataclass(kw_only=True)
class HopperCfg(EnvCfg):
    substeps: int = 4
    """Physics steps of 5 ms per control step (0.02 s)."""
    hopping: bool = False
    """Reward forward hopping instead of standing still."""
    stand_height: float = 0.6
    """Least height of the torso above the foot that counts as standing [m]."""
    hop_speed: float = 2.0
    """Forward speed of the centre of mass that earns full hopping reward [m/s]."""


class HopperEnv(BatchedEnv):
    cfg: HopperCfg
    periodic_obs = (1,)  # the body's pitch (rooty) turns without limit
    model_file = "hopper.xml"
    unobserved_qpos = (0,)  # rootx, the forward position
    contact_obs = (13, 14)  # the touch sensors

    def _state_from_obs(self, obs: torch.Tensor, env_ids: torch.Tensor):
        return obs[:, 0:6], obs[:, 6:13]  # qpos but rootx

    def _get_observations(self) -> torch.Tensor:
        touch = torch.log1p(torch.cat((self.sensor("touch_toe"), self.sensor("touch_heel")), -1))
        return torch.cat((self.sim.qpos[:, 1:], self.sim.qvel, touch), dim=-1).float()

    def _get_rewards(self) -> torch.Tensor:
        cfg = self.cfg
        com = self.sim.data("xipos")
        torso, foot = self.object_id("body", "torso"), self.object_id("body", "foot")
        height = com[:, torso, 2] - com[:, foot, 2]
        standing = tolerance(height, (cfg.stand_height, 2.0))
        if cfg.hopping:
            speed = self.sensor("torso_subtreelinvel")[:, 0]
            hopping = tolerance(
                speed,
                (cfg.hop_speed, float("inf")),
                cfg.hop_speed / 2,
                value_at_margin=0.5,
                sigmoid="linear",
            )
            return standing * hopping
        small_control = tolerance(
            self.sim.ctrl, margin=1.0, value_at_margin=0.0, sigmoid="quadratic"
        ).mean(-1)
        return standing * (small_control + 4) / 5

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        start_at_random_joints(self, env_ids)


register("hopper_stand", HopperEnv, HopperCfg, "wam/HopperStand-v0", hopping=False)
register("hopper_hop", HopperEnv, HopperCfg, "wam/HopperHop-v0", hopping=True)
