"""Physics backends behind one batched protocol (`sim.base.BatchedSim`)."""

from sim.base import BatchedSim

BACKENDS = ("mujoco",)


def make_sim(backend: str, model_xml: str, num_worlds: int, **kwargs) -> BatchedSim:
    """Build `num_worlds` worlds of an MJCF model on the named backend."""
    if backend == "mujoco":
        from sim.mujoco_sim import MujocoSim, load_model

        return MujocoSim(load_model(model_xml), num_worlds, **kwargs)
    raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "BatchedSim", "make_sim"]
