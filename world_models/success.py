"""A learned success head: the probability that an observation shows a task at its
goal.

A world model predicts observations and rewards; the goal a task is scored on
(push: the ball's centre in the goal disc) is often only loosely tied to its
shaped reward (push's dense reward is 0.98 of its best with the ball a centimetre
outside the goal). Fine-tuning in imagination that should raise the success rate
therefore needs the success itself, predicted on imagined observations. The head
is a classifier on the observation after a step, trained on what a goal task's
datasets record per step (`at_goal`: at the goal after the step, the env's
`info["at_goal"]`; the episode's success is whether it ever was), with binary
cross-entropy, standardised inputs and early stopping on whole validation
episodes; its report gives the validation loss and the accuracy of each class
(steps at the goal are rare in a weak policy's data, so overall accuracy would
flatter a head that never says yes). The instantaneous label, not the episode's
running success, is what an observation can tell: a ball that has left the goal
looks like one that never reached it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sim.data.loader import EpisodeData
from sim.data.split import split_episodes
from world_models.models.layers import mlp

STD_FLOOR = 1e-3
"""Smallest standard deviation an input is divided by (constant inputs)."""


@dataclass
class SuccessHeadCfg:
    """A success classifier's size and training."""

    hidden: int = 256
    """Hidden units of each layer."""
    layers: int = 2
    """Hidden layers (Linear, LayerNorm, SiLU)."""
    epochs: int = 30
    """Most passes over the training steps (early stopping on the validation loss)."""
    patience: int = 5
    """Epochs without a better validation loss before training stops."""
    batch_size: int = 256
    """Steps per gradient step."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    val_fraction: float = 0.1
    """Share of the episodes held out for validation (at least one)."""


class SuccessHead(nn.Module):
    """P(goal reached | observation): a standardised-input MLP giving a logit."""

    def __init__(self, obs_dim: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.obs_dim, self.hidden, self.layers = obs_dim, hidden, layers
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.net = mlp(obs_dim, hidden, layers, 1)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits `[B]` of observations `[B, obs_dim]`."""
        return self.net((obs.float() - self.obs_mean) / self.obs_std).squeeze(-1)

    @torch.no_grad()
    def prob(self, obs: torch.Tensor) -> torch.Tensor:
        """P(at the goal) `[B]` of observations `[B, obs_dim]`."""
        return torch.sigmoid(self.logits(obs))


def fit_success_head(
    data: EpisodeData,
    cfg: SuccessHeadCfg | None = None,
    seed: int = 0,
    init: SuccessHead | None = None,
) -> tuple[SuccessHead, dict[str, Any]]:
    """A success head trained on `data`'s recorded `at_goal` (from `init`'s
    weights and input statistics if given, else new ones fitted to the training
    steps); (the head of the best validation loss, its report)."""
    cfg = cfg or SuccessHeadCfg()
    if "at_goal" not in data.data:
        raise ValueError(
            f"{data.dataset.path}: the dataset records no per-step at_goal (a task without "
            "a goal, or episodes recorded before it was recorded: collect them again)"
        )
    gen = torch.Generator().manual_seed(seed)
    split = split_episodes(len(data.lengths), cfg.val_fraction, 0.0, gen, "success head")
    part = split.part_of(data.episode_of)
    obs, label = data.data["next_obs"].float().cpu(), data.data["at_goal"].float().cpu()
    train, val = (part == 0).nonzero().squeeze(-1), (part == 1).nonzero().squeeze(-1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the initial weights too: a fit reproduces
        head = SuccessHead(obs.shape[-1], cfg.hidden, cfg.layers)
    if init is not None:
        head.load_state_dict(init.state_dict())
    else:
        head.obs_mean.copy_(obs[train].mean(0))
        head.obs_std.copy_(obs[train].std(0, correction=0).clamp_min(STD_FLOOR))
    opt = torch.optim.Adam(head.parameters(), lr=cfg.learning_rate)
    positives = label[train].mean().clamp(1e-3, 1 - 1e-3)
    weight = (1 - positives) / positives  # both classes weigh the same in the loss
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=weight)
    best, best_state, waited = _val_loss(head, obs[val], label[val], loss_fn), None, 0
    for _ in range(cfg.epochs):
        for rows in train[torch.randperm(len(train), generator=gen)].split(cfg.batch_size):
            loss = loss_fn(head.logits(obs[rows]), label[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        val_loss = _val_loss(head, obs[val], label[val], loss_fn)
        if val_loss < best:
            best, best_state, waited = val_loss, _copy(head), 0
        else:
            waited += 1
            if waited >= cfg.patience:
                break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return head, _report(head, obs[val], label[val], best, float(label[train].mean()))


@torch.no_grad()
def _val_loss(head: SuccessHead, obs, label, loss_fn) -> float:
    return float(loss_fn(head.logits(obs), label))


def _copy(head: SuccessHead) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in head.state_dict().items()}


@torch.no_grad()
def _report(head: SuccessHead, obs, label, val_loss: float, positives: float) -> dict[str, Any]:
    said = head.prob(obs) > 0.5
    truth = label > 0.5

    def rate(mask: torch.Tensor) -> float | None:
        return float((said[mask] == truth[mask]).float().mean()) if mask.any() else None

    return {
        "val_loss": val_loss,
        "val_steps": len(label),
        "success_share": positives,
        "accuracy_on_success": rate(truth),
        "accuracy_on_failure": rate(~truth),
    }
