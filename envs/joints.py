"""Random joint configurations by the Control Suite's initial-state law, for the
tasks that start from one (walker, hopper, cheetah, ...).

`random_joints(env, n)` draws, from the seeds of the episodes being started (the
env's `uniform` / `normal`, so it is only called inside `_reset_idx`), qpos rows
that start from the model's `qpos0` and then set
- a limited hinge or slide uniformly within its range;
- an unlimited hinge uniformly on [-pi, pi);
- a limited ball joint to a rotation about a uniform random axis by an angle
  uniform in [0, range max);
- an unlimited ball joint uniformly on the unit 3-sphere (a normalised Gaussian);
- the orientation of a free joint to a normalised vector of four uniform [0, 1)
  numbers (the Control Suite's law for it, kept for comparability), its position
  untouched;
and leave unlimited slides at qpos0. With `limited_only=True` only limited hinges
and slides move (the cheetah's law). `start_at_random_joints` starts worlds there
at rest; `start_without_contacts` repeats a draw until no world's bodies touch
(the Control Suite's rejection of interpenetrating starts); `wrap_angle` maps
joint angles recovered from an observation to [-pi, pi).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mujoco
import torch


def random_joints(env, n: int, limited_only: bool = False) -> torch.Tensor:
    """float64 qpos `[n, nq]` of `n` new episodes, drawn as the module docstring says."""
    model = env.sim.model
    qpos = torch.as_tensor(model.qpos0, dtype=torch.float64).repeat(n, 1)
    qpos = qpos.to(env.sim_device)
    hinge, slide, ball, free = (
        int(t)
        for t in (
            mujoco.mjtJoint.mjJNT_HINGE,
            mujoco.mjtJoint.mjJNT_SLIDE,
            mujoco.mjtJoint.mjJNT_BALL,
            mujoco.mjtJoint.mjJNT_FREE,
        )
    )
    for j in range(model.njnt):
        kind, adr = int(model.jnt_type[j]), int(model.jnt_qposadr[j])
        limited = bool(model.jnt_limited[j])
        low, high = (float(v) for v in model.jnt_range[j])
        if kind in (hinge, slide):
            if limited:
                qpos[:, adr] = env.uniform(low, high, n)
            elif kind == hinge and not limited_only:
                qpos[:, adr] = env.uniform(-math.pi, math.pi, n)
        elif limited_only:
            continue
        elif kind == ball:
            qpos[:, adr : adr + 4] = (
                _limited_rotation(env, n, high) if limited else _unit(env.normal((n, 4)))
            )
        elif kind == free:
            qpos[:, adr + 3 : adr + 7] = _unit(env.uniform(0.0, 1.0, (n, 4)))
    return qpos


def start_at_random_joints(env, env_ids: torch.Tensor) -> None:
    """Put the worlds `env_ids` at rest in `random_joints` configurations (inside
    `_reset_idx`)."""
    n = len(env_ids)
    qpos = random_joints(env, n)
    qvel = torch.zeros(n, env.sim.nv, dtype=torch.float64, device=env.sim_device)
    env.sim.set_state(qpos, qvel, env_ids, forward=False)


MAX_REJECTIONS = 10_000


def start_without_contacts(env, env_ids: torch.Tensor, draw: Callable[[int], torch.Tensor]) -> None:
    """Start the worlds `env_ids` at rest in configurations `draw(n)` (qpos `[n, nq]`,
    from the env's episode draws), drawing again for every world that has a contact
    until none has (inside `_reset_idx`, after every other draw: each round draws for
    all rows so that a row's values follow from its own episode seed)."""
    n = len(env_ids)
    sim = env.sim
    pending = torch.ones(n, dtype=torch.bool, device=env.sim_device)
    qvel = torch.zeros(n, sim.nv, dtype=torch.float64, device=env.sim_device)
    for _ in range(MAX_REJECTIONS):
        qpos = draw(n)
        ids = env_ids[pending]
        sim.set_state(qpos[pending], qvel[pending], ids, forward=False)
        sim.forward(ids)  # positions and contacts (the reset refreshes the rest)
        pending[pending.clone()] = sim.contact_counts()[ids.to(env.sim_device)] > 0
        if not pending.any():
            return
    raise RuntimeError(f"{env.name}: no contact-free initial state in {MAX_REJECTIONS} draws")


def wrap_angle(angle: torch.Tensor) -> torch.Tensor:
    """Angles wrapped to [-pi, pi)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)


def _limited_rotation(env, n: int, limit: float) -> torch.Tensor:
    """Quaternions `[n, 4]` of rotations about uniform random axes by angles uniform
    in [0, limit)."""
    axis = _unit(env.normal((n, 3)))
    half = env.uniform(0.0, limit, n)[:, None] / 2
    return torch.cat((torch.cos(half), axis * torch.sin(half)), dim=-1)
