"""Ball in cup, equal to the Control Suite's (catch).

A cup moves in the x-z plane on two spring-loaded, damped slides under two motors;
a ball hangs from its bottom on a 0.3 m string. Observation (8): the positions of
the cup's and the ball's slides (cup x, cup z, ball x, ball z) and their four
velocities. Reward (sparse): 1 while the ball's centre lies inside the cup (within
the target box shrunk by the ball's radius), else 0. Episodes are 1000 control
steps of 0.02 s (10 physics steps); no terminal states. Each episode starts with
the cup at rest at its origin and the ball at rest, uniform in x in [-0.2, 0.2] and
z in [0.2, 0.5], drawn again while it touches the cup.

Scripted expert (`BallInCupExpert`): the slides are stiff and heavily damped
(a 65 g cup under 3 N s/m: a time constant of 20 ms), so the motors act as a
position servo: ctrl = (k x* + c b (x* - x) + m g [z]) / gear holds the cup at a
target x* with bandwidth b. The ball hangs from the string's anchor (the cup's
site) as a pendulum, angle p from hanging, r the ball relative to the anchor;
its energy per unit mass e = |v_ball|^2 / 2 + g r_z is 0 at the anchor's height.
Three modes, chosen from the state alone:
- swing (ball below the cup's interior): the cup's target is
  A tanh(k p') (cos p, sin p) sat(e* - e), a small excursion along the
  pendulum's tangent in phase with its swing, which pumps energy up to
  e* = g h (enough to rise h = 0.2 m above the anchor, 9 cm above the rim) and
  takes it out beyond; the string then slackens with the ball above the rim,
  flying toward the cup's axis;
- catch (ball above the interior's centre): the cup moves under the point where
  the ball's parabola will cross that height;
- hold (ball in the cup): the cup stays still under the ball.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envs.base import BatchedEnv, EnvCfg
from envs.experts import Expert, action_scale
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


# ------------------------------------------------------------ scripted expert
class BallInCupExpert(Expert):
    """Pump the ball's swing with the cup to a throw height, move the cup under
    the falling ball, then hold it still."""

    swing_amplitude = 0.07
    """Largest cup excursion of the swing [m]."""
    swing_gain = 5.0
    """Slope of the swing's tanh in the pendulum's angular velocity [s/rad]."""
    throw_height = 0.2
    """Height above the string's anchor that the pumped energy reaches [m]."""
    energy_band = 1.0
    """Energy error at which the swing is at full amplitude [J/kg]."""
    bandwidth = 20.0
    """Position servo bandwidth of the cup [1/s]."""

    def __init__(self, env):
        super().__init__(env)
        model = env.sim.model
        cup, ball = (env.object_id("body", b) for b in ("cup", "ball"))
        joints = [env.object_id("joint", j) for j in ("cup_x", "cup_z", "ball_x", "ball_z")]
        if list(model.jnt_qposadr[joints]) != [0, 1, 2, 3] or model.nu != 2:
            raise ValueError(
                f"{self.task}: expected slides cup_x, cup_z, ball_x, ball_z and 2 motors"
            )

        def xz(v) -> torch.Tensor:
            return torch.tensor([float(v[0]), float(v[2])], dtype=torch.float64)

        self.cup_origin, self.ball_origin = xz(model.body_pos[cup]), xz(model.body_pos[ball])
        self.anchor = xz(model.site_pos[env.object_id("site", "cup")])  # string's end on the cup
        target = env.object_id("site", "target")
        self.inside_centre = xz(model.site_pos[target])  # the cup's interior (reward box)
        self.inside_half = xz(model.site_size[target])
        self.ball_radius = float(model.geom_size[env.object_id("geom", "ball"), 0])
        self.gravity = float(-model.opt.gravity[2])
        self.stiffness = torch.from_numpy(model.jnt_stiffness[joints[:2]].astype("float64"))
        self.damping = torch.from_numpy(
            model.dof_damping[model.jnt_dofadr[joints[:2]]].astype("float64")
        )
        actuators = [env.object_id("actuator", a) for a in ("x", "z")]
        self.force_per_action = torch.from_numpy(
            model.actuator_gear[actuators, 0] * action_scale(model)[actuators]
        )
        self.cup_weight = float(model.body_mass[cup]) * self.gravity

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        dev = obs.device
        cup = obs[:, 0:2] + self.cup_origin.to(dev)
        ball = obs[:, 2:4] + self.ball_origin.to(dev)
        ball_vel = obs[:, 6:8]
        g = self.gravity

        # swing: the ball as a pendulum from the string's anchor
        r = ball - (cup + self.anchor.to(dev))
        angle = torch.atan2(r[:, 0], -r[:, 1])  # from hanging, toward +x
        radius_sq = (r * r).sum(-1).clamp_min(1e-6)
        rate = (r[:, 0] * ball_vel[:, 1] - r[:, 1] * ball_vel[:, 0]) / radius_sq
        energy = 0.5 * (ball_vel * ball_vel).sum(-1) + g * r[:, 1]
        gate = ((g * self.throw_height - energy) / self.energy_band).clamp(-1.0, 1.0)
        tangent = torch.stack((torch.cos(angle), torch.sin(angle)), -1)
        swing = (
            self.swing_amplitude * (torch.tanh(self.swing_gain * rate) * gate)[:, None] * tangent
        )

        # catch: under the point where the ball's parabola crosses the interior's centre
        centre_z = cup[:, 1] + self.inside_centre[1].item()
        height = ball[:, 1] - centre_z
        vz = ball_vel[:, 1]
        fall_time = (vz + (vz * vz + 2 * g * height.clamp_min(0)).sqrt()) / g
        landing_x = ball[:, 0] + ball_vel[:, 0] * fall_time

        # hold: the ball in the cup (its interior, a ball's radius deeper and higher)
        rel = ball - cup - self.inside_centre.to(dev)
        half = self.inside_half.to(dev)
        inside = (rel[:, 0].abs() < half[0]) & (rel[:, 1].abs() < half[1] + self.ball_radius)
        above = height > 0
        rest = torch.zeros_like(landing_x)
        target_x = torch.where(inside, ball[:, 0], torch.where(above, landing_x, swing[:, 0]))
        target_x = torch.where(inside | above, target_x - self.cup_origin[0].item(), target_x)
        target_z = torch.where(inside | above, rest, swing[:, 1])
        target = torch.stack((target_x, target_z), -1)

        # position servo through the spring and the damper
        stiffness, damping = self.stiffness.to(dev), self.damping.to(dev)
        force = stiffness * target + damping * self.bandwidth * (target - obs[:, 0:2])
        force[:, 1] += self.cup_weight
        return force / self.force_per_action.to(dev)


register(
    "ball_in_cup_catch",
    BallInCupEnv,
    BallInCupCfg,
    "wam/BallInCupCatch-v0",
    expert=BallInCupExpert,
)
