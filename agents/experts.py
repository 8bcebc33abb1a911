"""Scripted expert controllers for every registered task, batched over torch tensors.

An expert is a stateless function of the observation, `[N, obs_dim]` -> `[N, act_dim]`
in [-1, 1], so it works with same-step autoreset and on any device. Its constants come
from the task's MJCF model (`env.sim.model`), not from hand-copied numbers:

- Linear models. `_linearize` takes central differences of one agent step of the
  MuJoCo model itself (`mj_step`, the action held over every physics step) about an
  equilibrium, so the discrete model x' = A x + B a already holds the masses,
  inertias, gear, control range, joint damping, integrator (RK4 for the cart-pole,
  which `mjd_transitionFD` rejects) and timestep. `_dlqr` iterates the discrete
  Riccati equation
      P <- Q + A'P A - A'P B (R + B'P B)^-1 B'P A
  to its fixed point in numpy and returns the gain K = (R + B'P B)^-1 B'P A of the
  balance law a = -K x.

- Cart-pole (`CartpoleExpert`, balance and swing-up, dense and sparse). With the pole
  angle t from upright, hinge inertia I and gravity torque m g l sin t, the pole
  obeys I t'' = m g l sin t - m l cos t x'' for a cart acceleration x'', so its
  energy E = I t'^2 / 2 + m g l (cos t - 1) (0 upright at rest) changes as
      dE/dt = -m l x'' t' cos t.
  Swing-up picks x'' = -k_E (0 - E) sgn(t' cos t) (saturated), which raises E
  monotonically to the upright energy, plus a PD term pulling the cart to the
  centre, and converts x'' into force with the total mass. Near upright (cos t
  above a threshold) the LQR takes over; its weights are the quadratic expansion
  of the dense reward (upright (1 + cos t)/2 ~ 1 - t^2/4, centred, small control,
  small angular velocity), so on balance tasks it simply balances.

- Pendulum (`PendulumExpert`). The torque limit (1 N m) is a fifth of the peak
  gravity torque (m g l = 4.9 N m), so the pole cannot be lifted directly. With
  E = I t'^2 / 2 + m g l (cos t - 1) and dE/dt = u t' - b t'^2, the pump
  u = u_max sgn(t') while E is below the upright energy (and the opposite above)
  adds energy at the largest rate each swing (slightly past the upright energy, to
  cover the damping loss of the last rise). Within 15 degrees of upright, where the
  saturated torque still exceeds gravity's pull, the LQR catches and holds it.

- Reacher (`ReacherExpert`). Fingertip p(q) = s + R(q0) (w + R(q1) f) with the link
  offsets of the model; its Jacobian has columns J0 = perp(R(q0) w + R(q0+q1) f) and
  J1 = perp(R(q0+q1) f), perp(x, y) = (-y, x). The observation holds the
  fingertip-to-target vector d, so the damped least-squares joint step
  dq = J' (J J' + l^2 I)^-1 d (well defined at the stretched-arm singularity) is
  driven by a joint-space PD law u = kp dq - kd q' with torques scaled by the
  actuator gear. Joint damping dominates the arm's tiny inertia, so the PD mostly
  sets a joint velocity proportional to the remaining error.

- Push (`PushExpert`). The reacher's controller with a moving fingertip target:
  with u the unit vector from the ball to the goal, a fingertip lined up behind
  the ball heads for the point one clearance (ball and fingertip radii plus a
  centimetre) short of the goal, pushing the ball's centre onto it; otherwise it
  goes around the ball on its own side and lines up behind it first.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np
import torch

from envs.tasks.push import OBS as PUSH_OBS
from envs.tasks.push import arm_angles as push_arm_angles

__all__ = [
    "EXPERTS",
    "CartpoleExpert",
    "Expert",
    "PendulumExpert",
    "PushExpert",
    "ReacherExpert",
    "make_expert",
]


class Expert:
    """A scripted controller for one task: float32 obs `[N, obs_dim]` -> actions
    `[N, act_dim]` in [-1, 1], float32, on the device of the observations."""

    def __init__(self, env):
        self.task = env.name
        self.action_dim = env.action_dim
        self.observation_dim = env.observation_dim

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        obs = torch.as_tensor(obs)
        if obs.ndim != 2 or obs.shape[1] != self.observation_dim:
            raise ValueError(
                f"{self.task} expert: observations have shape {tuple(obs.shape)}, "
                f"expected (N, {self.observation_dim})"
            )
        # float64 inside: energies near the top are small differences of large terms
        action = self._act(obs.to(torch.float64))
        return action.clamp(-1.0, 1.0).to(torch.float32)

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions `[N, act_dim]` (unclamped, float64) for float64 observations."""
        raise NotImplementedError


# ---------------------------------------------------------------- model helpers
def _physics_steps(env) -> int:
    """Physics steps per agent step: the action is held over all of them."""
    return int(env.cfg.substeps) * int(env.cfg.action_repeat)


def _action_scale(model: mujoco.MjModel) -> np.ndarray:
    """Half-widths of the control ranges: ctrl = scale * action + offset."""
    lo, hi = np.asarray(model.actuator_ctrlrange, dtype=np.float64).T
    limited = np.asarray(model.actuator_ctrllimited, dtype=bool)
    return np.where(limited, (hi - lo) / 2, 1.0)


def _linearize(model: mujoco.MjModel, qpos, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Discrete model x' = A x + B a of `steps` held-action physics steps about the
    rest state at `qpos` with zero action; x = (qpos, qvel) offsets, a = action.

    Central differences of `mj_step` itself (mjd_transitionFD rejects RK4), so A and B
    carry the model's integrator and timestep exactly."""
    if model.nq != model.nv or model.na:
        raise ValueError("linearisation needs hinge/slide joints only and no actuator state")
    nv, nu = model.nv, model.nu
    scale = _action_scale(model)
    data = mujoco.MjData(model)

    def advance(x: np.ndarray, action: np.ndarray) -> np.ndarray:
        mujoco.mj_resetData(model, data)
        data.qpos[:] = qpos + x[:nv]
        data.qvel[:] = x[nv:]
        data.ctrl[:] = scale * action
        for _ in range(steps):
            mujoco.mj_step(model, data)
        return np.concatenate((data.qpos - qpos, data.qvel))

    eps = 1e-6
    x0, a0 = np.zeros(2 * nv), np.zeros(nu)
    a = np.stack(
        [advance(x0 + eps * e, a0) - advance(x0 - eps * e, a0) for e in np.eye(2 * nv)], axis=1
    ) / (2 * eps)
    b = np.stack(
        [advance(x0, a0 + eps * e) - advance(x0, a0 - eps * e) for e in np.eye(nu)], axis=1
    ) / (2 * eps)
    return a, b


def _dlqr(a: np.ndarray, b: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Gain K of a = -K x minimising sum x'Q x + a'R a, by fixed-point iteration of
    the discrete algebraic Riccati equation from P = Q."""
    p = q.copy()
    for _ in range(100_000):
        gain = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        p_next = q + a.T @ p @ (a - b @ gain)
        p_next = (p_next + p_next.T) / 2
        if np.abs(p_next - p).max() <= 1e-10 * max(1.0, np.abs(p_next).max()):
            return np.linalg.solve(r + b.T @ p_next @ b, b.T @ p_next @ a)
        p = p_next
    raise RuntimeError("discrete Riccati iteration did not converge")


def _pole_constants(model: mujoco.MjModel, qpos, dof: int) -> tuple[float, float]:
    """(I, m g l) of the hinge `dof`: its diagonal inertia and the gravity torque with
    the pole horizontal (rotated a quarter turn from `qpos`)."""
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    data.qpos[model.dof_jntid[dof]] += math.pi / 2
    mujoco.mj_forward(model, data)
    inertia = np.zeros((model.nv, model.nv))
    mujoco.mj_fullM(model, data, inertia)
    return float(inertia[dof, dof]), float(abs(data.qfrc_bias[dof]))


def _signum(x: torch.Tensor) -> torch.Tensor:
    """sgn with sgn(0) = 1, so a system at rest on an unstable point still gets pushed."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


# ----------------------------------------------------------------- cart-pole
class CartpoleExpert(Expert):
    """Energy-pumping swing-up with cart centring, LQR balance near upright."""

    switch_cos = 0.65
    """LQR balances where cos(pole angle) exceeds this (within about 50 degrees)."""
    energy_gain = 20.0
    """Cart acceleration per unit of missing pole energy [m/s^2 / J] before saturation."""
    max_accel = 1.0
    """Swing-up cart acceleration from the energy term, as a fraction of the largest."""
    centre_kp, centre_kd = 2.0, 2.0
    """Swing-up cart centring PD gains [1/s^2, 1/s]."""

    def __init__(self, env):
        super().__init__(env)
        model = env.sim.model
        slider, hinge = (model.jnt_dofadr[env.object_id("joint", j)] for j in ("slider", "hinge_1"))
        if (slider, hinge) != (0, 1) or model.nu != 1:
            raise ValueError(f"{self.task}: expected dofs (slider, hinge_1) and one actuator")
        self.inertia, self.mgl = _pole_constants(model, np.zeros(model.nq), hinge)
        rest = np.zeros((model.nv, model.nv))
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        mujoco.mj_fullM(model, data, rest)
        self.total_mass = float(rest[slider, slider])  # cart + pole moving together
        # largest cart force per unit action
        self.force_per_action = float(model.actuator_gear[0, 0] * _action_scale(model)[0])
        a, b = _linearize(model, np.zeros(model.nq), _physics_steps(env))
        dt = model.opt.timestep * _physics_steps(env)
        # stage cost = 1 - (dense reward) to second order (the terms multiply, so
        # their deficits add): upright (1 + cos t)/2 ~ 1 - t^2/4; centred
        # (1 + exp(-ln10 x^2/m^2))/2 ~ 1 - ln10 x^2 / (2 m^2), likewise the small
        # angular velocity; small control (5 - u^2/m^2)/5. The reward ignores the cart
        # velocity; a small weight on it damps the cart's return to the centre.
        cfg = env.cfg
        c_x = math.log(10) / (2 * cfg.rew_centered_margin**2)
        c_w = math.log(10) / (2 * cfg.rew_velocity_margin**2)
        q = dt * np.diag([c_x, 0.25, 0.01, c_w])
        r = dt * np.array([[0.2 / cfg.rew_control_margin**2]])
        self.gain = torch.from_numpy(_dlqr(a, b, q, r))  # [1, 4]

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        x, cos, sin, x_dot, w = obs.unbind(-1)
        angle = torch.atan2(sin, cos)
        state = torch.stack((x, angle, x_dot, w), dim=-1)
        balance = -state @ self.gain.to(obs.device).T

        energy = 0.5 * self.inertia * w**2 + self.mgl * (cos - 1)
        pump = (self.energy_gain * -energy).clamp(-self.max_accel, self.max_accel)
        max_accel = self.force_per_action / self.total_mass
        accel = -pump * max_accel * _signum(w * cos)
        accel = accel - self.centre_kp * x - self.centre_kd * x_dot
        swing = (self.total_mass * accel / self.force_per_action)[:, None]
        return torch.where((cos > self.switch_cos)[:, None], balance, swing)


# ------------------------------------------------------------------ pendulum
class PendulumExpert(Expert):
    """Bang-bang energy pumping, LQR (torque-saturated) balance near upright."""

    switch_cos = math.cos(math.radians(15))
    """LQR may take over inside this angle from upright."""
    energy_margin = 0.2
    """Pump to this much above the upright energy [J] to cover damping on the last rise."""

    def __init__(self, env):
        super().__init__(env)
        model = env.sim.model
        if model.nv != 1 or model.nu != 1:
            raise ValueError(f"{self.task}: expected one hinge and one actuator")
        self.inertia, self.mgl = _pole_constants(model, np.zeros(model.nq), 0)
        a, b = _linearize(model, np.zeros(model.nq), _physics_steps(env))
        dt = model.opt.timestep * _physics_steps(env)
        self.gain = torch.from_numpy(_dlqr(a, b, dt * np.diag([10.0, 0.1]), dt * np.eye(1)))

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        cos, sin, w = obs.unbind(-1)
        angle = torch.atan2(sin, cos)
        state = torch.stack((angle, w), dim=-1)
        balance = -state @ self.gain.to(obs.device).T
        energy = 0.5 * self.inertia * w**2 + self.mgl * (cos - 1)
        pump = _signum(w) * torch.where(energy < self.energy_margin, 1.0, -1.0)
        return torch.where((cos > self.switch_cos)[:, None], balance, pump[:, None])


# ------------------------------------------------------------------- reacher
class ReacherExpert(Expert):
    """Damped least-squares inverse-Jacobian PD toward the target."""

    kp = 40.0
    """Joint torque per radian of joint-step error, in units of the damping [1/s]."""
    kd = 1.0
    """Extra velocity damping, in units of the joint damping."""
    damping_length = 0.05
    """Damped least-squares length l [m]: limits joint steps near singular poses."""

    def __init__(self, env):
        super().__init__(env)
        model = env.sim.model
        links = env._links().numpy()  # shoulder, wrist, fingertip offsets [3, 2]
        self.wrist, self.finger = (torch.from_numpy(v.copy()) for v in links[1:])
        dofs = [model.jnt_dofadr[env.object_id("joint", j)] for j in ("shoulder", "wrist")]
        # gains in torque = damping * velocity: the arm's steady speed per unit torque
        self.joint_damping = torch.from_numpy(model.dof_damping[dofs].copy())
        act_ids = [env.object_id("actuator", a) for a in ("shoulder", "wrist")]
        self.torque_per_action = torch.from_numpy(
            model.actuator_gear[act_ids, 0] * _action_scale(model)[act_ids]
        )

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        return self._toward(obs[:, 0:2], obs[:, 4:6], obs[:, 2:4])

    def _toward(self, q: torch.Tensor, qvel: torch.Tensor, to_target: torch.Tensor):
        """Actions moving the fingertip by `to_target` `[N, 2]` from joint angles and
        velocities `[N, 2]`."""
        q0, q1 = q[:, 0], q[:, 1]
        wrist, finger = self.wrist.to(q.device), self.finger.to(q.device)

        def rotate(angle: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            c, s = torch.cos(angle), torch.sin(angle)
            return torch.stack((c * v[0] - s * v[1], s * v[0] + c * v[1]), dim=-1)

        def perp(v: torch.Tensor) -> torch.Tensor:
            return torch.stack((-v[:, 1], v[:, 0]), dim=-1)

        forearm = rotate(q0 + q1, finger)
        jac = torch.stack((perp(rotate(q0, wrist) + forearm), perp(forearm)), dim=-1)  # [N,2,2]
        jjt = jac @ jac.transpose(1, 2)
        eye = torch.eye(2, dtype=q.dtype, device=q.device)
        step = jac.transpose(1, 2) @ torch.linalg.solve(
            jjt + self.damping_length**2 * eye, to_target[:, :, None]
        )
        damping = self.joint_damping.to(q.device)
        torque = damping * (self.kp * step[:, :, 0] - self.kd * qvel)
        return torque / self.torque_per_action.to(q.device)


# ---------------------------------------------------------------------- push
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
        tip = obs[:, PUSH_OBS["tip"]]
        return self._toward(push_arm_angles(obs), obs[:, PUSH_OBS["arm_vel"]], target - tip)


def _push_target(obs: torch.Tensor, clearance: float) -> torch.Tensor:
    """Where the push expert sends the fingertip, `[N, 2]`, from observations `[N, 18]`.

    With u the unit vector from the ball to the goal and n its normal, a fingertip
    behind the ball (along u below -clearance / 2, within clearance / 2 of the line)
    pushes toward the point `clearance` short of the goal, which brings the ball's
    centre onto it; one in front of the ball first goes around it on its own side
    (clearance to the side, half of it behind), then to the point `clearance`
    behind the ball.
    """
    tip, ball, goal = (obs[:, PUSH_OBS[k]] for k in ("tip", "ball", "goal"))
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


# ------------------------------------------------------------------- registry
EXPERTS: dict[str, type[Expert]] = {
    "cartpole_balance": CartpoleExpert,
    "cartpole_balance_sparse": CartpoleExpert,
    "cartpole_swingup": CartpoleExpert,
    "cartpole_swingup_sparse": CartpoleExpert,
    "pendulum_swingup": PendulumExpert,
    "reacher_easy": ReacherExpert,
    "reacher_hard": ReacherExpert,
    "push": PushExpert,
    "push_sparse": PushExpert,
}


def make_expert(env) -> Expert:
    """The scripted expert of `env`'s task (looked up by `env.name`)."""
    if env.name not in EXPERTS:
        raise ValueError(
            f"no scripted expert for task {env.name!r}; tasks with experts: "
            f"{', '.join(sorted(EXPERTS))}"
        )
    return EXPERTS[env.name](env)
