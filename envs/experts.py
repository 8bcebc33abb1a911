"""Scripted experts: the base class every task's expert derives from, the model
helpers they are built with, and `make_expert`, which finds a task's expert in the
registry (each task module registers its expert beside its config).

An expert is a stateless function of the observation, `[N, obs_dim]` -> `[N, act_dim]`
in [-1, 1], so it works with same-step autoreset and on any device. Its constants come
from the task's MJCF model (`env.sim.model`), not from hand-copied numbers.

Linear models: `linearize` takes central differences of one agent step of the
MuJoCo model itself (`mj_step`, the action held over every physics step) about an
equilibrium, so the discrete model x' = A x + B a already holds the masses,
inertias, gear, control range, joint damping, integrator (RK4 for the cart-pole,
which `mjd_transitionFD` rejects) and timestep. `dlqr` iterates the discrete
Riccati equation
      P <- Q + A'P A - A'P B (R + B'P B)^-1 B'P A
to its fixed point in numpy and returns the gain K = (R + B'P B)^-1 B'P A of the
balance law a = -K x.
"""

from __future__ import annotations

import hashlib
import math

import mujoco
import mujoco.rollout
import numpy as np
import torch

from envs.registry import list_tasks, spec


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
def physics_steps(env) -> int:
    """Physics steps per agent step: the action is held over all of them."""
    return int(env.cfg.substeps) * int(env.cfg.action_repeat)


def action_scale(model: mujoco.MjModel) -> np.ndarray:
    """Half-widths of the control ranges: ctrl = scale * action + offset."""
    lo, hi = np.asarray(model.actuator_ctrlrange, dtype=np.float64).T
    limited = np.asarray(model.actuator_ctrllimited, dtype=bool)
    return np.where(limited, (hi - lo) / 2, 1.0)


def action_offset(model: mujoco.MjModel) -> np.ndarray:
    """Midpoints of the control ranges: ctrl = scale * action + offset."""
    lo, hi = np.asarray(model.actuator_ctrlrange, dtype=np.float64).T
    limited = np.asarray(model.actuator_ctrllimited, dtype=bool)
    return np.where(limited, (hi + lo) / 2, 0.0)


def linearize(model: mujoco.MjModel, qpos, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Discrete model x' = A x + B a of `steps` held-action physics steps about the
    rest state at `qpos` with zero action; x = (qpos, qvel) offsets, a = action.

    Central differences of `mj_step` itself (mjd_transitionFD rejects RK4), so A and B
    carry the model's integrator and timestep exactly."""
    if model.nq != model.nv or model.na:
        raise ValueError("linearisation needs hinge/slide joints only and no actuator state")
    nv, nu = model.nv, model.nu
    scale = action_scale(model)
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


def dlqr(a: np.ndarray, b: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
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


def pole_constants(model: mujoco.MjModel, qpos, dof: int) -> tuple[float, float]:
    """(I, m g l) of the hinge `dof`: its diagonal inertia and the gravity torque with
    the pole horizontal (rotated a quarter turn from `qpos`)."""
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    data.qpos[model.dof_jntid[dof]] += math.pi / 2
    mujoco.mj_forward(model, data)
    inertia = np.zeros((model.nv, model.nv))
    mujoco.mj_fullM(model, data, inertia)
    return float(inertia[dof, dof]), float(abs(data.qfrc_bias[dof]))


class SimulatorPlanner:
    """Cross-entropy planning on the task's own MuJoCo model, for experts whose control
    law is a search rather than a formula: from each world's physics state, `samples`
    action sequences of `horizon` agent steps (piecewise linear through `knots`, held
    over each agent step's physics steps) are rolled out with `mujoco.rollout`, scored,
    and the `elites` best refit the sampling distribution for `iterations` rounds; the
    first action of the final mean is returned.

    Stateless: every call starts from the same zero-mean distribution with a generator
    seeded by `seed` and the states themselves, so the same states give the same
    actions while successive states draw fresh samples."""

    def __init__(
        self,
        model: mujoco.MjModel,
        physics_steps: int,
        *,
        horizon: int = 12,
        knots: int = 3,
        samples: int = 32,
        iterations: int = 2,
        elites: int = 6,
        seed: int = 0,
    ):
        if model.na or not 2 <= knots <= horizon or not 1 <= elites <= samples:
            raise ValueError(
                "planner needs no actuator state, 2 <= knots <= horizon, elites <= samples"
            )
        self.model = model
        self.physics_steps = physics_steps
        self.horizon, self.knots, self.samples = horizon, knots, samples
        self.iterations, self.elites, self.seed = iterations, elites, seed
        self.scale, self.offset = action_scale(model), action_offset(model)
        self.data = mujoco.MjData(model)
        self.state_size = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        # piecewise-linear interpolation from knots to agent steps
        t = np.linspace(0, knots - 1, horizon)
        self._left = np.floor(t).astype(int).clip(0, knots - 2)
        self._weight = (t - self._left)[None, :, None]

    def qpos(self, states: np.ndarray) -> np.ndarray:
        """Joint positions of rolled-out states `[..., state]` (time comes first)."""
        return states[..., 1 : 1 + self.model.nq]

    def plan(self, qpos: np.ndarray, qvel: np.ndarray, score) -> np.ndarray:
        """First actions `[N, nu]` in [-1, 1] from physics states `[N, nq]`, `[N, nv]`.
        `score(states)` maps the states after each agent step, `[N, samples, horizon,
        state]`, to the sequences' scores `[N, samples]` (higher is better)."""
        n, nu, k = len(qpos), self.model.nu, self.knots
        start = np.empty((n, self.state_size))
        for i in range(n):
            mujoco.mj_resetData(self.model, self.data)
            self.data.qpos[:], self.data.qvel[:] = qpos[i], qvel[i]
            mujoco.mj_getState(self.model, self.data, start[i], mujoco.mjtState.mjSTATE_FULLPHYSICS)
        start = np.repeat(start, self.samples, axis=0)
        digest = hashlib.blake2b(start.tobytes(), digest_size=16).digest()
        rng = np.random.default_rng([self.seed, *np.frombuffer(digest, dtype=np.uint32)])
        mean, std = np.zeros((n, k, nu)), np.ones((n, k, nu))
        for _ in range(self.iterations):
            noise = rng.standard_normal((n, self.samples, k, nu))
            knots = np.clip(mean[:, None] + std[:, None] * noise, -1.0, 1.0)
            knots[:, 0] = np.clip(mean, -1.0, 1.0)  # the current mean is always a candidate
            actions = self._interpolate(knots.reshape(n * self.samples, k, nu))
            control = np.repeat(actions * self.scale + self.offset, self.physics_steps, axis=1)
            states, _ = mujoco.rollout.rollout(self.model, self.data, start, control)
            after = states[:, self.physics_steps - 1 :: self.physics_steps]
            scores = np.nan_to_num(
                score(after.reshape(n, self.samples, self.horizon, -1)), nan=-np.inf
            )
            best = np.argsort(-scores, axis=1)[:, : self.elites]
            elite = np.take_along_axis(knots, best[:, :, None, None], axis=1)
            mean, std = elite.mean(1), elite.std(1) + 0.05
        return np.clip(mean[:, 0], -1.0, 1.0)

    def _interpolate(self, knots: np.ndarray) -> np.ndarray:
        """Actions `[B, horizon, nu]` through knots `[B, knots, nu]`."""
        left, w = self._left, self._weight
        return knots[:, left] * (1 - w) + knots[:, left + 1] * w


def signum(x: torch.Tensor) -> torch.Tensor:
    """sgn with sgn(0) = 1, so a system at rest on an unstable point still gets pushed."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


# ----------------------------------------------------------------- cart-pole


def tasks_with_experts() -> list[str]:
    """Registered tasks that have a scripted expert, sorted."""
    return [name for name in list_tasks() if spec(name).expert is not None]


def make_expert(env) -> Expert:
    """The scripted expert of `env`'s task (looked up by `env.name` in the registry)."""
    expert = spec(env.name).expert if env.name in list_tasks() else None
    if expert is None:
        raise ValueError(
            f"no scripted expert for task {env.name!r}; tasks with experts: "
            f"{', '.join(tasks_with_experts())}"
        )
    return expert(env)
