"""Push: the reacher's planar two-link arm pushes a ball to a goal disc.

The ball (radius 2.5 cm, 50 g) slides on two damped slide joints; only the
fingertip and the ball collide. Each episode draws the arm's pose, the ball's
start and the goal: both at 11-20 cm from the shoulder, the goal 0.5-1.2 rad
around the shoulder from the ball (on either side), so that the push runs
across the workspace and never through the shoulder.

Observation (18, `OBS` names the slices): cos and sin of the shoulder and wrist
angles (4), joint velocities (2), fingertip (x, y), ball (x, y), ball velocity
(x, y), goal (x, y), ball minus fingertip (x, y), goal minus ball (x, y) [m]. The
shoulder turns without limit, so its angle enters through cos and sin (a raw angle
would keep growing); the two relative vectors are what a push depends on, given
directly as the reacher's fingertip-to-target vector is. Success: the ball's centre
within `goal_radius` of the goal's (`info["success"]`: at any control step of the
episode so far). Reward per control step, in [0, 1]: dense, 0.8 for the ball
near the goal (1 inside it, falling to 0.1 at `goal_margin` beyond) plus 0.2 for
the fingertip near the ball; sparse, 1 while the ball is in the goal. Episodes
are 250 control steps of 0.02 s (two physics steps of 0.01 s); no terminal
states. The goal lives in the model (a world geom), moved per world.

Scripted expert (`PushExpert`): the reacher's controller with a moving fingertip target:
with u the unit vector from the ball to the goal, a fingertip lined up behind
the ball heads for the point one clearance (ball and fingertip radii plus a
centimetre) short of the goal, pushing the ball's centre onto it; otherwise it
goes around the ball on its own side and lines up behind it first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from envs.base import BatchedEnv, EnvCfg
from envs.registry import register
from envs.rewards import tolerance
from envs.tasks.reacher import PlanarArm, ReacherExpert

OBS = {
    "arm_cos_sin": slice(0, 4),  # cos q0, sin q0, cos q1, sin q1
    "arm_vel": slice(4, 6),
    "tip": slice(6, 8),
    "ball": slice(8, 10),
    "ball_vel": slice(10, 12),
    "goal": slice(12, 14),
    "ball_from_tip": slice(14, 16),
    "goal_from_ball": slice(16, 18),
}
"""Slices of push's observation vector."""


def arm_angles(obs: torch.Tensor) -> torch.Tensor:
    """Shoulder and wrist angles `[N, 2]` of push observations, in (-pi, pi]."""
    cs = obs[:, OBS["arm_cos_sin"]]
    return torch.stack((torch.atan2(cs[:, 1], cs[:, 0]), torch.atan2(cs[:, 3], cs[:, 2])), -1)


@dataclass(kw_only=True)
class PushCfg(EnvCfg):
    substeps: int = 2
    episode_length: int = 250
    sparse: bool = False
    """Reward 1 while the ball is in the goal, else 0 (dense shaping otherwise)."""
    goal_radius: float = 0.02
    """Largest distance of the ball's centre from the goal's that counts as reached [m]."""
    goal_margin: float = 0.1
    """Distance beyond the goal at which the dense goal term has fallen to 0.1 [m]."""
    start_distance: tuple[float, float] = (0.11, 0.20)
    """Range of the ball's and the goal's uniform distance from the shoulder [m]."""
    goal_angle: tuple[float, float] = (0.5, 1.2)
    """Range of the goal's angle around the shoulder from the ball's [rad]."""


class PushEnv(PlanarArm, BatchedEnv):
    cfg: PushCfg
    model_file = "push.xml"

    def _goal(self) -> int:
        return self.object_id("geom", "goal")

    def _goal_xy(self) -> torch.Tensor:
        """Goal (x, y) of every world, a view of the world geom's position `[N, 2]`."""
        return self.sim.model_field("geom_pos")[:, self._goal(), :2]

    def goal_position(self) -> torch.Tensor:
        """Goal (x, y) of every world [m], float64 `[N, 2]`."""
        return self._goal_xy().to(torch.float64, copy=True)

    def _touch(self) -> float:
        """Fingertip-to-ball distance at contact [m] (the two radii)."""
        size = self.sim.model.geom_size
        ball, finger = self.object_id("geom", "object"), self.object_id("geom", "finger")
        return float(size[ball, 0] + size[finger, 0])

    def _get_observations(self) -> torch.Tensor:
        qpos, qvel = self.sim.qpos, self.sim.qvel
        goal = self._goal_xy().to(qpos.dtype)
        q0, q1 = qpos[:, 0:1], qpos[:, 1:2]
        tip, ball = self._fingertip(), qpos[:, 2:4]
        parts = (
            torch.cos(q0),
            torch.sin(q0),
            torch.cos(q1),
            torch.sin(q1),
            qvel[:, :2],
            tip,
            ball,
            qvel[:, 2:4],
            goal,
            ball - tip,
            goal - ball,
        )
        return torch.cat(parts, dim=-1).float()

    def _state_from_obs(self, obs: torch.Tensor, env_ids: torch.Tensor):
        # angles from their cos and sin (the shoulder's modulo a turn, which is the
        # same pose); the fingertip follows from them, the goal stays the episode's own
        qpos = torch.cat((arm_angles(obs), obs[:, OBS["ball"]]), dim=-1)
        qvel = torch.cat((obs[:, OBS["arm_vel"]], obs[:, OBS["ball_vel"]]), dim=-1)
        return qpos, qvel

    def _ball_to_goal(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self._goal_xy() - self.sim.qpos[:, 2:4], dim=-1)

    def _get_success(self) -> torch.Tensor:
        return self._ball_to_goal() <= self.cfg.goal_radius

    def _get_rewards(self) -> torch.Tensor:
        if self.cfg.sparse:
            return self._get_success().to(torch.float64)
        to_goal = self._ball_to_goal()
        near_goal = tolerance(to_goal, (0.0, self.cfg.goal_radius), margin=self.cfg.goal_margin)
        to_ball = torch.linalg.vector_norm(self.sim.qpos[:, 2:4] - self._fingertip(), dim=-1)
        near_ball = tolerance(to_ball, (0.0, self._touch() + 0.005), margin=0.1)
        return 0.8 * near_goal + 0.2 * near_ball

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        super()._reset_idx(env_ids)
        n, cfg = len(env_ids), self.cfg
        arm = self._arm_pose(n)
        ball_angle = self.uniform(0.0, 2 * math.pi, n)
        ball_r = self.uniform(*cfg.start_distance, n)
        side = torch.where(self.uniform(0.0, 1.0, n) < 0.5, -1.0, 1.0)
        goal_angle = ball_angle + side * self.uniform(*cfg.goal_angle, n)
        goal_r = self.uniform(*cfg.start_distance, n)
        ball = torch.stack((ball_r * torch.cos(ball_angle), ball_r * torch.sin(ball_angle)), -1)
        goal = torch.stack((goal_r * torch.cos(goal_angle), goal_r * torch.sin(goal_angle)), -1)
        field = self.sim.model_field("geom_pos")
        field[env_ids, self._goal(), :2] = goal.to(field)
        qpos = torch.cat((arm, ball), dim=-1)
        self.sim.set_state(qpos, torch.zeros(n, 4, dtype=torch.float64), env_ids, forward=False)


# ------------------------------------------------------------ scripted expert
class PushExpert(ReacherExpert):
    """The reacher's controller, sent behind the ball and then through it toward the
    goal (`_push_target`)."""

    margin = 0.01
    """Gap between fingertip and ball while going around or lining up [m]."""

    def __init__(self, env):
        super().__init__(env)
        model = env.sim.model
        radii = model.geom_size[[env.object_id("geom", g) for g in ("object", "finger")], 0]
        self.clearance = float(radii.sum()) + self.margin

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        target = _push_target(obs, self.clearance)
        tip = obs[:, OBS["tip"]]
        return self._toward(arm_angles(obs), obs[:, OBS["arm_vel"]], target - tip)


def _push_target(obs: torch.Tensor, clearance: float) -> torch.Tensor:
    """Where the push expert sends the fingertip, `[N, 2]`, from observations `[N, 18]`.

    With u the unit vector from the ball to the goal and n its normal, a fingertip
    behind the ball (along u below -clearance / 2, within clearance / 2 of the line)
    pushes toward the point `clearance` short of the goal, which brings the ball's
    centre onto it; one in front of the ball first goes around it on its own side
    (clearance to the side, half of it behind), then to the point `clearance`
    behind the ball.
    """
    tip, ball, goal = (obs[:, OBS[k]] for k in ("tip", "ball", "goal"))
    to_goal = goal - ball
    u = to_goal / torch.linalg.vector_norm(to_goal, dim=-1, keepdim=True).clamp_min(1e-6)
    n = torch.stack((-u[:, 1], u[:, 0]), dim=-1)
    rel = tip - ball
    along, across = (rel * u).sum(-1, keepdim=True), (rel * n).sum(-1, keepdim=True)
    behind = ball - clearance * u
    aligned = (along < -0.5 * clearance) & (across.abs() < 0.5 * clearance)
    push = goal - clearance * u
    side = torch.where(across >= 0, 1.0, -1.0).to(obs.dtype)
    around = ball + side * clearance * n - 0.5 * clearance * u
    in_front = along > -0.5 * clearance
    approach = torch.where(in_front, around, behind)
    return torch.where(aligned, push, approach)


# ------------------------------------------------------------------- tasks
register("push", PushEnv, PushCfg, "wam/Push-v0", expert=PushExpert, sparse=False)
register("push_sparse", PushEnv, PushCfg, "wam/PushSparse-v0", expert=PushExpert, sparse=True)
