"""Physics backends behind one batched protocol (`sim.base.BatchedSim`): MuJoCo on the
CPU (`mujoco_sim`), MuJoCo Warp (`warp_sim`), Isaac Lab's environment (`isaaclab_setup`,
`isaaclab_assets`), domain randomization and seeded streams. The recorded-data stack
is `sim.data`; importing this package loads neither torch nor mujoco."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    # Headless Linux: offscreen rendering through EGL. Must be set before mujoco
    # (and PyOpenGL) are first imported, which is why it lives here.
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

if TYPE_CHECKING:
    from sim.base import BatchedSim

BACKENDS = ("mujoco", "warp", "isaaclab")  # isaaclab: Isaac Lab's own tasks (envs.isaaclab)


def make_sim(backend: str, model_xml, num_worlds: int, **kwargs) -> BatchedSim:
    """Build `num_worlds` worlds of a model on the named backend: an MJCF file or
    string, or a compiled `mujoco.MjModel`."""
    if backend == "mujoco":
        from sim.mujoco_sim import MujocoSim, load_model

        return MujocoSim(load_model(model_xml), num_worlds, **kwargs)
    if backend == "warp":
        from sim.mujoco_sim import load_model
        from sim.warp_sim import WarpSim

        return WarpSim(load_model(model_xml), num_worlds, **kwargs)
    if backend == "isaaclab":
        raise ValueError(
            "backend 'isaaclab' simulates Isaac Lab's own tasks (envs.make('Isaac-...', "
            "backend='isaaclab')), not MJCF models"
        )
    raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "make_sim"]
