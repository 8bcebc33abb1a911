"""Domain randomization: per-episode physics parameters, observation and action noise,
action delay.

Each episode draws its own values from its seed (`sim.rng`, one substream per
parameter, so enabling one term leaves the draws of the others unchanged).
Physical parameters are scales of the model's nominal values, drawn per body,
dof, geom or actuator, and written into that world's own copy of the model
field (`BatchedSim.model_field`), followed by `mj_setConst` so that derived
constants follow. The env applies the noise and the delay (`envs.base`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from sim import rng


@dataclass
class RandomizationCfg:
    """Per-episode domain randomization; (1, 1) scales, 0 std and (0, 0) delay are off."""

    # physics: each a (low, high) range of a uniform scale of the nominal value
    mass_scale: tuple[float, float] = (1.0, 1.0)
    """Scale of each body's mass and rotational inertia (its density)."""
    damping_scale: tuple[float, float] = (1.0, 1.0)
    """Scale of each degree of freedom's joint damping."""
    friction_scale: tuple[float, float] = (1.0, 1.0)
    """Scale of each geom's sliding friction."""
    actuator_gain_scale: tuple[float, float] = (1.0, 1.0)
    """Scale of each actuator's gear (force or torque per unit control)."""
    gravity_scale: tuple[float, float] = (1.0, 1.0)
    """Scale of the gravity vector, one per episode."""
    # observations and actions
    obs_noise_std: float = 0.0
    """Std of the Gaussian noise added to every observation entry."""
    action_noise_std: float = 0.0
    """Std of the Gaussian noise added to every action (in [-1, 1] units) before clipping."""
    action_delay: tuple[int, int] = (0, 0)
    """(min, max) agent steps between an action and its application, per episode."""

    def __post_init__(self) -> None:
        for name in _PHYSICS:
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ValueError(
                    f"randomization {name} must satisfy 0 < low <= high, got ({low}, {high})"
                )
        for name in ("obs_noise_std", "action_noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"randomization {name} must be >= 0")
        low, high = self.action_delay
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
            raise ValueError(
                f"randomization action_delay must be integers 0 <= min <= max, got {low, high}"
            )

    @property
    def physics(self) -> bool:
        return any(tuple(getattr(self, n)) != (1.0, 1.0) for n in _PHYSICS)


# parameter -> (model fields it scales, scale shared by each field's rows of one object)
_PHYSICS = {
    "mass_scale": ("body_mass", "body_inertia"),
    "damping_scale": ("dof_damping",),
    "friction_scale": ("geom_friction",),
    "actuator_gain_scale": ("actuator_gear",),
    "gravity_scale": ("opt.gravity",),
}


def _stream(name: str) -> int:
    return zlib.crc32(name.encode())


class DomainRandomizer:
    """Samples and writes one episode's physical parameters into a `BatchedSim`."""

    def __init__(self, cfg: RandomizationCfg, sim):
        self.cfg, self.sim = cfg, sim
        self.active = [n for n in _PHYSICS if tuple(getattr(cfg, n)) != (1.0, 1.0)]
        self.nominal: dict[str, torch.Tensor] = {}
        for name in self.active:
            for field in _PHYSICS[name]:
                self.nominal[field] = sim.model_field(field)[0].clone()  # on the sim's device
        n = sim.num_worlds
        self.params: dict[str, torch.Tensor] = {
            name: torch.ones(n, *self._count(name), dtype=torch.float64) for name in self.active
        }
        if cfg.action_delay != (0, 0):
            self.params["action_delay"] = torch.zeros(n, dtype=torch.long)

    def _count(self, name: str) -> tuple[int, ...]:
        field = _PHYSICS[name][0]
        return () if field == "opt.gravity" else (len(self.nominal[field]),)

    def sample(self, env_ids: torch.Tensor, seeds: torch.Tensor) -> None:
        """Draw the parameters of the episodes with `seeds` starting in `env_ids`."""
        for name in self.active:
            low, high = getattr(self.cfg, name)
            shape = self._count(name)
            k = shape[0] if shape else 1
            u = rng.uniform(rng.substream(seeds, _stream(name)), 0, k).reshape(-1, *shape)
            scale = low + (high - low) * u
            self.params[name][env_ids] = scale
            for field in _PHYSICS[name]:
                value = self.sim.model_field(field)
                nominal = self.nominal[field]
                s = scale.to(value)  # float64 on the mujoco backend, float32 on warp
                if field in ("geom_friction", "actuator_gear"):
                    # the first column only: sliding friction (torsional and rolling
                    # stay), the gear's gain (the rest is its transmission axis)
                    value[env_ids, :, 0] = nominal[:, 0] * s
                elif field == "opt.gravity":
                    value[env_ids] = nominal * s[:, None]
                elif nominal.dim() == 1:
                    value[env_ids] = nominal * s
                else:
                    value[env_ids] = nominal * s[..., None]
        if self.active:
            self.sim.set_const(env_ids)
        if "action_delay" in self.params:
            low, high = self.cfg.action_delay
            u = rng.uniform(rng.substream(seeds, _stream("action_delay")), 0, 1)[:, 0]
            self.params["action_delay"][env_ids] = low + (u * (high - low + 1)).long()

    def episode_params(self, env: int) -> dict[str, list]:
        """The parameters of env `env`'s current episode, as plain lists (for attrs)."""
        return {f"rand_{k}": v[env].tolist() for k, v in self.params.items()}
