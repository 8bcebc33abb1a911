"""Joint World Action Model: one causal transformer over interleaved observation and
action tokens that predicts both the next observation and the next actions.

For the last K steps (K = `context`) the sequence is

    o_0 a_0 o_1 a_1 ... o_{K-1} a_{K-1}
    o_t = W_o x_t + p_t + e_o,   x_t the observation standardised with the data's statistics
    a_t = W_a a_t + p_t + e_a    (actions are already in [-1, 1])

with learned step embeddings p_t and token-type embeddings e_o, e_a. Attention is
causal over tokens, so o_t sees the past and its own observation, a_t also its action.
Two read-outs make the model both a policy and a simulator:

    at o_t:  the action chunk a_t .. a_{t+H-1} (H = `chunk`)      the policy
    at a_t:  (x_{t+1} - x_t) / s, r_t, continuation logit of t   the world model

where s is the per-dimension spread of one-step changes of x in the data, so that
every dimension's change is learned at unit scale. Rewards are predicted in symlog
space (DreamerV3). All terms are squared errors except continuation (Bernoulli
log-likelihood), averaged over the valid steps of a window:

    loss = obs + reward + cont + action_weight * action

Play data (episodes of other policies, `train-wm --play`) trains the dynamics but
not the actions: a batch's `demo` flags say which windows' actions are targets.

Action chunks are the ACT / diffusion-policy convention: predicting several
steps ahead regularises the policy toward smooth, consistent plans; the agent acts
with the first action of each step's chunk (receding horizon).

The model state holds the window: the last n <= K standardised observations, the
actions between them and n, flattened to `[B, K * (obs_dim + action_dim) + 1]`.
Steps fill it from the left; once full it slides, so the newest step is at
position n - 1 exactly as in training windows, which start anywhere in an episode.
Predictions are deterministic (the mean): `next` ignores its generator and the
disagreement is 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from world_models.base import Step
from world_models.rssm import symexp, symlog
from world_models.wam import StateWAM

DEFAULTS: dict[str, Any] = {
    "context": 8,  # steps K in the window the transformer sees
    "chunk": 4,  # actions H predicted at every observation token
    "width": 128,  # token width
    "heads": 4,  # attention heads
    "layers": 3,  # transformer blocks
    "action_weight": 1.0,  # weight of the action loss
    "pixels": False,  # state tokens only (pixel patches are not supported yet)
}


class JointWAM(StateWAM):
    """Causal transformer over (observation, action) tokens with a policy head and a
    dynamics head."""

    kind = "joint"
    defaults = DEFAULTS

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any]):
        super().__init__(obs_dim, action_dim, config)
        config = self.config
        if config["context"] < 1 or config["chunk"] < 1:
            raise ValueError("joint WAM: context and chunk must be >= 1")
        if config["width"] % config["heads"]:
            raise ValueError("joint WAM: width must be a multiple of heads")
        k, w = config["context"], config["width"]
        self.obs_in = nn.Linear(obs_dim, w)
        self.act_in = nn.Linear(action_dim, w)
        self.step_emb = nn.Parameter(torch.zeros(k, w))
        self.type_emb = nn.Parameter(torch.zeros(2, w))
        nn.init.normal_(self.step_emb, std=0.02)
        nn.init.normal_(self.type_emb, std=0.02)
        block = nn.TransformerEncoderLayer(
            w, config["heads"], 4 * w, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.blocks = nn.TransformerEncoder(block, config["layers"], enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)
        self.action_head = nn.Linear(w, config["chunk"] * action_dim)
        self.obs_head = nn.Linear(w, obs_dim)
        self.reward_head = nn.Linear(w, 1)
        self.cont_head = nn.Linear(w, 1)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(2 * k),
                             persistent=False)  # fmt: skip

    # ---- the window layout ----
    @classmethod
    def window(cls, config: dict[str, Any]) -> int:
        # the context, and the last step's chunk targets after it
        return config["context"] + config["chunk"] - 1

    @property
    def context(self) -> int:
        return self.config["context"]

    def _split(self, state: torch.Tensor):
        """(x `[B, K, obs]`, actions `[B, K, act]`, n `[B]` long) of model states."""
        k, o, a = self.context, self.obs_dim, self.action_dim
        x = state[:, : k * o].reshape(-1, k, o)
        act = state[:, k * o : k * (o + a)].reshape(-1, k, a)
        return x, act, state[:, -1].round().long()

    def _join(self, x: torch.Tensor, act: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return torch.cat((x.flatten(1), act.flatten(1), n.to(x.dtype)[:, None]), 1)

    def _tokens(self, x: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Transformer outputs `[B, 2T, width]` of T steps, tokens o_0 a_0 o_1 a_1 ..."""
        t = x.shape[1]
        pos = self.step_emb[:t]
        o = self.obs_in(x) + pos + self.type_emb[0]
        a = self.act_in(act) + pos + self.type_emb[1]
        seq = torch.stack((o, a), 2).flatten(1, 2)
        mask = self.causal[: 2 * t, : 2 * t]
        return self.norm(self.blocks(seq, mask=mask, is_causal=True))

    # ---- the world model verbs ----
    def encode(self, obs: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        x = self._norm(obs)
        b = len(x)
        window = torch.zeros(b, self.context, self.obs_dim, device=x.device)
        window[:, 0] = x
        act = torch.zeros(b, self.context, self.action_dim, device=x.device)
        return self._join(window, act, torch.ones(b, device=x.device))

    def observe(
        self, obs: torch.Tensor, actions: torch.Tensor, frames: torch.Tensor | None = None
    ) -> torch.Tensor:
        t = min(obs.shape[1], self.context)
        x, act = self._norm(obs[:, -t:]), actions[:, obs.shape[1] - t :].float()
        b, dev = len(x), x.device
        window = torch.zeros(b, self.context, self.obs_dim, device=dev)
        window[:, :t] = x
        acts = torch.zeros(b, self.context, self.action_dim, device=dev)
        acts[:, : t - 1] = act
        return self._join(window, acts, torch.full((b,), t, device=dev))

    def advance(self, state: torch.Tensor, action: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """The window after `action` was taken at its newest step and `obs` followed."""
        return self._advance(state, action.float(), self._norm(obs))

    def _advance(self, state: torch.Tensor, action: torch.Tensor, x_new: torch.Tensor):
        x, act, n = self._split(state)
        rows = torch.arange(len(x), device=x.device)
        act = act.clone()
        act[rows, n - 1] = action
        full = n >= self.context
        # a full window slides left by one step; the new step goes to position min(n, K-1)
        x = torch.where(full[:, None, None], torch.roll(x, -1, 1), x)
        act = torch.where(full[:, None, None], torch.roll(act, -1, 1), act)
        slot = torch.where(full, n - 1, n)
        x = x.clone()
        x[rows, slot] = x_new
        act[rows, slot] = 0.0
        return self._join(x, act, slot + 1)

    def next(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> Step:
        x, act, n = self._split(state)
        rows = torch.arange(len(x), device=x.device)
        act = act.clone()
        act[rows, n - 1] = action.float()
        out = self._tokens(x, act)[rows, 2 * n - 1]  # the newest action token
        x_new = x[rows, n - 1] + self.obs_head(out) * self.delta_std
        reward = symexp(self.reward_head(out).squeeze(-1))
        cont = torch.sigmoid(self.cont_head(out).squeeze(-1))
        new_state = self._advance(state, action.float(), x_new)
        obs = x_new * self.obs_std + self.obs_mean
        return Step(new_state, obs, reward, cont, torch.zeros_like(reward))

    def action_chunk(self, state: torch.Tensor) -> torch.Tensor:
        """Predicted actions `[B, chunk, action_dim]` from the newest observation on
        (unclamped means)."""
        x, act, n = self._split(state)
        rows = torch.arange(len(x), device=x.device)
        out = self._tokens(x, act)[rows, 2 * n - 2]  # the newest observation token
        return self.action_head(out).reshape(len(x), self.config["chunk"], self.action_dim)

    # ---- training ----
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Windows `[B, K + H - 1, ...]` (the trainer's `sequence_length`): the first K
        steps are tokens, the rest only extend the action chunks' targets."""
        k, h = self.context, self.config["chunk"]
        if batch["obs"].shape[1] < self.window(self.config):
            raise ValueError(f"joint WAM: windows of {batch['obs'].shape[1]} steps, "
                             f"need context + chunk - 1 = {self.window(self.config)}")  # fmt: skip
        mask = batch["mask"].float()
        x = self._norm(batch["obs"][:, :k])
        acts = batch["actions"].float()
        out = self._tokens(x, acts[:, :k])
        out_o, out_a = out[:, 0::2], out[:, 1::2]
        valid = mask[:, :k]
        count = valid.sum().clamp_min(1.0)

        target = (self._norm(batch["next_obs"][:, :k]) - x) / self.delta_std
        obs_err = (self.obs_head(out_a) - target).pow(2).mean(-1)
        obs_loss = (obs_err * valid).sum() / count
        rew_err = self.reward_head(out_a).squeeze(-1) - symlog(batch["rewards"][:, :k].float())
        rew_loss = (rew_err.pow(2) * valid).sum() / count
        cont_target = 1.0 - batch["terminated"][:, :k].float()
        cont_err = F.binary_cross_entropy_with_logits(
            self.cont_head(out_a).squeeze(-1), cont_target, reduction="none"
        )
        cont_loss = (cont_err * valid).sum() / count

        # chunk targets: actions t .. t + H - 1 of every token step t, valid where recorded
        idx = torch.arange(k, device=x.device)[:, None] + torch.arange(h, device=x.device)
        chunk_target, chunk_valid = acts[:, idx], mask[:, idx]  # [B, K, H, (A)]
        act_valid = valid
        if "demo" in batch:  # play windows train the dynamics only
            demo = batch["demo"].float()
            chunk_valid, act_valid = chunk_valid * demo[:, None, None], valid * demo[:, None]
        pred = self.action_head(out_o).reshape(*out_o.shape[:2], h, self.action_dim)
        act_err = (pred - chunk_target).pow(2).mean(-1)
        act_loss = (act_err * chunk_valid).sum() / chunk_valid.sum().clamp_min(1.0)
        first_err = (pred[:, :, 0] - acts[:, :k]).pow(2).mean(-1)
        first = (first_err * act_valid).sum() / act_valid.sum().clamp_min(1.0)

        loss = obs_loss + rew_loss + cont_loss + self.config["action_weight"] * act_loss
        return loss, {"obs": obs_loss.item(), "reward": rew_loss.item(),
                      "cont": cont_loss.item(), "action": act_loss.item(),
                      "action_first": first.item()}  # fmt: skip
