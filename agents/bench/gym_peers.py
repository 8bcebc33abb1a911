"""The tasks written as a Gymnasium user writes a MuJoCo env: peer (c) of `bench env`.

Each is a subclass of Gymnasium's own `gymnasium.envs.mujoco.MujocoEnv` on the
task's MJCF (one MjData, `frame_skip` physics steps per control step), with the
task's observation, reward and start distribution written in plain Python and
numpy; `make_gym_env` puts one under `TimeLimit` at the task's episode length. A
test checks each against the batched env step by step, so the peer steps the same
model the same way.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.wrappers import TimeLimit

import envs
from envs.base import ASSETS
from envs.tasks.cartpole import CartpoleEnv
from envs.tasks.pendulum import PendulumEnv
from envs.tasks.push import PushEnv
from envs.tasks.reacher import ReacherEnv


def np_tolerance(
    x: float,
    bounds: tuple[float, float] = (0.0, 0.0),
    margin: float = 0.0,
    sigmoid: str = "gaussian",
    value_at_margin: float = 0.1,
) -> float:
    """`envs.rewards.tolerance` of one float, for the two sigmoids the tasks use."""
    lower, upper = bounds
    if lower <= x <= upper:
        return 1.0
    if margin == 0:
        return 0.0
    d = (lower - x if x < lower else x - upper) / margin
    if sigmoid == "gaussian":
        return math.exp(-0.5 * (d * math.sqrt(-2 * math.log(value_at_margin))) ** 2)
    if sigmoid == "quadratic":
        d *= math.sqrt(1 - value_at_margin)
        return 1 - d * d if abs(d) < 1 else 0.0
    raise ValueError(f"np_tolerance has no sigmoid {sigmoid!r}")


class TaskMujocoEnv(MujocoEnv):
    """One env of a task written as a Gymnasium user writes a MuJoCo env (peer (c)).

    A subclass of Gymnasium's own `MujocoEnv` on the task's MJCF: one MjData, `step`
    is `do_simulation(action, frame_skip)` (`mj_step` `frame_skip` = the task's physics
    steps per control step, then Gymnasium's `mj_rnePostConstraint`), and the task's
    own observation (not Gymnasium's qpos + qvel convention: the same vector as the
    batched env's, in float64) computed with numpy / math from `qpos`, `qvel` and the
    model, and the task's reward formula computed from that observation (and `ctrl`);
    initial states drawn from the task's distributions with `self.np_random`. No terminal
    states; `make_gym_env` adds `TimeLimit` at the task's episode length. Actions are
    the actuators' controls (every task's control range is [-1, 1], where the batched
    env's action scaling is the identity). `render_mode` None: no renderer is made.
    Subclasses: one per task family, chosen by `make_gym_env` from the task's class.
    """

    obs_dim: int

    def __init__(self, task: str, render_mode: str | None = None):
        self.task = task
        self.task_cfg = envs.make_cfg(task)
        model_path = str(ASSETS / envs.spec(task).env_cls.model_file)
        space = gym.spaces.Box(-np.inf, np.inf, shape=(self.obs_dim,), dtype=np.float64)
        MujocoEnv.__init__(self, model_path, self.task_cfg.substeps, space, render_mode=render_mode)
        self.metadata = {
            "render_modes": ["human", "rgb_array", "depth_array"],
            "render_fps": int(np.round(1.0 / self.dt)),
        }

    def step(self, action):
        self.do_simulation(action, self.frame_skip)
        obs = self._get_obs()
        return obs, self._get_reward(obs), False, False, {}

    def _get_obs(self) -> np.ndarray:
        """The task's observation at the current state, float64 `[obs_dim]`."""
        raise NotImplementedError

    def _get_reward(self, obs: np.ndarray) -> float:
        """The task's reward of the step just taken, at the state `obs` observes."""
        raise NotImplementedError


class CartpoleMujocoEnv(TaskMujocoEnv):
    """Cart-pole: (cart x, cos, sin, cart velocity, pole angular velocity)."""

    obs_dim = 5

    def _get_obs(self):
        (x, angle), (x_dot, w) = self.data.qpos.tolist(), self.data.qvel.tolist()
        return np.array((x, math.cos(angle), math.sin(angle), x_dot, w))

    def _get_reward(self, obs):
        cfg = self.task_cfg
        cart, cos, _, _, w = obs.tolist()
        if cfg.sparse:
            return np_tolerance(cart, cfg.cart_bounds) * np_tolerance(cos, cfg.cos_bounds)
        upright = (cos + 1) / 2
        centered = (1 + np_tolerance(cart, margin=cfg.rew_centered_margin)) / 2
        control = np_tolerance(
            float(self.data.ctrl[0]),
            margin=cfg.rew_control_margin,
            value_at_margin=0.0,
            sigmoid="quadratic",
        )
        small_control = (4 + control) / 5
        small_velocity = (1 + np_tolerance(w, margin=cfg.rew_velocity_margin)) / 2
        return upright * small_control * small_velocity * centered

    def reset_model(self):
        cfg, rng = self.task_cfg, self.np_random
        if cfg.swing_up:
            qpos = np.array((0.0, math.pi)) + cfg.swingup_noise * rng.standard_normal(2)
        else:
            qpos = rng.uniform(
                (-cfg.balance_cart_range, -cfg.balance_angle_range),
                (cfg.balance_cart_range, cfg.balance_angle_range),
            )
        self.set_state(qpos, cfg.velocity_noise * rng.standard_normal(2))
        return self._get_obs()


class PendulumMujocoEnv(TaskMujocoEnv):
    """Pendulum: (cos, sin, angular velocity); reward 1 within the upright angle."""

    obs_dim = 3

    def __init__(self, task: str, render_mode: str | None = None):
        super().__init__(task, render_mode)
        self.cos_bound = math.cos(math.radians(self.task_cfg.upright_angle))

    def _get_obs(self):
        angle, w = float(self.data.qpos[0]), float(self.data.qvel[0])
        return np.array((math.cos(angle), math.sin(angle), w))

    def _get_reward(self, obs):
        return np_tolerance(float(obs[0]), (self.cos_bound, 1.0))

    def reset_model(self):
        self.set_state(self.np_random.uniform(-math.pi, math.pi, 1), np.zeros(1))
        return self._get_obs()


class PlanarArmMujocoEnv(TaskMujocoEnv):
    """The reacher's two-link arm: fingertip from the joint angles in closed form."""

    def __init__(self, task: str, render_mode: str | None = None):
        super().__init__(task, render_mode)
        m = self.model
        tip = m.body_pos[m.body("finger").id] + m.geom_pos[m.geom("finger").id]
        links = (m.body_pos[m.body("arm").id], m.body_pos[m.body("hand").id], tip)
        # shoulder, wrist, fingertip offsets (x, y), as floats for scalar arithmetic
        self.links = tuple(float(v) for link in links for v in link[:2])
        self.wrist_range = tuple(float(v) for v in m.jnt_range[m.joint("wrist").id])
        self.finger_radius = float(m.geom_size[m.geom("finger").id, 0])

    def fingertip(self, q0: float, q1: float) -> tuple[float, float]:
        """Fingertip (x, y) at shoulder and wrist angles `q0`, `q1`."""
        sx, sy, wx, wy, fx, fy = self.links
        c0, s0, c01, s01 = math.cos(q0), math.sin(q0), math.cos(q0 + q1), math.sin(q0 + q1)
        return (
            sx + c0 * wx - s0 * wy + c01 * fx - s01 * fy,
            sy + s0 * wx + c0 * wy + s01 * fx + c01 * fy,
        )

    def arm_pose(self) -> np.ndarray:
        rng = self.np_random
        return np.array((rng.uniform(-math.pi, math.pi), rng.uniform(*self.wrist_range)))


class ReacherMujocoEnv(PlanarArmMujocoEnv):
    """Reacher: (joint angles, target - fingertip, joint velocities); reward 1 on touch."""

    obs_dim = 6

    def __init__(self, task: str, render_mode: str | None = None):
        super().__init__(task, render_mode)
        self.target = self.model.geom("target").id

    def _get_obs(self):
        (q0, q1), (w0, w1) = self.data.qpos.tolist(), self.data.qvel.tolist()
        tx, ty = self.model.geom_pos[self.target, :2].tolist()
        x, y = self.fingertip(q0, q1)
        return np.array((q0, q1, tx - x, ty - y, w0, w1))

    def _get_reward(self, obs):
        radii = float(self.model.geom_size[self.target, 0]) + self.finger_radius
        return float(math.hypot(obs[2], obs[3]) <= radii)

    def reset_model(self):
        rng, cfg = self.np_random, self.task_cfg
        self.model.geom_size[self.target, 0] = cfg.target_size
        qpos = self.arm_pose()
        angle, distance = rng.uniform(0, 2 * math.pi), rng.uniform(*cfg.target_distance)
        self.model.geom_pos[self.target, :2] = (
            distance * math.sin(angle),
            distance * math.cos(angle),
        )
        self.set_state(qpos, np.zeros(2))
        return self._get_obs()


class PushMujocoEnv(PlanarArmMujocoEnv):
    """Push: push's 18 observations (see `envs.tasks.push.OBS`) and its reward."""

    obs_dim = 18

    def __init__(self, task: str, render_mode: str | None = None):
        super().__init__(task, render_mode)
        self.goal = self.model.geom("goal").id
        self.touch = float(self.model.geom_size[self.model.geom("object").id, 0])
        self.touch += self.finger_radius

    def _get_obs(self):
        q0, q1, bx, by = self.data.qpos.tolist()
        w0, w1, vx, vy = self.data.qvel.tolist()
        gx, gy = self.model.geom_pos[self.goal, :2].tolist()
        x, y = self.fingertip(q0, q1)
        arm = (math.cos(q0), math.sin(q0), math.cos(q1), math.sin(q1))
        return np.array(
            (*arm, w0, w1, x, y, bx, by, vx, vy, gx, gy, bx - x, by - y, gx - bx, gy - by)
        )

    def _get_reward(self, obs):
        cfg = self.task_cfg
        to_goal = math.hypot(obs[16], obs[17])
        if cfg.sparse:
            return float(to_goal <= cfg.goal_radius)
        near_goal = np_tolerance(to_goal, (0.0, cfg.goal_radius), margin=cfg.goal_margin)
        to_ball = math.hypot(obs[14], obs[15])
        near_ball = np_tolerance(to_ball, (0.0, self.touch + 0.005), margin=0.1)
        return 0.8 * near_goal + 0.2 * near_ball

    def reset_model(self):
        rng, cfg = self.np_random, self.task_cfg
        arm = self.arm_pose()
        ball_angle, ball_r = rng.uniform(0, 2 * math.pi), rng.uniform(*cfg.start_distance)
        side = -1.0 if rng.uniform() < 0.5 else 1.0
        goal_angle = ball_angle + side * rng.uniform(*cfg.goal_angle)
        goal_r = rng.uniform(*cfg.start_distance)
        ball = ball_r * np.array((math.cos(ball_angle), math.sin(ball_angle)))
        self.model.geom_pos[self.goal, :2] = (
            goal_r * math.cos(goal_angle),
            goal_r * math.sin(goal_angle),
        )
        self.set_state(np.concatenate((arm, ball)), np.zeros(4))
        return self._get_obs()


GYM_ENVS: dict[type, type[TaskMujocoEnv]] = {
    CartpoleEnv: CartpoleMujocoEnv,
    PendulumEnv: PendulumMujocoEnv,
    ReacherEnv: ReacherMujocoEnv,
    PushEnv: PushMujocoEnv,
}
"""Batched task class -> its plain Gymnasium MujocoEnv (peer (c))."""


def gym_env_class(task: str) -> type[TaskMujocoEnv] | None:
    """The plain Gymnasium env of `task`'s class, or None if none is written for it (a
    subclass may change the observation, reward or episode end, so it gets none)."""
    return GYM_ENVS.get(envs.spec(task).env_cls)


def make_gym_env(task: str) -> gym.Env:
    """`task` as a single Gymnasium env: its `TaskMujocoEnv` under `TimeLimit` at the
    task's episode length (what `gym.make(..., max_episode_steps=...)` adds)."""
    cls = gym_env_class(task)
    if cls is None:
        raise ValueError(f"{task}: no plain Gymnasium MujocoEnv is written for this task")
    return TimeLimit(cls(task), max_episode_steps=envs.make_cfg(task).episode_length)
