"""Acrobot swing-up, equal to the Control Suite's.

Two 1 m links hang from an unactuated shoulder; a torque at the elbow (2 N m at
most) must swing the tip up to a target 4 m above the floor, 2 m above the
shoulder. Observation (6): the x and z components of both links' axes
(horizontal and vertical: sin and cos of their angles from upright), the two
joint velocities. Reward: 1 with the tip within 0.2 m of the target, falling as a
Gaussian of the distance beyond (0.1 at 1 m). Episodes are 1000 control steps of
0.01 s; no terminal states. Each episode starts with both joints uniform on
[-pi, pi) and at rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from envs.base import BatchedEnv, EnvCfg
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


register("acrobot_swingup", AcrobotEnv, AcrobotCfg, "wam/AcrobotSwingup-v0", sparse=False)
