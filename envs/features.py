"""Observation features for learners: a task's unbounded angles seen as (cos, sin).

Some tasks observe a joint angle as it is, without bounds (the reacher's shoulder, the
cheetah's and the hopper's body pitch): over a run it spans many turns, so a network
fed the raw number (standardised or symlog-squashed) must learn a periodic function of
an input whose scale keeps growing. A task lists those observation entries in
`BatchedEnv.periodic_obs`; world models and agents that take the hint feed

    angle_features(obs, periodic) = (obs without the periodic entries, cos, sin)

to their networks instead (`obs_dim + len(periodic)` numbers), and predict an angle's
change wrapped into [-pi, pi) (`wrap_angle`). The observation itself stays the task's
own (equal to the Control Suite's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from envs.registry import spec


def periodic_obs(task: str | None) -> tuple[int, ...]:
    """The observation entries of `task` that are unbounded angles (none for a task that
    is not registered here, such as an Isaac Lab task)."""
    try:
        env_cls = spec(task).env_cls
    except ValueError:
        return ()
    return tuple(int(i) for i in env_cls.periodic_obs)


def feature_dim(obs_dim: int, periodic: Sequence[int]) -> int:
    """Length of `angle_features` of an `obs_dim` observation."""
    return obs_dim + len(periodic)


def angle_features(
    obs: torch.Tensor, periodic: Sequence[int], angles_of: torch.Tensor | None = None
) -> torch.Tensor:
    """`obs` `[..., obs_dim]` with its `periodic` entries replaced by their cosines and
    sines (the other entries first, in order), `[..., obs_dim + len(periodic)]`; `obs`
    itself when there are none. With `angles_of` (the raw observations of which `obs` is
    an entry-by-entry transform, such as a standardised copy) the cosines and sines are
    of its angles."""
    if not periodic:
        return obs
    angles = list(periodic)
    keep = [i for i in range(obs.shape[-1]) if i not in set(angles)]
    theta = (obs if angles_of is None else angles_of)[..., angles]
    return torch.cat((obs[..., keep], torch.cos(theta), torch.sin(theta)), -1)


def wrap_angle(x: torch.Tensor) -> torch.Tensor:
    """Angles `x` wrapped into [-pi, pi)."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi
