"""The batched physics protocol that every backend implements.

A backend holds N worlds of one model. Tasks in `envs/` read and write the
state through the tensors below and never touch backend internals, so a task
written once runs on every backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch


class BatchedSim(ABC):
    """N worlds of one model, stepped together.

    `qpos`, `qvel` and `ctrl` (all `[N, ...]`, float64) are live views of the
    worlds' state: a write is the state the next `step` starts from. After a
    direct write, `forward(env_ids)` refreshes the derived fields (body frames)
    that tasks read.
    """

    num_worlds: int
    nq: int
    nv: int
    nu: int
    timestep: float  # [s] one physics step
    substeps: int  # physics steps per `step` call
    qpos: torch.Tensor  # [N, nq]
    qvel: torch.Tensor  # [N, nv]
    ctrl: torch.Tensor  # [N, nu]

    @property
    def dt(self) -> float:
        """Seconds advanced by one `step` (timestep * substeps)."""
        return self.timestep * self.substeps

    @property
    def ctrl_range(self) -> torch.Tensor:
        """`[nu, 2]` lower and upper control limits of the actuators."""
        raise NotImplementedError

    @abstractmethod
    def step(self) -> torch.Tensor:
        """Advance every world by `substeps` physics steps under `ctrl`.

        Returns a bool `[N]` mask of worlds whose physics diverged during the
        step (non-finite state, or the engine's own instability reset). Their
        state is undefined until they are reset.
        """

    @abstractmethod
    def settle(self, env_ids: torch.Tensor, nstep: int) -> None:
        """Advance only the worlds `env_ids` by `nstep` physics steps under their `ctrl`
        (an initial-state law that lets a body come to rest); the others keep their
        state. Derived fields are current afterwards, as after `step`."""

    @abstractmethod
    def forward(self, env_ids: torch.Tensor | None = None, *, acceleration: bool = False) -> None:
        """Recompute derived fields (body frames, sensors) at the current state.
        Acceleration-stage sensors (accelerometers, forces, touch) keep the values of the
        last physics step, as after a step; `acceleration=True` recomputes them at the
        current state too, as `mj_forward` does (a new episode's first observation)."""

    @abstractmethod
    def contact_counts(self) -> torch.Tensor:
        """Number of contacts of every world at its current state (as of the last
        `forward`, `step` or `settle`), int64 `[N]`: initial-state laws that reject
        interpenetrating configurations read it."""

    @abstractmethod
    def data(self, name: str) -> torch.Tensor:
        """A derived field of every world, `[N, ...]` (e.g. `xmat`, `geom_xpos`)."""

    @abstractmethod
    def object_id(self, kind: str, name: str) -> int:
        """Index of a named model object (`kind`: body, geom, joint, ...)."""

    @abstractmethod
    def reset_worlds(self, env_ids: torch.Tensor | None = None) -> None:
        """Put the given worlds (all if None) back to the model's default state."""

    @abstractmethod
    def set_state(
        self, qpos: torch.Tensor, qvel: torch.Tensor, env_ids: torch.Tensor | None = None
    ) -> None:
        """Write `qpos` `[n, nq]` and `qvel` `[n, nv]` into the given worlds."""

    @abstractmethod
    def render(
        self,
        env_ids: Sequence[int] | torch.Tensor | None = None,
        *,
        width: int = 64,
        height: int = 64,
        camera: int | str = 0,
        scene_hook: Callable | None = None,
    ) -> torch.Tensor:
        """Offscreen RGB frames of the given worlds, uint8 `[n, height, width, 3]`."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release threads and rendering contexts."""
