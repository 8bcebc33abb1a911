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

Scripted expert of the turn tasks (`FingerTurnExpert`): cross-entropy planning on
the task's own model (`envs.experts.SimulatorPlanner`) from the state the
observation gives back; a sequence scores the tip's distance to the target summed
over its 12 steps (0.24 s), plus one per step inside the target. It reaches most
targets and holds them; it stalls where the finger must get round the body to
reach a target on its own side (docs/tasks.md#scripted-experts). Spin has no expert
yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from envs.base import BatchedEnv, EnvCfg
from envs.experts import Expert, SimulatorPlanner, physics_steps
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


def physics_state(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(qpos, qvel) `[N, 3]` that observations `[N, >= 7]` give back: the finger's
    joints, the body's hinge angle a from its tip, and the three joint velocities. The
    tip (0, 0, r) in the body's frame turned by a about -y lies at (-r sin a, r cos a)."""
    angle = torch.atan2(-obs[:, 2], obs[:, 3])
    return torch.stack((obs[:, 0], obs[:, 1], angle), -1), obs[:, 4:7]


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
        return physics_state(obs)

    @property
    def tip_radius(self) -> float:
        """Distance of the body's tip from its hinge [m] (the end of its capsule)."""
        return float(self.sim.model.geom_size[self.object_id("geom", "cap1")].sum())

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
        centre = hinge[[0, 2]] + self.tip_radius * torch.stack(
            (torch.sin(angle), torch.cos(angle)), -1
        )
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


# ------------------------------------------------------------ scripted expert
class FingerTurnExpert(Expert):
    """Plan on the finger's own model to bring the body's tip into the target."""

    def __init__(self, env):
        super().__init__(env)
        if not env.turning:
            raise ValueError(f"{self.task}: the planner's objective is the turn tasks'")
        self.planner = SimulatorPlanner(env.sim.model, physics_steps(env))
        self.radius = env.tip_radius
        self.target_radius = env.cfg.target_radius

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        qpos, qvel = (x.cpu().numpy() for x in physics_state(obs))
        target = obs[:, None, None, 9:11].cpu().numpy()  # relative to the hinge, [N, 1, 1, 2]

        def score(states: np.ndarray) -> np.ndarray:
            a = self.planner.qpos(states)[..., 2]
            tip = self.radius * np.stack((-np.sin(a), np.cos(a)), -1)
            distance = np.linalg.norm(tip - target, axis=-1) - self.target_radius
            return (-distance + (distance <= 0)).sum(-1)

        action = self.planner.plan(qpos, qvel, score)
        return torch.from_numpy(action).to(obs)


register("finger_spin", FingerEnv, FingerCfg, "wam/FingerSpin-v0", target_radius=0.0)
register(
    "finger_turn_easy",
    FingerEnv,
    FingerCfg,
    "wam/FingerTurnEasy-v0",
    expert=FingerTurnExpert,
    target_radius=0.07,
)
register(
    "finger_turn_hard",
    FingerEnv,
    FingerCfg,
    "wam/FingerTurnHard-v0",
    expert=FingerTurnExpert,
    target_radius=0.03,
)
