"""Ball in cup, equal to the Control Suite's (catch).

A cup moves in the x-z plane on two spring-loaded, damped slides under two motors;
a ball hangs from its bottom on a 0.3 m string. Observation (8): the positions of
the cup's and the ball's slides (cup x, cup z, ball x, ball z) and their four
velocities. Reward (sparse): 1 while the ball's centre lies inside the cup (within
the target box shrunk by the ball's radius), else 0. Episodes are 1000 control
steps of 0.02 s (10 physics steps); no terminal states. Each episode starts with
the cup at rest at its origin and the ball at rest, uniform in x in [-0.2, 0.2] and
z in [0.2, 0.5], drawn again while it touches the cup.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envs.base import BatchedEnv, EnvCfg
from envs.joints import start_without_contacts
from envs.registry import register


@dataclass(kw_only=True)
class BallInCupCfg(EnvCfg):
    substeps: int = 10
    """Physics steps of 2 ms per control step (0.02 s)."""
    ball_x: tuple[float, float] = (-0.2, 0.2)
    """Range of the ball's uniform initial x [m]."""
    ball_z: tuple[float, float] = (0.2, 0.5)
    """Range of the ball's uniform initial height [m]."""


class BallInCupEnv(BatchedEnv):
    cfg: BallInCupCfg
    model_file = "ball_in_cup.xml"

    def _get_observations(self) -> torch.Tensor:
        return torch.cat((self.sim.qpos, self.sim.qvel), dim=-1).float()

    def _state_from_obs(self, obs: torch.Tensor, env_ids: torch.Tensor):
        return obs[:, 0:4], obs[:, 4:8]

    def _get_rewards(self) -> torch.Tensor:
        model = self.sim.model
        target, ball = self.object_id("site", "target"), self.object_id("body", "ball")
        offset = self.sim.data("site_xpos")[:, target] - self.sim.data("xpos")[:, ball]
        inside = torch.as_tensor(model.site_size[target, [0, 2]], device=offset.device)
        inside = inside - float(model.geom_size[self.object_id("geom", "ball"), 0])
        return (offset[:, [0, 2]].abs() < inside).all(dim=-1).to(torch.float64)

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        qpos0 = torch.as_tensor(self.sim.model.qpos0, device=self.sim_device)
        x, z = self.cfg.ball_x, self.cfg.ball_z

        def draw(n: int) -> torch.Tensor:
            qpos = qpos0.repeat(n, 1)
            qpos[:, 2] = self.uniform(x[0], x[1], n)
            qpos[:, 3] = self.uniform(z[0], z[1], n)
            return qpos

        start_without_contacts(self, env_ids, draw)


register("ball_in_cup_catch", BallInCupEnv, BallInCupCfg, "wam/BallInCupCatch-v0")
