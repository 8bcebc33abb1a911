"""The network block the models (and the agents' actor-critics) share."""

from __future__ import annotations

from torch import nn


def mlp(fan_in: int, hidden: int, layers: int, fan_out: int | None = None) -> nn.Sequential:
    """`layers` blocks of Linear -> LayerNorm -> SiLU, then an output layer to
    `fan_out` if given (DreamerV3's MLPs)."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(fan_in if i == 0 else hidden, hidden), nn.LayerNorm(hidden), nn.SiLU()]
    if fan_out is not None:
        mods.append(nn.Linear(hidden if layers else fan_in, fan_out))
    return nn.Sequential(*mods)
