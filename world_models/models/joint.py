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

A model that sees (`pixels`) observes camera frames instead of state vectors: each
step's frame is cut into P square patches of `patch` px (ViT), standardised per
pixel with the data's statistics, each patch a token o_t^1 .. o_t^P with its own
position embedding, followed by a_t. Attention is causal between steps and full
among the patches of one step (a_t sees them all). The policy reads the mean of the
step's patch outputs. The next frame is predicted patch by patch, from the sum of
each patch's output and a_t's: per pixel a colour, a flow and a mask; the next frame
is the last one displaced by the flow (at most `max_flow` px, bilinear) and blended
by the mask with the colours (`rssm.compose`), starting as a copy of the last frame.
Its error is measured in units of the spread of one-step pixel changes in the data,
so copying the last frame scores 1. The state vector (the observation the env
reports) is decoded from a_t (standardised, not as a change, since the model never
sees it), and so are reward and continuation:

    loss = frame + obs + reward + cont + action_weight * action

Play data (episodes of other policies, `train-wm --play`) trains the dynamics but
not the actions: a batch's `demo` flags say which windows' actions are targets.

Action chunks are the ACT / diffusion-policy convention: predicting several
steps ahead regularises the policy toward smooth, consistent plans; the agent acts
with the first action of each step's chunk (receding horizon).

The model state holds the window: the last n <= K standardised observations (or
frames, as floats in [-0.5, 0.5]), the actions between them and n, flattened to
`[B, K * (step_dim + action_dim) + 1]`. Steps fill it from the left; once full it
slides, so the newest step is at position n - 1 exactly as in training windows,
which start anywhere in an episode. Predictions are deterministic (the mean):
`next` ignores its generator. The disagreement is 0, unless `disagreement_heads`
K >= 2: K MLPs of their own initialisation learn the dynamics head's target (the
change, or a model that sees: the state vector) from the action token's output,
detached, and the newest standardised observation (state models); their spread
is the disagreement `next` reports (`world_models.models.disagreement`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from world_models.base import Step, masked_count
from world_models.models.disagreement import DisagreementHeads, check_count
from world_models.models.rssm import compose, pixel_grid, symexp, symlog, uint8_frames, unit_frames
from world_models.models.wam import StateWAM

DEFAULTS: dict[str, Any] = {
    "context": 8,  # steps K in the window the transformer sees
    "chunk": 4,  # actions H predicted at every observation token
    "width": 128,  # token width
    "heads": 4,  # attention heads
    "layers": 3,  # transformer blocks
    "action_weight": 1.0,  # weight of the action loss
    "pixels": False,  # observe camera frames as patch tokens instead of state vectors
    "patch": 16,  # patch side [px] of a model that sees
    "frame_shape": [64, 64, 3],  # (H, W, 3) of the frames a model that sees takes
    "max_flow": 4.0,  # [px] largest displacement of a pixel in one step (a model that sees)
    "disagreement_heads": 0,  # MLPs on the dynamics read-out whose spread is the disagreement
}
MOTION = 6  # maps per pixel of the next-frame head: colour (3), flow (x, y), mask


MASK_START = 3.0  # initial logit of the warped frame's share (0.95)
PIXEL_STD_FLOOR = 0.05  # smallest per-pixel std used to standardise frames (unit scale)


@dataclass
class JointCfg:
    """Joint World Action Model: a causal transformer over observation and action
    tokens with a policy head (action chunks) and a dynamics head."""

    context: int = 8
    """Steps in the window the transformer sees."""
    chunk: int = 4
    """Actions predicted at every observation token (the policy acts with the first)."""
    width: int = 128
    """Token width."""
    heads: int = 4
    """Attention heads."""
    layers: int = 3
    """Transformer blocks."""
    action_weight: float = 1.0
    """Weight of the action loss beside the observation, reward and continuation losses."""
    pixels: bool = False
    """Observe camera frames (the dataset must hold them) as patch tokens instead of
    state vectors; the state vector is decoded."""
    patch: int = 16
    """Patch side [px] of a model that sees (frame sides must be multiples)."""
    batch_size: int = 64
    """Windows (of context + chunk - 1 steps) per gradient step."""
    lr: float = 3e-4
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """Decoupled weight decay."""
    grad_clip: float = 1.0
    """Largest gradient norm (0: no clipping)."""
    disagreement_heads: int = 0
    """MLPs beside the dynamics read-out whose spread is the disagreement (>= 2 for
    one; 0: none)."""


class JointWAM(StateWAM):
    """Causal transformer over (observation, action) tokens with a policy head and a
    dynamics head; observations are state vectors or patches of camera frames."""

    kind = "joint"
    settings = JointCfg
    defaults = DEFAULTS
    pixel_support = True

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any]):
        super().__init__(obs_dim, action_dim, config)
        config = self.config
        config["frame_shape"] = [int(v) for v in config["frame_shape"]]
        if config["context"] < 1 or config["chunk"] < 1:
            raise ValueError("joint WAM: context and chunk must be >= 1")
        if config["width"] % config["heads"]:
            raise ValueError("joint WAM: width must be a multiple of heads")
        k, w = config["context"], config["width"]
        if self.sees_pixels:
            h, wd, c = config["frame_shape"]
            p = config["patch"]
            if c != 3 or p < 1 or h % p or wd % p:
                raise ValueError(
                    f"joint WAM: frames {config['frame_shape']} do not split into "
                    f"patches of {p} px (height and width must be multiples, "
                    "3 colour channels)"
                )
            self.grid = (h // p, wd // p)
            self.patches = self.grid[0] * self.grid[1]
            self.step_dim = h * wd * c
            patch_dim = p * p * c
            self.patch_in = nn.Linear(patch_dim, w)
            self.patch_emb = nn.Parameter(torch.zeros(self.patches, w))
            nn.init.normal_(self.patch_emb, std=0.02)
            self.frame_head = nn.Sequential(
                nn.LayerNorm(w), nn.Linear(w, w), nn.GELU(), nn.Linear(w, p * p * MOTION)
            )
            # start as the last frame: no flow, the mask on the warped frame
            last = self.frame_head[-1]
            nn.init.zeros_(last.weight.view(p * p, MOTION, w)[:, 3:])
            with torch.no_grad():
                last.bias.view(p * p, MOTION)[:, 3:5] = 0.0
                last.bias.view(p * p, MOTION)[:, 5] = MASK_START
            grid, scale = pixel_grid(h, wd)
            self.register_buffer("pixel_grid", grid, persistent=False)
            self.register_buffer("flow_scale", scale, persistent=False)
            self.register_buffer("frame_delta_std", torch.ones(()))
            # per-pixel statistics that standardise the patches the transformer reads
            self.register_buffer("pixel_mean", torch.zeros(self.step_dim))
            self.register_buffer("pixel_std", torch.ones(self.step_dim))
        else:
            self.patches, self.step_dim = 1, obs_dim
            self.obs_in = nn.Linear(obs_dim, w)
        self.act_in = nn.Linear(action_dim, w)
        self.step_emb = nn.Parameter(torch.zeros(k, w))
        self.type_emb = nn.Parameter(torch.zeros(2, w))
        nn.init.normal_(self.step_emb, std=0.02)
        nn.init.normal_(self.type_emb, std=0.02)
        block = nn.TransformerEncoderLayer(
            w,
            config["heads"],
            4 * w,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, config["layers"], enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)
        self.action_head = nn.Linear(w, config["chunk"] * action_dim)
        self.obs_head = nn.Linear(w, obs_dim)
        self.reward_head = nn.Linear(w, 1)
        self.cont_head = nn.Linear(w, 1)
        self.register_buffer("causal", self._mask(k, self.patches), persistent=False)
        check_count(config["disagreement_heads"], "joint WAM")
        beside = 0 if self.sees_pixels else obs_dim  # the newest observation
        self.spread_heads = DisagreementHeads(
            config["disagreement_heads"], w + beside, obs_dim, w, 2
        )

    @property
    def has_disagreement(self) -> bool:
        return len(self.spread_heads) >= 2

    def _spread_inputs(self, out_a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """What the disagreement heads see: the action token's output and, in a state
        model, the standardised observation of its step."""
        return out_a if self.sees_pixels else torch.cat((out_a, x), -1)

    @staticmethod
    def _mask(steps: int, patches: int) -> torch.Tensor:
        """Additive attention mask over `steps * (patches + 1)` tokens: a token sees the
        earlier steps' tokens and its own step's observation tokens (an action token
        also itself). With one token per observation this is the causal mask."""
        per = patches + 1
        idx = torch.arange(steps * per)
        step, is_act = idx // per, idx % per == patches
        same = step[:, None] == step[None, :]
        allowed = (step[None, :] < step[:, None]) | (same & ~is_act[None, :])
        allowed |= torch.eye(len(idx), dtype=torch.bool)
        mask = torch.zeros(len(idx), len(idx))
        return mask.masked_fill(~allowed, float("-inf"))

    # ---- the window layout ----
    @classmethod
    def window(cls, config: dict[str, Any]) -> int:
        # the context, and the last step's chunk targets after it
        return config["context"] + config["chunk"] - 1

    @property
    def context(self) -> int:
        return self.config["context"]

    def _split(self, state: torch.Tensor):
        """(x `[B, K, step_dim]`, actions `[B, K, act]`, n `[B]` long) of model states."""
        k, o, a = self.context, self.step_dim, self.action_dim
        x = state[:, : k * o].reshape(-1, k, o)
        act = state[:, k * o : k * (o + a)].reshape(-1, k, a)
        return x, act, state[:, -1].round().long()

    def _join(self, x: torch.Tensor, act: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return torch.cat((x.flatten(1), act.flatten(1), n.to(x.dtype)[:, None]), 1)

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened frames `[..., H * W * 3]` -> patches `[..., P, p * p * 3]`, row by row."""
        (gh, gw), p = self.grid, self.config["patch"]
        lead = x.shape[:-1]
        x = x.reshape(*lead, gh, p, gw, p, 3).movedim(-4, -3)  # [..., gh, gw, p, p, 3]
        return x.reshape(*lead, self.patches, p * p * 3)

    def _unpatchify(self, patches: torch.Tensor, channels: int = 3) -> torch.Tensor:
        """The inverse of `_patchify`: `[..., P, p * p * c]` -> `[..., H * W * c]`."""
        (gh, gw), p = self.grid, self.config["patch"]
        lead = patches.shape[:-2]
        x = patches.reshape(*lead, gh, gw, p, p, channels).movedim(-3, -4)
        return x.reshape(*lead, gh * p * gw * p * channels)

    def _next_frame(self, maps: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """The predicted next frame `[N, H * W * 3]` from the frame head's patches
        `[N, P, p * p * 6]` and the frame before it `[N, H * W * 3]`: the last frame
        warped by the flow, blended by the mask with the colours (`rssm.compose`)."""
        h, w, _ = self.config["frame_shape"]
        n = len(prev)
        maps = self._unpatchify(maps, MOTION).reshape(n, h, w, MOTION).permute(0, 3, 1, 2)
        prev = prev.reshape(n, h, w, 3).permute(0, 3, 1, 2)
        frame = compose(maps, prev, self.pixel_grid, self.flow_scale, self.config["max_flow"])
        return frame.permute(0, 2, 3, 1).reshape(n, -1)

    def _tokens(self, x: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer outputs of T steps: observation tokens `[B, T, P, width]` and
        action tokens `[B, T, width]` (sequence o_0 a_0 o_1 a_1 ...)."""
        t = x.shape[1]
        pos = self.step_emb[:t]
        if self.sees_pixels:
            o = self.patch_in(self._patchify((x - self.pixel_mean) / self.pixel_std))
            o = o + self.patch_emb
            o = o + (pos + self.type_emb[0])[:, None]
        else:
            o = (self.obs_in(x) + pos + self.type_emb[0])[:, :, None]
        a = self.act_in(act) + pos + self.type_emb[1]
        per = self.patches + 1
        seq = torch.cat((o, a[:, :, None]), 2).flatten(1, 2)
        mask = self.causal[: per * t, : per * t]
        out = self.norm(self.blocks(seq, mask=mask, is_causal=not self.sees_pixels))
        out = out.unflatten(1, (t, per))
        return out[:, :, : self.patches], out[:, :, -1]

    def _step_input(self, obs: torch.Tensor | None, frames: torch.Tensor | None) -> torch.Tensor:
        """What a step of the window holds: standardised observations, or a model that
        sees its frames (uint8 `[..., H, W, 3]`) flattened as floats in [-0.5, 0.5]."""
        if not self.sees_pixels:
            return self._norm(obs)
        shape = tuple(self.config["frame_shape"])
        if frames is None or tuple(frames.shape[-3:]) != shape:
            got = None if frames is None else tuple(frames.shape)
            raise ValueError(
                f"joint WAM: this model sees pixels: pass frames [..., "
                f"{', '.join(map(str, shape))}], got {got}"
            )
        return unit_frames(frames).flatten(-3)

    # ---- the world model verbs ----
    def encode(self, obs: torch.Tensor | None, frames: torch.Tensor | None = None) -> torch.Tensor:
        x = self._step_input(obs, frames)
        b, dev = len(x), x.device
        window = torch.zeros(b, self.context, self.step_dim, device=dev)
        window[:, 0] = x
        act = torch.zeros(b, self.context, self.action_dim, device=dev)
        return self._join(window, act, torch.ones(b, device=dev))

    def observe(
        self, obs: torch.Tensor | None, actions: torch.Tensor, frames: torch.Tensor | None = None
    ) -> torch.Tensor:
        steps = (frames if self.sees_pixels and frames is not None else obs).shape[1]
        t = min(steps, self.context)
        x = self._step_input(
            None if obs is None else obs[:, -t:], None if frames is None else frames[:, -t:]
        )
        act = actions[:, steps - t :].float()
        b, dev = len(x), x.device
        window = torch.zeros(b, self.context, self.step_dim, device=dev)
        window[:, :t] = x
        acts = torch.zeros(b, self.context, self.action_dim, device=dev)
        acts[:, : t - 1] = act
        return self._join(window, acts, torch.full((b,), t, device=dev))

    def advance(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
        obs: torch.Tensor | None,
        frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The window after `action` was taken at its newest step and `obs` (for a model
        that sees, `frames`) followed."""
        return self._advance(state, action.float(), self._step_input(obs, frames))

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
        out_o, out_a = self._tokens(x, act)
        out_o, out_a = out_o[rows, n - 1], out_a[rows, n - 1]  # the newest step
        if self.sees_pixels:
            maps = self.frame_head(out_o + out_a[:, None])
            x_new = self._next_frame(maps, x[rows, n - 1]).clamp(-0.5, 0.5)
            obs = self.obs_head(out_a) * self.obs_std + self.obs_mean
        else:
            x_new = x[rows, n - 1] + self.obs_head(out_a) * self.delta_std
            obs = x_new * self.obs_std + self.obs_mean
        reward = symexp(self.reward_head(out_a).squeeze(-1))
        cont = torch.sigmoid(self.cont_head(out_a).squeeze(-1))
        new_state = self._advance(state, action.float(), x_new)
        disagreement = torch.zeros_like(reward)
        if self.has_disagreement:
            disagreement = self.spread_heads.spread(self._spread_inputs(out_a, x[rows, n - 1]))
        return Step(new_state, obs, reward, cont, disagreement)

    def frames(self, state: torch.Tensor) -> torch.Tensor:
        if not self.sees_pixels:
            return super().frames(state)
        x, _, n = self._split(state)
        newest = x[torch.arange(len(x), device=x.device), n - 1]
        return uint8_frames(newest).reshape(len(x), *self.config["frame_shape"])

    def action_chunk(self, state: torch.Tensor) -> torch.Tensor:
        """Predicted actions `[B, chunk, action_dim]` from the newest observation on
        (unclamped means)."""
        x, act, n = self._split(state)
        rows = torch.arange(len(x), device=x.device)
        out_o, _ = self._tokens(x, act)
        out = out_o[rows, n - 1].mean(1)  # the newest observation's tokens
        return self.action_head(out).reshape(len(x), self.config["chunk"], self.action_dim)

    # ---- training ----
    @torch.no_grad()
    def prepare(self, batch: dict[str, torch.Tensor]) -> None:
        """Observation statistics; for a model that sees also the spread of one-step
        pixel changes, from `pixels` / `next_pixels` frames of training transitions."""
        super().prepare(batch)
        if self.sees_pixels:
            if "pixels" not in batch:
                raise ValueError(
                    "joint WAM: a model that sees needs frames (`pixels`, "
                    "`next_pixels`) to fit its statistics"
                )
            now = unit_frames(batch["pixels"]).flatten(1)
            delta = unit_frames(batch["next_pixels"]).flatten(1) - now
            self.frame_delta_std.copy_(delta.std(correction=0).clamp_min(1e-3))
            self.pixel_mean.copy_(now.mean(0))
            self.pixel_std.copy_(now.std(0, correction=0).clamp_min(PIXEL_STD_FLOOR))

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Windows `[B, K + H - 1, ...]` (the trainer's `sequence_length`, with frames
        for a model that sees): the first K steps are tokens, the rest only extend the
        action chunks' targets."""
        k, h = self.context, self.config["chunk"]
        if batch["obs"].shape[1] < self.window(self.config):
            raise ValueError(
                f"joint WAM: windows of {batch['obs'].shape[1]} steps, "
                f"need context + chunk - 1 = {self.window(self.config)}"
            )
        mask = batch["mask"].float()
        acts = batch["actions"].float()
        valid = mask[:, :k]
        count = masked_count(valid)
        scalars: dict[str, float] = {}
        if self.sees_pixels:
            x = self._step_input(None, batch["pixels"][:, :k])
            out_o, out_a = self._tokens(x, acts[:, :k])
            nxt = self._step_input(None, batch["next_pixels"][:, :k])
            maps = self.frame_head(out_o + out_a[:, :, None])
            pred = self._next_frame(maps.flatten(0, 1), x.flatten(0, 1)).unflatten(0, x.shape[:2])
            frame_err = ((pred - nxt) / self.frame_delta_std).pow(2).mean(-1)
            frame_loss = (frame_err * valid).sum() / count
            scalars["frame"] = frame_loss.item()
            obs_pred = self.obs_head(out_a)
            obs_target = self._norm(batch["next_obs"][:, :k])
        else:
            frame_loss = 0.0
            x = self._norm(batch["obs"][:, :k])
            out_o, out_a = self._tokens(x, acts[:, :k])
            obs_pred = self.obs_head(out_a)
            obs_target = (self._norm(batch["next_obs"][:, :k]) - x) / self.delta_std
        obs_err = (obs_pred - obs_target).pow(2).mean(-1)
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
        out = out_o.mean(2)
        pred = self.action_head(out).reshape(*out.shape[:2], h, self.action_dim)
        act_err = (pred - chunk_target).pow(2).mean(-1)
        act_loss = (act_err * chunk_valid).sum() / masked_count(chunk_valid)
        first_err = (pred[:, :, 0] - acts[:, :k]).pow(2).mean(-1)
        first = (first_err * act_valid).sum() / masked_count(act_valid)

        loss = (
            frame_loss + obs_loss + rew_loss + cont_loss + self.config["action_weight"] * act_loss
        )
        if len(self.spread_heads):
            inputs = self._spread_inputs(out_a, None if self.sees_pixels else x)
            heads_loss = self.spread_heads.loss(inputs, obs_target, valid, count)
            scalars["disagreement_heads"] = heads_loss.item()
            loss = loss + heads_loss
        scalars.update(
            {
                "obs": obs_loss.item(),
                "reward": rew_loss.item(),
                "cont": cont_loss.item(),
                "action": act_loss.item(),
                "action_first": first.item(),
            }
        )
        return loss, scalars
