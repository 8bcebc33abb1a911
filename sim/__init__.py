"""Physics backends behind one batched protocol (`sim.base.BatchedSim`)."""

import os
import sys

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    # Headless Linux: offscreen rendering through EGL. Must be set before mujoco
    # (and PyOpenGL) are first imported, which is why it lives here.
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from sim.base import BatchedSim  # noqa: E402

BACKENDS = ("mujoco",)


def make_sim(backend: str, model_xml: str, num_worlds: int, **kwargs) -> BatchedSim:
    """Build `num_worlds` worlds of an MJCF model on the named backend."""
    if backend == "mujoco":
        from sim.mujoco_sim import MujocoSim, load_model

        return MujocoSim(load_model(model_xml), num_worlds, **kwargs)
    raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "BatchedSim", "make_sim"]
