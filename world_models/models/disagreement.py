"""Disagreement heads: the epistemic signal of a model that is not an ensemble.

K small MLPs of their own initialisation learn the same one-step target from the
same inputs (a model's detached features, so they shape nothing else, as
Plan2Explore's heads do, Sekar et al. 2020). On the data they were taught they
agree; away from it their answers spread. A step's disagreement is the norm over
the target's dimensions of the heads' standard deviation, the quantity an
ensemble's elites give (`world_models.models.ensemble`), so MOPO's penalty and
Dreamer's exploration bonus take either.
"""

from __future__ import annotations

import torch
from torch import nn

from world_models.models.layers import mlp


def check_count(count: int, kind: str) -> None:
    """0 (no disagreement) or at least 2 heads: the spread of one is nothing."""
    if count == 1 or count < 0:
        raise ValueError(
            f"{kind}: disagreement_heads must be 0 or >= 2 (the spread of one head is "
            f"nothing), got {count}"
        )


class DisagreementHeads(nn.Module):
    """`count` heads mapping inputs `[..., fan_in]` to a target `[..., fan_out]`."""

    def __init__(self, count: int, fan_in: int, fan_out: int, hidden: int, layers: int):
        super().__init__()
        self.members = nn.ModuleList(mlp(fan_in, hidden, layers, fan_out) for _ in range(count))

    def __len__(self) -> int:
        return len(self.members)

    def loss(self, inputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, count):
        """The heads' squared errors (mean over the target's dimensions), summed over
        the heads, weighted `[...]` and divided by `count`; inputs and target are
        detached here."""
        inputs, target = inputs.detach(), target.detach()
        err = sum(((head(inputs) - target) ** 2).mean(-1) for head in self.members)
        return (err * weight).sum() / count

    @torch.no_grad()
    def spread(self, inputs: torch.Tensor) -> torch.Tensor:
        """The disagreement `[...]`: the norm of the heads' standard deviation."""
        return torch.stack([head(inputs) for head in self.members]).std(0).norm(dim=-1)
