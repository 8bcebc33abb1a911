"""Cascaded World Action Model: predict where the demonstrator goes next, then
extract the actions that get there with an inverse dynamics model.

Three MLPs over the observation x standardised with the data's statistics, each
change in units of s, the per-dimension spread of one-step changes of x:

    future   f(x_t)            -> d_t .. d_{t+H-1}   the demonstrator's next H changes
    inverse  g(x_t, d_t)       -> a_t                the action between two observations
    forward  h(x_t, a_t)       -> d_t, r_t, cont_t   the dynamics under any action

with x_{t+k+1} = x_{t+k} + s * d_{t+k}. The future predictor is conditioned on the
policy that produced the demonstrations (it is trained on them alone); the inverse
and forward models learn from every transition, play data included, which is what
the split buys: actions are learned from any data, only the plan from experts.
Acting chains them: predict the H future observations, then extract the action
between each consecutive pair, `[a_t .. a_{t+H-1}]`, the chunk whose first action
the agent takes (receding horizon). As a world model (`next`) it is the forward
model alone, deterministic (the mean): `next` ignores its generator. With
`disagreement_heads` K >= 2, K more forward MLPs of their own initialisation learn
the same change from (x_t, a_t) beside it; their spread is the disagreement `next`
reports (`world_models.models.disagreement`), which a MOPO penalty takes.

All terms are squared errors (rewards in symlog space) except continuation
(Bernoulli log-likelihood):  loss = future + inverse + forward + reward + cont.
The model state is the standardised observation (Markov: the observation holds
the velocities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from world_models.base import Step, masked_count
from world_models.models.disagreement import DisagreementHeads, check_count
from world_models.models.layers import mlp
from world_models.models.rssm import symexp, symlog
from world_models.models.wam import StateWAM

DEFAULTS: dict[str, Any] = {
    "chunk": 4,  # future steps H the future predictor plans
    "hidden": 256,  # units per hidden layer
    "layers": 3,  # hidden layers of each MLP
    "pixels": False,  # state vectors only
    "disagreement_heads": 0,  # forward MLPs whose spread is the disagreement (0: none)
}


@dataclass
class CascadedCfg:
    """Cascaded World Action Model: a future predictor trained on demonstrations, an
    inverse dynamics model that extracts the actions between predicted observations,
    and a forward dynamics model."""

    chunk: int = 4
    """Future steps the predictor plans (the agent acts with the first)."""
    hidden: int = 256
    """Units per hidden layer."""
    layers: int = 3
    """Hidden layers of each MLP."""
    batch_size: int = 256
    """Windows (of `chunk` steps) per gradient step."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """Decoupled weight decay."""
    grad_clip: float = 10.0
    """Largest gradient norm (0: no clipping)."""
    disagreement_heads: int = 0
    """Forward MLPs beside the forward model whose spread is the disagreement (>= 2
    for one; 0: none)."""


class CascadedWAM(StateWAM):
    """Future predictor, inverse dynamics and forward dynamics over state vectors."""

    kind = "cascaded"
    settings = CascadedCfg
    defaults = DEFAULTS

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any]):
        super().__init__(obs_dim, action_dim, config)
        config = self.config
        if config["chunk"] < 1 or config["hidden"] < 1 or config["layers"] < 1:
            raise ValueError("cascaded WAM: chunk, hidden and layers must be >= 1")
        hid, lay, h = config["hidden"], config["layers"], config["chunk"]
        self.future = mlp(obs_dim, hid, lay, h * obs_dim)
        self.inverse = mlp(2 * obs_dim, hid, lay, action_dim)
        self.forward_model = mlp(obs_dim + action_dim, hid, lay, obs_dim + 2)
        check_count(config["disagreement_heads"], "cascaded WAM")
        self.spread_heads = DisagreementHeads(
            config["disagreement_heads"], obs_dim + action_dim, obs_dim, hid, lay
        )

    @property
    def has_disagreement(self) -> bool:
        return len(self.spread_heads) >= 2

    @classmethod
    def window(cls, config: dict[str, Any]) -> int:
        return config["chunk"]  # the planned future

    # ---- the world model verbs ----
    def encode(self, obs: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        return self._norm(obs)

    def advance(self, state: torch.Tensor, action: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """The state after `action` and the observation `obs` that followed (Markov)."""
        return self._norm(obs)

    def next(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> Step:
        out = self.forward_model(torch.cat((state, action.float()), -1))
        x = state + out[:, : self.obs_dim] * self.delta_std
        reward = symexp(out[:, self.obs_dim])
        cont = torch.sigmoid(out[:, self.obs_dim + 1])
        obs = x * self.obs_std + self.obs_mean
        disagreement = torch.zeros_like(reward)
        if self.has_disagreement:
            disagreement = self.spread_heads.spread(torch.cat((state, action.float()), -1))
        return Step(x, obs, reward, cont, disagreement)

    def plan(self, state: torch.Tensor) -> torch.Tensor:
        """The predicted future observations `[B, H, obs_dim]` (standardised)."""
        d = self.future(state).reshape(len(state), self.config["chunk"], self.obs_dim)
        return state[:, None] + torch.cumsum(d * self.delta_std, 1)

    def extract(self, x: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        """Actions between standardised observations `[..., obs_dim]` (unclamped)."""
        return self.inverse(torch.cat((x, (x_next - x) / self.delta_std), -1))

    def action_chunk(self, state: torch.Tensor) -> torch.Tensor:
        """Actions `[B, chunk, action_dim]`: predicted future, then extracted actions."""
        future = self.plan(state)
        before = torch.cat((state[:, None], future[:, :-1]), 1)
        return self.extract(before, future)

    # ---- training ----
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Windows `[B, chunk, ...]`: the future predictor's targets are a window's
        steps from its first; inverse and forward models learn every valid step."""
        h = self.window(self.config)
        if batch["obs"].shape[1] < h:
            raise ValueError(
                f"cascaded WAM: windows of {batch['obs'].shape[1]} steps, need chunk = {h}"
            )
        mask = batch["mask"][:, :h].float()
        x, x_next = self._norm(batch["obs"][:, :h]), self._norm(batch["next_obs"][:, :h])
        acts = batch["actions"][:, :h].float()
        change = (x_next - x) / self.delta_std
        count = masked_count(mask)

        plan_valid = mask * batch["demo"].float()[:, None] if "demo" in batch else mask
        pred = self.future(x[:, 0]).reshape(len(x), h, self.obs_dim)
        future_err = (pred - change).pow(2).mean(-1)
        future_loss = (future_err * plan_valid).sum() / masked_count(plan_valid)

        inv_err = (self.inverse(torch.cat((x, change), -1)) - acts).pow(2).mean(-1)
        inv_loss = (inv_err * mask).sum() / count

        out = self.forward_model(torch.cat((x, acts), -1))
        fwd_err = (out[..., : self.obs_dim] - change).pow(2).mean(-1)
        fwd_loss = (fwd_err * mask).sum() / count
        rew_err = (out[..., self.obs_dim] - symlog(batch["rewards"][:, :h].float())).pow(2)
        rew_loss = (rew_err * mask).sum() / count
        cont_err = F.binary_cross_entropy_with_logits(
            out[..., self.obs_dim + 1], 1.0 - batch["terminated"][:, :h].float(), reduction="none"
        )
        cont_loss = (cont_err * mask).sum() / count

        # the policy's first action, as acting computes it: extracted from the plan
        first = self.extract(x[:, 0], x[:, 0] + pred[:, 0] * self.delta_std)
        first_valid = plan_valid[:, 0]
        first_err = ((first - acts[:, 0]).pow(2).mean(-1) * first_valid).sum()
        first_err = first_err / masked_count(first_valid)
        loss = future_loss + inv_loss + fwd_loss + rew_loss + cont_loss
        scalars = {}
        if len(self.spread_heads):
            heads_loss = self.spread_heads.loss(torch.cat((x, acts), -1), change, mask, count)
            scalars["disagreement_heads"] = heads_loss.item()
            loss = loss + heads_loss
        return loss, scalars | {
            "future": future_loss.item(),
            "inverse": inv_loss.item(),
            "obs": fwd_loss.item(),
            "reward": rew_loss.item(),
            "cont": cont_loss.item(),
            "action_first": first_err.item(),
        }
