"""Finger (spin, turn easy, turn hard), equal to the Control Suite's.

A planar two-link finger (proximal and distal hinges under 30 and 15 N m motors)
works a body that turns freely on a hinge with friction, without gravity.
Observation: the finger's two joint angles and the tip of the body (x, z relative
to its hinge; an angle without a wrap-around), the three joint velocities,
log(1 + force) of the touch sensors on top of and below the fingertip (9); the
turn tasks add the target's position relative to the hinge (x, z) and the tip's
signed distance to the target's surface (12). Reward (sparse): spin, 1 while the
body turns at 15 rad/s or faster (clockwise seen from the front camera, the
hinge's negative direction); turn, 1 while the body's tip lies inside the target
sphere (radius 7 cm easy, 3 cm hard), whose centre is uniform on the circle the
tip draws. Episodes are 1000 control steps of 0.02 s (2 physics steps); no terminal
states. Each episode starts at rest with both finger joints uniform within their
limits and the body's angle uniform on the circle, drawn again while the finger
touches the body. In spin, the body's hinge damping is 0.03 (the asset's 0.5 is
turn's), as the Control Suite sets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from envs.base import BatchedEnv, EnvCfg
from envs.joints import random_joints, start_without_contacts
from envs.registry import register


@dataclass(kw_only=True)
class FingerCfg(EnvCfg):
    substeps: int = 2
    """Physics steps of 10 ms per control step (0.02 s)."""
    target_radius: float = 0.0
    """Radius of the target sphere [m] (turn easy 0.07, hard 0.03); 0: spin."""
    spin_velocity: float = 15.0
    """Turning speed that spin rewards [rad/s]."""
    spin_damping: float = 0.03
    """The body's hinge damping in spin [N m s/rad]."""


class FingerEnv(BatchedEnv):
    cfg: FingerCfg
    model_file = "finger.xml"
    contact_obs = (7, 8)  # the touch sensors

    @classmethod
    def edit_spec(cls, spec, cfg: FingerCfg) -> None:
        if cfg.target_radius == 0:  # spin
            spec.joint("hinge").damping[0] = cfg.spin_damping
        else:
            spec.site("target").size[0] = cfg.target_radius

    @property
    def turning(self) -> bool:
        return self.cfg.target_radius > 0

    # ---------------------------------------------------------------- observation
    def _relative(self, sensor: str) -> torch.Tensor:
        """A framepos sensor's (x, z) relative to the body's hinge, `[N, 2]`."""
        return (self.sensor(sensor) - self.sensor("spinner"))[:, [0, 2]]

    def _get_observations(self) -> torch.Tensor:
        joints = torch.cat((self.sensor("proximal"), self.sensor("distal")), -1)
        tip = self._relative("tip")
        velocity = torch.cat(
            [self.sensor(s) for s in ("proximal_velocity", "distal_velocity", "hinge_velocity")],
            -1,
        )
        touch = torch.log1p(torch.cat((self.sensor("touchtop"), self.sensor("touchbottom")), -1))
        parts = [joints, tip, velocity, touch]
        if self.turning:
            target = self._relative("target")
            parts += [target, self._distance(target, tip)[:, None]]
        return torch.cat(parts, dim=-1).float()

    def _distance(self, target: torch.Tensor, tip: torch.Tensor) -> torch.Tensor:
        """Signed distance of the tip to the target's surface (negative inside), `[N]`."""
        return torch.linalg.vector_norm(target - tip, dim=-1) - self.cfg.target_radius

    def _state_from_obs(self, obs: torch.Tensor, env_ids: torch.Tensor):
        # the tip (0, 0, r) in the body's frame turned by the hinge angle a about -y
        # lies at (-r sin a, r cos a)
        angle = torch.atan2(-obs[:, 2], obs[:, 3])
        return torch.stack((obs[:, 0], obs[:, 1], angle), -1), obs[:, 4:7]

    def _get_rewards(self) -> torch.Tensor:
        if self.turning:
            distance = self._distance(self._relative("target"), self._relative("tip"))
            return (distance <= 0).to(torch.float64)
        return (self.sensor("hinge_velocity")[:, 0] <= -self.cfg.spin_velocity).to(torch.float64)

    # -------------------------------------------------------------------- resets
    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        if self.turning:
            self._place_targets(env_ids)
        start_without_contacts(self, env_ids, lambda n: random_joints(self, n))

    def _place_targets(self, env_ids: torch.Tensor) -> None:
        """Each world's target centre on the circle of the body's tip, at an angle
        uniform on [-pi, pi) from the top (x = sin, z = cos)."""
        angle = self.uniform(-math.pi, math.pi, len(env_ids))
        model = self.sim.model
        hinge = torch.as_tensor(model.body_pos[self.object_id("body", "spinner")]).to(angle)
        radius = float(model.geom_size[self.object_id("geom", "cap1")].sum())
        centre = hinge[[0, 2]] + radius * torch.stack((torch.sin(angle), torch.cos(angle)), -1)
        self.set_target(centre, env_ids)

    def set_target(self, centre: torch.Tensor, env_ids: torch.Tensor) -> None:
        """Move the targets of worlds `env_ids` to world (x, z) `centre` `[n, 2]` (they
        take effect at the next `forward` or step)."""
        site_pos = self.sim.model_field("site_pos")
        ids = torch.as_tensor(env_ids, device=site_pos.device).long()
        target = self.object_id("site", "target")
        centre = torch.as_tensor(centre).to(site_pos)
        site_pos[ids, target, 0] = centre[:, 0]
        site_pos[ids, target, 2] = centre[:, 1]


register("finger_spin", FingerEnv, FingerCfg, "wam/FingerSpin-v0", target_radius=0.0)
register("finger_turn_easy", FingerEnv, FingerCfg, "wam/FingerTurnEasy-v0", target_radius=0.07)
register("finger_turn_hard", FingerEnv, FingerCfg, "wam/FingerTurnHard-v0", target_radius=0.03)
