"""Smooth bounded rewards as pure torch functions (the DeepMind Control Suite's shapes).

`tolerance(x, bounds, margin)` is 1 inside `bounds` and decays with the distance
to the nearest bound, reaching `value_at_margin` at distance `margin`. The
sigmoid sets the decay; each one below is scaled so that f(0) = 1 and
f(1) = value_at_margin.

`SuccessBonus(env, b)` wraps a batched env of a task with a goal: its reward plus
b at every step that ends at the goal (`info["at_goal"]`), for training that
should reach the goal and stay there rather than earn the shaped reward alone.
"""

from __future__ import annotations

import math

import torch

SIGMOIDS = (
    "gaussian",
    "hyperbolic",
    "long_tail",
    "reciprocal",
    "cosine",
    "linear",
    "quadratic",
    "tanh_squared",
)


def _sigmoid(d: torch.Tensor, value_at_1: float, kind: str) -> torch.Tensor:
    """A decreasing f(d) with f(0) = 1 and f(1) = value_at_1, for d >= 0."""
    bounded = kind in ("cosine", "linear", "quadratic")
    if not (0 <= value_at_1 < 1 if bounded else 0 < value_at_1 < 1):
        raise ValueError(f"value_at_margin={value_at_1} is out of range for sigmoid {kind!r}")
    if kind == "gaussian":  # exp(-(d s)^2 / 2)
        s = math.sqrt(-2 * math.log(value_at_1))
        return torch.exp(-0.5 * (d * s) ** 2)
    if kind == "hyperbolic":  # sech(d s)
        s = math.acosh(1 / value_at_1)
        return 1 / torch.cosh(d * s)
    if kind == "long_tail":  # 1 / (1 + (d s)^2)
        s = math.sqrt(1 / value_at_1 - 1)
        return 1 / ((d * s) ** 2 + 1)
    if kind == "reciprocal":  # 1 / (1 + |d| s)
        s = 1 / value_at_1 - 1
        return 1 / (d.abs() * s + 1)
    if kind == "cosine":  # (1 + cos(pi d s)) / 2 on |d s| < 1
        x = d * (math.acos(2 * value_at_1 - 1) / math.pi)
        return torch.where(x.abs() < 1, (1 + torch.cos(math.pi * x)) / 2, 0.0)
    if kind == "linear":  # 1 - d s on |d s| < 1
        x = d * (1 - value_at_1)
        return torch.where(x.abs() < 1, 1 - x, 0.0)
    if kind == "quadratic":  # 1 - (d s)^2 on |d s| < 1
        x = d * math.sqrt(1 - value_at_1)
        return torch.where(x.abs() < 1, 1 - x**2, 0.0)
    if kind == "tanh_squared":  # 1 - tanh(d s)^2
        s = math.atanh(math.sqrt(1 - value_at_1))
        return 1 - torch.tanh(d * s) ** 2
    raise ValueError(f"unknown sigmoid {kind!r}; valid: {', '.join(SIGMOIDS)}")


def tolerance(
    x: torch.Tensor,
    bounds: tuple[float, float] = (0.0, 0.0),
    margin: float = 0.0,
    sigmoid: str = "gaussian",
    value_at_margin: float = 0.1,
) -> torch.Tensor:
    """1 where `lower <= x <= upper`, else a sigmoid of (distance to bound) / margin."""
    lower, upper = bounds
    if lower > upper:
        raise ValueError(f"lower bound {lower} exceeds upper bound {upper}")
    if margin < 0:
        raise ValueError(f"margin must be non-negative, got {margin}")
    if margin == 0:
        return ((lower <= x) & (x <= upper)).to(x.dtype)
    # distance to the interval: 0 inside it, where every sigmoid is exactly 1
    d = ((lower - x).clamp(min=0) + (x - upper).clamp(min=0)) / margin
    return _sigmoid(d, value_at_margin, sigmoid)


class SuccessBonus:
    """`env` (a batched env of a task with a goal) with `bonus` added to its reward at
    every step whose `info["at_goal"]` is set; every other attribute is the env's."""

    def __init__(self, env, bonus: float):
        if not bonus >= 0:
            raise ValueError(f"the success bonus must be >= 0, got {bonus}")
        self.env, self.bonus = env, float(bonus)

    def step(self, action: torch.Tensor):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "at_goal" not in info:
            raise ValueError(f"{self.env.name}: the task has no goal to pay a success bonus for")
        reward = reward + self.bonus * info["at_goal"].to(reward.device, reward.dtype)
        return obs, reward, terminated, truncated, info

    def __getattr__(self, name: str):
        if name == "env":  # not set yet (a copy being built)
            raise AttributeError(name)
        return getattr(self.env, name)
