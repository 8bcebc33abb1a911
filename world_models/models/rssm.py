"""Recurrent state-space model in the DreamerV3 style (Hafner et al. 2023).

The model state is a deterministic recurrent part h (a GRU) and a stochastic
part z: `stoch` independent categorical variables of `classes` classes each,
sampled one-hot with straight-through gradients and mixed with 1% uniform
probability (unimix) so that no class is ever impossible:

    h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}])      sequence model
    z_t ~ q(z_t | h_t, e(o_t))                   posterior (encoder embedding e)
    z_t ~ p(z_t | h_t)                           prior, what imagination samples
    o_t, r_t, c_t <- heads([h_t, z_t])           decoders, reward, continuation

A state model (`obs_residual`, the default without pixels) predicts each
observation as the last one plus a change: the model state also carries the
last standardised observation x, and a head maps [h_t, z_t, x_{t-1}] to the
change into step t, scaled by the spread of one-step changes in the data. The
decoder above still reconstructs o_t from [h_t, z_t] and shapes the latent;
the change head is trained beside it on the recorded observations. Decoding
through the categorical latent alone leaves the open-loop error at horizon 1
near the reconstruction error (about 1% of the variance on cart-pole), ten
times that of copying the last observation; the change head is not bounded by it.

Rewards are predicted in symlog space (squared error of symlog(x), decoded
with symexp), so that rewards of any scale train alike. Vector observations are
standardised with training-set statistics instead, so that every dimension
counts alike however small its spread; symlog of the standardised values
(`symlog_obs`) is an option, but it shrinks the errors of large values: on
cart-pole swing-up, at equal training (1,500 steps), it left 3x the open-loop
error at horizons 1 and 10. The encoder and the change head see a task's unbounded
angles as (cos, sin) (`envs.features`).
Frames (with `pixels`) are encoded by a strided CNN and decoded by its
transpose (squared error per pixel, summed); such a model sees only frames and
still decodes the state vector, so its predictions can be compared with the
simulator's state. With `frame_motion` (an option for frames) the decoder
also outputs a flow field and a mask, and each next frame is the last frame
sampled at every pixel displaced by the flow (bilinear), blended by the mask
with the decoded colours; the model state carries that frame. It is trained on
the next frame predicted from the recorded last one and on a chain of its own
predictions through the window (from the first recorded frame), so that
imagination, which chains its own frames, sees what training saw. A 10 ms
cart-pole step moves the cart by a fraction of a pixel at 64 x 64: decoding
from the latent alone blurs the whole frame and falls far behind copying the
last frame at horizon 1; warping the sharp last frame does not. The price is a
decoded frame at every imagined step, where a latent-decoding model imagines
in its latent and decodes frames only when asked.
With `disagreement_heads` K >= 2 the model also reports an epistemic
disagreement, as Plan2Explore does (Sekar et al. 2020): K one-step heads, each
an MLP of its own initialisation, predict the encoder's embedding of the next
observation from [h_t, z_t, a_t] and, in a state model, the last observation
itself (standardised, angles as (cos, sin): the latent is bounded, the state is
not); the model's features are detached, so the heads shape nothing else. Where
the data taught them the same answer they agree, away from it they do not. The
disagreement of a step is the norm over the embedding's dimensions of the heads'
standard deviation (`next`; `imagine` leaves it 0).
The KL terms are balanced and clipped below by free bits:

    loss = pred + 0.5 max(1, KL[sg(q) || p]) + 0.1 max(1, KL[q || sg(p)])

(dynamics and representation losses, KL summed over the latent variables).
A window starts from h = 0 and z from the posterior of its first observation,
which is also what `encode` does; `observe` filters a history the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from envs.features import angle_features, feature_dim
from world_models.base import Step, WorldModel, masked_count
from world_models.models.disagreement import DisagreementHeads, check_count
from world_models.models.layers import mlp

OBSERVED = 8  # steps of a validation window observed before predicting open loop

DEFAULTS: dict[str, Any] = {
    "deter": 256,  # GRU units
    "stoch": 16,  # categorical latent variables
    "classes": 16,  # classes per variable
    "hidden": 256,  # units of the MLPs
    "layers": 2,  # hidden layers of the encoder and heads
    "unimix": 0.01,  # uniform share mixed into every categorical
    "free_nats": 1.0,  # KL below this is not penalised
    "kl_dyn": 0.5,  # weight of KL[sg(posterior) || prior]
    "kl_rep": 0.1,  # weight of KL[posterior || sg(prior)]
    "pixels": False,  # encode camera frames instead of state vectors
    "frame_shape": [64, 64, 3],  # H, W, C of the frames (H and W multiples of 16)
    "depth": 16,  # channels of the first conv layer (doubling per layer)
    "symlog_obs": False,  # predict symlog of the standardised observation (else it as is)
    "obs_residual": None,  # predict observation changes (default: yes unless it sees pixels)
    "frame_motion": False,  # frames: warp the last frame by a decoded flow, blended by a mask
    "max_flow": 4.0,  # [px] largest flow of one step (frame_motion)
    "disagreement_heads": 0,  # one-step embedding heads whose spread is the disagreement
}


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


@dataclass
class RssmCfg:
    """Recurrent state-space model (DreamerV3 style)."""

    deter: int = 256
    """GRU units (the deterministic state)."""
    stoch: int = 16
    """Categorical latent variables."""
    classes: int = 16
    """Classes per latent variable."""
    hidden: int = 256
    """Units of the MLPs."""
    layers: int = 2
    """Hidden layers of the encoder and the heads."""
    pixels: bool = False
    """See camera frames (the dataset must hold them) instead of state vectors."""
    depth: int = 16
    """Channels of the first conv layer (frames only)."""
    free_nats: float = 1.0
    """KL below this many nats is free."""
    symlog_obs: bool = False
    """Predict standardised observations in symlog space (else as they are; rewards
    are always predicted in symlog space)."""
    obs_residual: bool = True
    """Predict each step's observation as the last one plus a predicted change (state
    models; a model that sees pixels decodes its observations from the latent)."""
    frame_motion: bool = False
    """Predict each next frame as the last one warped by a decoded flow field, blended
    by a decoded mask with decoded colours (models that see pixels; sharper frames,
    but a frame decoded at every imagined step; else frames are decoded from the
    latent alone, when asked)."""
    sequence_length: int = 50
    """Steps per training window."""
    batch_size: int = 16
    """Windows per gradient step."""
    lr: float = 3e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    grad_clip: float = 100.0
    """Largest gradient norm (0: no clipping)."""
    disagreement_heads: int = 0
    """One-step heads predicting the next observation's embedding, whose spread is
    the model's disagreement (Plan2Explore; >= 2 for a disagreement, 0: none)."""


class _Counts(NamedTuple):
    """Denominators of a window's masked means (`masked_count`): its observations and
    its transitions."""

    observations: torch.Tensor
    transitions: torch.Tensor


class FrameEncoder(nn.Module):
    """uint8 frames `[B, H, W, 3]` -> embedding: four stride-2 convolutions."""

    def __init__(self, frame_shape, depth: int):
        super().__init__()
        h, w, c = frame_shape
        mods: list[nn.Module] = []
        for i in range(4):
            out = depth * 2**i
            mods += [nn.Conv2d(c, out, 4, 2, 1), nn.GroupNorm(1, out), nn.SiLU()]
            c = out
        self.net = nn.Sequential(*mods, nn.Flatten())
        self.out_dim = c * (h // 16) * (w // 16)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(_unit(frames))


class FrameDecoder(nn.Module):
    """Features -> frames in [-0.5, 0.5] `[B, 3, H, W]`: the encoder's transpose."""

    def __init__(self, feat_dim: int, frame_shape, depth: int, extra: int = 0):
        super().__init__()
        h, w, c = frame_shape
        c += extra
        self.grid = (depth * 8, h // 16, w // 16)
        self.linear = nn.Linear(feat_dim, self.grid[0] * self.grid[1] * self.grid[2])
        mods: list[nn.Module] = []
        ch = depth * 8
        for i in range(3):
            out = depth * 2 ** (2 - i)
            mods += [nn.ConvTranspose2d(ch, out, 4, 2, 1), nn.GroupNorm(1, out), nn.SiLU()]
            ch = out
        mods.append(nn.ConvTranspose2d(ch, c, 4, 2, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net(self.linear(feat).reshape(-1, *self.grid))


class RSSM(WorldModel):
    """Model state = [h, z flattened] `[B, deter + stoch * classes]`, then the last
    standardised observation `[B, obs_dim]` with obs_residual, or the last frame
    (`[B, 3 * H * W]`, channels first, in [-0.5, 0.5]) with frame_motion."""

    kind = "rssm"
    settings = RssmCfg
    periodic_inputs = True

    @classmethod
    def adapt(cls, config: dict[str, Any], pixels: bool) -> dict[str, Any]:
        """Seeing frames, observations are decoded from the latent (no residual); frame
        motion is for frames only."""
        if pixels:
            return {**config, "obs_residual": False}
        return {**config, "frame_motion": False}

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any] | None = None):
        config = {**DEFAULTS, **(config or {})}
        config["frame_shape"] = [int(v) for v in config["frame_shape"]]
        if config["obs_residual"] is None:
            config["obs_residual"] = not config["pixels"]
        super().__init__(obs_dim, action_dim, config)
        c = config
        if c["pixels"] and (c["frame_shape"][0] % 16 or c["frame_shape"][1] % 16):
            raise ValueError(f"frame height and width must be multiples of 16: {c['frame_shape']}")
        if c["obs_residual"] and c["pixels"]:
            raise ValueError(
                "obs_residual needs the state vector in the model state: a model that sees "
                "pixels cannot carry it"
            )
        if c["frame_motion"] and not c["pixels"]:
            raise ValueError("frame_motion warps frames: it needs a model that sees pixels")
        self.residual = bool(c["obs_residual"])
        self.motion = bool(c["frame_motion"])
        self.deter, self.latent = c["deter"], c["stoch"] * c["classes"]
        hid, layers = c["hidden"], c["layers"]
        feat = self.deter + self.latent
        if c["pixels"]:
            self.encoder: nn.Module = FrameEncoder(c["frame_shape"], c["depth"])
            embed = self.encoder.out_dim
            motion = 3 if c["frame_motion"] else 0  # flow x, flow y, mask
            self.frame_decoder = FrameDecoder(feat, c["frame_shape"], c["depth"], motion)
            if motion:  # start with no flow and an even blend
                last = self.frame_decoder.net[-1]
                nn.init.zeros_(last.weight[:, 3:])
                nn.init.zeros_(last.bias[3:])
                grid, scale = pixel_grid(*c["frame_shape"][:2])
                self.register_buffer("pixel_grid", grid, persistent=False)
                self.register_buffer("flow_scale", scale, persistent=False)
        else:
            self.encoder = mlp(feature_dim(obs_dim, self.periodic), hid, layers)
            embed = hid
        self.img_in = mlp(self.latent + action_dim, hid, 1)
        self.gru = nn.GRUCell(hid, self.deter)
        self.prior_net = mlp(self.deter, hid, 1, self.latent)
        self.post_net = mlp(self.deter + embed, hid, 1, self.latent)
        self.obs_head = mlp(feat, hid, layers, obs_dim)
        self.reward_head = mlp(feat, hid, layers, 1)
        self.cont_head = mlp(feat, hid, layers, 1)
        for head in (self.reward_head, self.cont_head):  # start predicting 0 / 0.5
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        if self.residual:  # one-step change of the standardised observation
            self.delta_head = mlp(feat + feature_dim(obs_dim, self.periodic), hid, layers, obs_dim)
            self.register_buffer("delta_mean", torch.zeros(obs_dim))
            self.register_buffer("delta_std", torch.ones(obs_dim))
        check_count(c["disagreement_heads"], "rssm")
        fan_in = feat + action_dim + (feature_dim(obs_dim, self.periodic) if self.residual else 0)
        self.spread_heads = DisagreementHeads(c["disagreement_heads"], fan_in, embed, hid, layers)

    @property
    def has_disagreement(self) -> bool:
        return len(self.spread_heads) >= 2

    @classmethod
    def checkpoint_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Checkpoints saved before `obs_residual` or `frame_motion` existed decode
        from the latent."""
        return {"obs_residual": False, "frame_motion": False, **config}

    def prepare(self, batch: dict[str, torch.Tensor]) -> None:
        """Observation statistics of the training transitions."""
        self.obs_mean.copy_(batch["obs"].mean(0))
        self.obs_std.copy_(batch["obs"].std(0).clamp_min(1e-6))
        if self.residual:
            delta = (batch["next_obs"] - batch["obs"]) / self.obs_std
            self.delta_mean.copy_(delta.mean(0))
            self.delta_std.copy_(delta.std(0).clamp_min(1e-6))

    def _standard(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def _target(self, obs: torch.Tensor) -> torch.Tensor:
        """What the observation head predicts: the standardised observation, in symlog
        space with `symlog_obs`."""
        x = self._standard(obs)
        return symlog(x) if self.config["symlog_obs"] else x

    def _decode_obs(self, feat: torch.Tensor) -> torch.Tensor:
        x = self.obs_head(feat)
        return (symexp(x) if self.config["symlog_obs"] else x) * self.obs_std + self.obs_mean

    # ------------------------------------------------------------ pieces
    def _embed(self, obs: torch.Tensor, frames: torch.Tensor | None) -> torch.Tensor:
        """Encoder embedding of a flat batch."""
        if self.sees_pixels:
            if frames is None:
                raise ValueError("this rssm sees pixels: pass the frames of the observations")
            if tuple(frames.shape[1:]) != tuple(self.config["frame_shape"]):
                raise ValueError(
                    f"frames have shape {tuple(frames.shape[1:])}, the model takes "
                    f"{tuple(self.config['frame_shape'])}"
                )
            return self.encoder(frames)
        return self.encoder(angle_features(self._target(obs), self.periodic, obs))

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Categorical probabilities `[B, stoch, classes]` with the uniform mix."""
        c = self.config
        probs = torch.softmax(logits.reshape(-1, c["stoch"], c["classes"]), -1)
        return (1 - c["unimix"]) * probs + c["unimix"] / c["classes"]

    def _sample(self, probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One-hot samples with straight-through gradients, flattened `[B, latent]`;
        the mode when `generator` is None and not training."""
        if generator is None and not self.training:
            index = probs.argmax(-1)
        else:  # Gumbel-max: the noise is drawn on the CPU, so any device works alike
            u = torch.rand(probs.shape, generator=generator).to(probs.device)
            index = (probs.log() - torch.log(-torch.log(u.clamp_min(1e-20)))).argmax(-1)
        onehot = F.one_hot(index, probs.shape[-1]).to(probs.dtype)
        return (onehot + probs - probs.detach()).flatten(1)

    def _img_step(self, h: torch.Tensor, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.gru(self.img_in(torch.cat((z, action), -1)), h)

    def _post(self, h: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        return self._probs(self.post_net(torch.cat((h, embed), -1)))

    def _split(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h, z and (with obs_residual) the standardised observation x, else an empty x."""
        feat = self.deter + self.latent
        return state[:, : self.deter], state[:, self.deter : feat], state[:, feat:]

    def _delta(self, feat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Predicted change of the standardised observation into the step of `feat`
        from the observation x before it, in units of the change's spread."""
        obs = x * self.obs_std + self.obs_mean
        return self.delta_head(torch.cat((feat, angle_features(x, self.periodic, obs)), -1))

    def _state(
        self, h: torch.Tensor, z: torch.Tensor, obs: torch.Tensor, frames: torch.Tensor | None
    ) -> torch.Tensor:
        if self.residual:
            return torch.cat((h, z, self._standard(obs)), -1)
        if self.motion:
            return torch.cat((h, z, _unit(frames).flatten(1)), -1)
        return torch.cat((h, z), -1)

    def _chw(self) -> tuple[int, int, int]:
        h, w, c = self.config["frame_shape"]
        return c, h, w

    def _compose(self, out: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return compose(out, prev, self.pixel_grid, self.flow_scale, self.config["max_flow"])

    # ---------------------------------------------------------- training
    def _observations(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Observations o_0 .. o_L of windows `[B, L, ...]`: the first observation then
        the next ones, `[B, L+1, obs_dim]`, and their frames for a model that sees."""
        obs = torch.cat((batch["obs"][:, :1], batch["next_obs"]), 1)
        if not self.sees_pixels:
            return obs, None
        return obs, torch.cat((batch["pixels"][:, :1], batch["next_pixels"]), 1)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Windows `[B, L, ...]` from `EpisodeData(sequence_length=L)` (with pixels
        for a model that sees): observations o_0 .. o_L are the window's first
        observation then its next observations."""
        obs, frames = self._observations(batch)
        b, steps = obs.shape[:2]
        if frames is not None:
            frames = frames.flatten(0, 1)
        embed = self._embed(obs.flatten(0, 1), frames).reshape(b, steps, -1)
        valid = torch.cat((torch.ones_like(batch["mask"][:, :1]), batch["mask"]), 1).float()
        w = valid[:, 1:]  # the transitions' weights
        # masked means over the global batch (under DDP the counts of every process)
        counts = _Counts(masked_count(valid), masked_count(w))
        feat, posts, priors = self._filter_window(obs, embed, batch["actions"])
        scalars: dict[str, float] = {}
        obs_err, recon = self._reconstruction_terms(feat, obs, frames, valid, counts, scalars)
        recon, reward_loss, cont_loss = self._transition_terms(
            batch, obs, feat, valid, counts, recon, scalars
        )
        kl_loss, dyn = self._kl_terms(posts, priors, w, counts.transitions)
        loss = recon + reward_loss + cont_loss + kl_loss
        if len(self.spread_heads):
            x = self._standard(obs[:, :-1])
            inputs = self._heads_inputs(feat[:, :-1], x, batch["actions"])
            heads_loss = self.spread_heads.loss(inputs, embed[:, 1:], w, counts.transitions)
            scalars["disagreement_heads"] = heads_loss.item()
            loss = loss + heads_loss
        obs_mse = (obs_err * valid).sum() / counts.observations / self.obs_dim
        scalars.update(
            {
                "loss": loss.item(),
                "obs_mse": obs_mse.item(),
                "reward": reward_loss.item(),
                "cont": cont_loss.item(),
                "kl": float((dyn.detach() * w).sum() / counts.transitions),
            }
        )
        return loss, scalars

    def _filter_window(
        self, obs: torch.Tensor, embed: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Filter the window from h = 0: features `[B, L+1, feat]`, posteriors, priors."""
        b, steps = embed.shape[:2]
        h = obs.new_zeros(b, self.deter)
        post = self._post(h, embed[:, 0])
        z = self._sample(post, None)
        hs, zs, posts, priors = [h], [z], [], []
        for t in range(1, steps):
            h = self._img_step(h, z, actions[:, t - 1])
            prior = self._probs(self.prior_net(h))
            post = self._post(h, embed[:, t])
            z = self._sample(post, None)
            hs.append(h)
            zs.append(z)
            posts.append(post)
            priors.append(prior)
        feat = torch.cat((torch.stack(hs, 1), torch.stack(zs, 1)), -1)  # [B, L+1, feat]
        return feat, posts, priors

    def _reconstruction_terms(
        self,
        feat: torch.Tensor,
        obs: torch.Tensor,
        frames: torch.Tensor | None,
        valid: torch.Tensor,
        counts: _Counts,
        scalars: dict[str, float],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction terms: each observation's error `[B, L+1]`, the mean loss."""
        obs_err = ((self.obs_head(feat) - self._target(obs)) ** 2).sum(-1)
        recon = obs_err
        if self.sees_pixels:
            recon = self._frame_terms(recon, feat, frames, valid, counts, scalars)
        recon = (recon * valid).sum() / counts.observations
        return obs_err, recon

    def _frame_terms(
        self,
        recon: torch.Tensor,
        feat: torch.Tensor,
        frames: torch.Tensor,
        valid: torch.Tensor,
        counts: _Counts,
        scalars: dict[str, float],
    ) -> torch.Tensor:
        """Frame terms: `recon` `[B, L+1]` plus each frame's (and warped frame's) error."""
        b, steps = recon.shape
        target = _unit(frames)
        out = self.frame_decoder(feat.flatten(0, 1))
        pix_err = ((out[:, :3] - target) ** 2).sum((1, 2, 3))
        recon = recon + pix_err.reshape(b, steps)
        scalars["pixel_mse"] = float(
            (pix_err.detach().reshape(b, steps) * valid).sum() / counts.observations
        )
        if self.motion:  # each next frame from the recorded one before it
            out, target = out.unflatten(0, (b, steps)), target.unflatten(0, (b, steps))
            pred = self._compose(out[:, 1:].flatten(0, 1), target[:, :-1].flatten(0, 1))
            motion_err = ((pred - target[:, 1:].flatten(0, 1)) ** 2).sum((1, 2, 3))
            motion_err = motion_err.reshape(b, steps - 1)
            chain, errs = target[:, 0], []  # ... and from its own predicted frames
            for t in range(1, steps):
                chain = self._compose(out[:, t], chain)
                errs.append(((chain - target[:, t]) ** 2).sum((1, 2, 3)))
            motion_err = motion_err + torch.stack(errs, 1)
            recon = recon + torch.cat((torch.zeros_like(motion_err[:, :1]), motion_err), 1)
            scalars["motion_mse"] = float(
                (motion_err.detach() * valid[:, 1:]).sum() / counts.transitions
            )
        return recon

    def _transition_terms(
        self,
        batch: dict[str, torch.Tensor],
        obs: torch.Tensor,
        feat: torch.Tensor,
        valid: torch.Tensor,
        counts: _Counts,
        recon: torch.Tensor,
        scalars: dict[str, float],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transition terms: reward, continuation, and the change (into `recon`)."""
        # reward and continuation of each transition, predicted from the state after it
        later, w = feat[:, 1:], valid[:, 1:]
        reward_err = (self.reward_head(later).squeeze(-1) - symlog(batch["rewards"])) ** 2
        cont = 1.0 - batch["terminated"].float()
        cont_err = F.binary_cross_entropy_with_logits(
            self.cont_head(later).squeeze(-1), cont, reduction="none"
        )
        if self.residual:  # the change into each step, from the observation before it
            x = self._standard(obs)
            change = (x[:, 1:] - x[:, :-1] - self.delta_mean) / self.delta_std
            delta_err = ((self._delta(later, x[:, :-1]) - change) ** 2).sum(-1)
            delta_loss = (delta_err * w).sum() / counts.transitions
            scalars["delta_mse"] = delta_loss.item() / self.obs_dim
            recon = recon + delta_loss
        reward_loss = (reward_err * w).sum() / counts.transitions
        cont_loss = (cont_err * w).sum() / counts.transitions
        return recon, reward_loss, cont_loss

    def _heads_inputs(self, feat: torch.Tensor, x: torch.Tensor, action: torch.Tensor):
        """What the disagreement heads see: features, the standardised observation x
        (a state model; angles as (cos, sin)) and the action."""
        if not self.residual:
            return torch.cat((feat, action), -1)
        obs = x * self.obs_std + self.obs_mean
        return torch.cat((feat, angle_features(x, self.periodic, obs), action), -1)

    def _kl_terms(
        self,
        posts: list[torch.Tensor],
        priors: list[torch.Tensor],
        w: torch.Tensor,
        count: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """KL terms, balanced with free bits: the loss and each step's dynamics KL."""
        c = self.config
        post, prior = torch.stack(posts, 1), torch.stack(priors, 1)  # [B, L, stoch, classes]
        dyn = _kl(post.detach(), prior)
        rep = _kl(post, prior.detach())
        free = c["free_nats"]
        kl_loss = c["kl_dyn"] * dyn.clamp_min(free) + c["kl_rep"] * rep.clamp_min(free)
        kl_loss = (kl_loss * w).sum() / count
        return kl_loss, dyn

    @torch.no_grad()
    def validate(self, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
        """Score on held-out windows: the open-loop error of what imagination would
        produce. The model observes the first `OBSERVED` steps of each window, then
        predicts the rest open loop on the recorded actions; the score is the mean
        squared error of those predicted observations (standardised units) plus
        the reward error of the loss. The loss's terms are logged beside it."""
        was = self.training
        self.eval()
        _, scalars = self.loss(batch)
        obs, frames = self._observations(batch)
        actions, mask = batch["actions"], batch["mask"].float()
        c = min(OBSERVED, actions.shape[1] - 1)
        state = self.observe(
            obs[:, : c + 1], actions[:, :c], None if frames is None else frames[:, : c + 1]
        )
        total, count = 0.0, 0.0
        for t in range(c, actions.shape[1]):
            step = self.next(state, actions[:, t])
            state = step.state
            err = (((step.obs - obs[:, t + 1]) / self.obs_std) ** 2).mean(-1)
            total += float((err * mask[:, t]).sum())
            count += float(mask[:, t].sum())
        self.train(was)
        scalars["open_loop_mse"] = total / max(count, 1.0)
        return scalars["open_loop_mse"] + scalars["reward"], scalars

    # -------------------------------------------------------- prediction
    @torch.no_grad()
    def encode(self, obs: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        h = obs.new_zeros(len(obs), self.deter)
        z = self._sample(self._post(h, self._embed(obs, frames)), None)
        return self._state(h, z, obs, frames)

    @torch.no_grad()
    def observe(
        self, obs: torch.Tensor, actions: torch.Tensor, frames: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, steps = obs.shape[:2]
        if actions.shape[:2] != (b, steps - 1):
            raise ValueError(
                f"observe: {steps} observations need {steps - 1} actions between them, "
                f"got actions of shape {tuple(actions.shape)}"
            )
        flat = None if frames is None else frames.flatten(0, 1)
        embed = self._embed(obs.flatten(0, 1), flat).reshape(b, steps, -1)
        h = obs.new_zeros(b, self.deter)
        z = self._sample(self._post(h, embed[:, 0]), None)
        for t in range(1, steps):
            h = self._img_step(h, z, actions[:, t - 1])
            z = self._sample(self._post(h, embed[:, t]), None)
        return self._state(h, z, obs[:, -1], None if frames is None else frames[:, -1])

    @torch.no_grad()
    def next(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> Step:
        step = self.imagine(state, action, generator)
        if not self.has_disagreement:
            return step
        h, z, x = self._split(state)
        inputs = self._heads_inputs(torch.cat((h, z), -1), x, action)
        return step._replace(disagreement=self.spread_heads.spread(inputs))

    def imagine(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> Step:
        """The prior step; gradients pass the categorical samples straight through."""
        h, z, x = self._split(state)
        h = self._img_step(h, z, action)
        z = self._sample(self._probs(self.prior_net(h)), generator)
        feat = torch.cat((h, z), -1)
        if self.residual:
            x = x + self._delta(feat, x) * self.delta_std + self.delta_mean
            obs, state = x * self.obs_std + self.obs_mean, torch.cat((feat, x), -1)
        elif self.motion:
            prev = x.reshape(len(x), *self._chw())
            frame = self._compose(self.frame_decoder(feat), prev).clamp(-0.5, 0.5)
            obs, state = self._decode_obs(feat), torch.cat((feat, frame.flatten(1)), -1)
        else:
            obs, state = self._decode_obs(feat), feat
        return Step(
            state=state,
            obs=obs,
            reward=symexp(self.reward_head(feat).squeeze(-1)),
            cont=torch.sigmoid(self.cont_head(feat).squeeze(-1)),
            disagreement=feat.new_zeros(len(feat)),
        )

    @torch.no_grad()
    def frames(self, state: torch.Tensor) -> torch.Tensor:
        if not self.sees_pixels:
            return super().frames(state)
        feat = self.deter + self.latent
        if self.motion:
            x = state[:, feat:].reshape(len(state), *self._chw())
        else:
            x = self.frame_decoder(state[:, :feat])[:, :3]
        return uint8_frames(x).permute(0, 2, 3, 1)


def pixel_grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres of an h x w frame in `grid_sample`'s [-1, 1] units, `[H, W, (x, y)]`,
    and the size of one pixel in those units `[(x, y)]` (twice its reciprocal)."""
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)
    return grid, torch.tensor([2.0 / w, 2.0 / h])


def compose(
    out: torch.Tensor, prev: torch.Tensor, grid: torch.Tensor, scale: torch.Tensor, max_flow: float
) -> torch.Tensor:
    """The next frame from decoded maps `[B, 6, H, W]` (colours, flow, mask) and the
    frame before it `[B, 3, H, W]`: the last frame sampled at each pixel displaced by
    the flow (tanh, at most `max_flow` px; bilinear), blended by the mask with the
    colours."""
    flow = torch.tanh(out[:, 3:5]) * max_flow  # [px]
    warped = F.grid_sample(
        prev, grid + flow.permute(0, 2, 3, 1) * scale, padding_mode="border", align_corners=False
    )
    mask = torch.sigmoid(out[:, 5:6])
    return mask * warped + (1 - mask) * out[:, :3]


def unit_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames -> floats in [-0.5, 0.5], same layout."""
    return frames.float() / 255.0 - 0.5


def uint8_frames(x: torch.Tensor) -> torch.Tensor:
    """Floats in [-0.5, 0.5] (clipped) -> uint8 frames, same layout: `unit_frames`'s inverse."""
    return ((x + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)


def _unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames `[B, H, W, 3]` -> floats in [-0.5, 0.5] `[B, 3, H, W]`."""
    return unit_frames(frames.permute(0, 3, 1, 2))


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL[p || q] of categoricals `[..., stoch, classes]`, summed over variables."""
    return (p * (p.log() - q.log())).sum((-2, -1))
