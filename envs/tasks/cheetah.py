"""Half-cheetah run, equal to the Control Suite's.

A planar body with a back and a front leg runs along x under six spring-loaded
motorised joints. Observation (17): joint positions but the forward one (8) and
the nine joint velocities. Reward: the forward speed of the centre of mass,
rising linearly from 0 at rest to 1 at 10 m/s and above. Episodes are 1000
control steps of 0.01 s; no terminal states. Each episode starts with every leg
joint uniform within its limits, then lets the body fall and settle for 200
physics steps (2 s) with the motors off, and starts its clock there.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import torch

from envs.base import BatchedEnv, EnvCfg
from envs.joints import random_joints
from envs.registry import register
from envs.rewards import tolerance


@dataclass(kw_only=True)
class CheetahCfg(EnvCfg):
    run_speed: float = 10.0
    """Forward speed of the centre of mass that earns full reward [m/s]."""
    settle_steps: int = 200
    """Physics steps a new episode's body falls and settles before it starts."""


class CheetahEnv(BatchedEnv):
    cfg: CheetahCfg
    periodic_obs = (1,)  # the body's pitch (rooty) turns without limit
    model_file = "cheetah.xml"
    unobserved_qpos = (0,)  # rootx, the forward position

    def _get_observations(self) -> torch.Tensor:
        return torch.cat((self.sim.qpos[:, 1:], self.sim.qvel), dim=-1).float()

    def _state_from_obs(self, obs: torch.Tensor, env_ids: torch.Tensor):
        return obs[:, 0:8], obs[:, 8:17]  # qpos but rootx

    def _get_rewards(self) -> torch.Tensor:
        speed = self.sensor("torso_subtreelinvel")[:, 0]  # of the centre of mass
        run = self.cfg.run_speed
        return tolerance(speed, (run, float("inf")), run, value_at_margin=0.0, sigmoid="linear")

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        n = len(env_ids)
        qpos = random_joints(self, n, limited_only=True)
        # the first settling step is the Control Suite's: it finishes a step whose
        # forces and masses were computed at the default pose, before the joints were
        # drawn (gravity alone, the same velocity for every world), moving the drawn pose
        v0 = self._first_step_velocity().to(qpos)
        qpos = qpos + self.sim.timestep * v0  # hinges and slides only: a plain sum
        self.sim.set_state(qpos, v0.expand(n, -1), env_ids, forward=False)
        # motors off: `reset_worlds` (in super()._reset_idx) zeroed these worlds' controls
        self.sim.settle(env_ids, self.cfg.settle_steps - 1)
        self.sim.time[env_ids] = 0.0

    _v0: torch.Tensor | None = None

    def _first_step_velocity(self) -> torch.Tensor:
        """qvel after one physics step from rest at the default pose, `[nv]` float64."""
        if self._v0 is None:
            model = self.sim.model
            data = mujoco.MjData(model)
            mujoco.mj_forward(model, data)
            mujoco.mj_step2(model, data)
            self._v0 = torch.from_numpy(data.qvel.copy()).to(self.sim_device)
        return self._v0


register("cheetah_run", CheetahEnv, CheetahCfg, "wam/CheetahRun-v0")
