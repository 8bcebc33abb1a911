"""`isaac_cartpole`: the MuJoCo twin of Isaac Lab's `Isaac-Cartpole-Direct`.

The same task in our MuJoCo backend, so that an agent trained in either engine is
evaluated in the other (`run.py transfer --backends mujoco isaaclab`). Everything
an agent sees or is paid for is Isaac Lab's, from the task's config
(`isaaclab_tasks/core/cartpole/cartpole_direct_env{,_cfg}.py`, Isaac Lab 3.0) and
the robot (`envs/assets/isaac_cartpole.xml` says where each number comes from):

- observation (4): cart position [m], pole angle [rad, 0 upright, not wrapped],
  cart velocity [m/s], pole angular velocity [rad/s], each relative to the
  default joint state (zero);
- action (1) in [-1, 1]: a force of 100 N per unit on the cart (`action_scale`;
  Isaac Lab's adapter passes our actions as they are, its space being unbounded);
- control step 1/60 s: two physics steps of 1/120 s (`decimation` 2), one agent
  step (action repeat 1); episodes of 300 control steps (5 s);
- reward per control step, times the step's 1/60 s: 1 while the episode goes on,
  -2 on the step it fails, minus the squared pole angle (wrapped to [-pi, pi]),
  0.01 |cart velocity| and 0.005 |pole angular velocity|: at most 5 an episode;
- terminated when |cart position| > 3 m; truncated at the time limit;
- resets: cart position ~ U(-1, 1) m, cart velocity ~ U(-0.5, 0.5) m/s, pole angle
  and angular velocity ~ U(-pi/4, pi/4) (rad, rad/s), clamped to the joint limits.

What the twin cannot copy is named in docs/transfer.md: Isaac Lab draws its reset
states from its own generator (the same distribution, other samples), and its
Newton/MJWarp solver is not this MuJoCo build.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from envs.base import BatchedEnv, EnvCfg
from envs.registry import register

ISAAC_TASK = "Isaac-Cartpole-Direct"


@dataclass(kw_only=True)
class IsaacCartpoleCfg(EnvCfg):
    substeps: int = 2  # Isaac Lab's decimation: 2 physics steps of 1/120 s
    episode_length: int = 300  # 5 s of 1/60 s control steps
    max_cart_pos: float = 3.0
    """The episode fails past this cart position [m]."""
    cart_position_range: tuple[float, float] = (-1.0, 1.0)
    """Initial cart position ~ U(range) [m]."""
    cart_velocity_range: tuple[float, float] = (-0.5, 0.5)
    """Initial cart velocity ~ U(range) [m/s]."""
    pole_angle_range: tuple[float, float] = (-0.25 * math.pi, 0.25 * math.pi)
    """Initial pole angle ~ U(range) [rad]."""
    pole_velocity_range: tuple[float, float] = (-0.25 * math.pi, 0.25 * math.pi)
    """Initial pole angular velocity ~ U(range) [rad/s]."""
    rew_alive: float = 1.0
    rew_terminated: float = -2.0
    rew_pole_pos: float = -1.0
    rew_cart_vel: float = -0.01
    rew_pole_vel: float = -0.005


class IsaacCartpoleEnv(BatchedEnv):
    cfg: IsaacCartpoleCfg
    model_file = "isaac_cartpole.xml"

    def _get_observations(self) -> torch.Tensor:
        qpos, qvel = self.sim.qpos, self.sim.qvel
        return torch.stack((qpos[:, 0], qpos[:, 1], qvel[:, 0], qvel[:, 1]), -1).float()

    def _state_from_obs(self, obs: torch.Tensor, env_ids: torch.Tensor):
        return obs[:, :2], obs[:, 2:4]

    def _failed(self) -> torch.Tensor:
        return self.sim.qpos[:, 0].abs() > self.cfg.max_cart_pos

    def _get_rewards(self) -> torch.Tensor:
        cfg = self.cfg
        failed = self._failed().double()
        angle = torch.remainder(self.sim.qpos[:, 1] + math.pi, 2 * math.pi) - math.pi
        reward = (
            cfg.rew_alive * (1.0 - failed)
            + cfg.rew_terminated * failed
            + cfg.rew_pole_pos * angle.square()
            + cfg.rew_cart_vel * self.sim.qvel[:, 0].abs()
            + cfg.rew_pole_vel * self.sim.qvel[:, 1].abs()
        )
        return reward * self.sim.dt  # Isaac Lab's step_dt: one control step, 1/60 s

    def _get_dones(self) -> tuple[torch.Tensor, torch.Tensor]:
        time_out = self.episode_length_buf >= self.cfg.episode_length
        return self._failed(), time_out

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        cfg, n = self.cfg, len(env_ids)
        qpos = torch.stack(
            (self.uniform(*cfg.cart_position_range, n), self.uniform(*cfg.pole_angle_range, n)), -1
        )
        qvel = torch.stack(
            (self.uniform(*cfg.cart_velocity_range, n), self.uniform(*cfg.pole_velocity_range, n)),
            -1,
        )
        low, high = self.sim.model.jnt_range[0]  # the rail's limits
        qpos[:, 0] = qpos[:, 0].clamp(float(low), float(high))
        self.sim.set_state(qpos.double(), qvel.double(), env_ids, forward=False)


register(
    "isaac_cartpole",
    IsaacCartpoleEnv,
    IsaacCartpoleCfg,
    "wam/IsaacCartpole-v0",
    twins={"isaaclab": ISAAC_TASK},
)
