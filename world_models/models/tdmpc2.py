"""A decoder-less latent world model with its own value and policy prior, in the
TD-MPC2 style (Hansen, Su and Wang 2024).

An encoder maps each (standardised) observation, a task's unbounded angles as (cos,
sin) (`envs.features`), to a latent z normalised by
SimNorm: z is cut into groups of `simnorm_dim` (8) entries and each group is a
softmax, so every group lies on a simplex. From z and an action the model
predicts

    z' = d(z, a)            latent dynamics (SimNorm output)
    r  = R(z, a)            reward, a distribution over bins (below)
    Q_i(z, a), i < num_q    action values, each a distribution over bins
    a ~ pi(z)               policy prior: tanh of a Gaussian
    1 - c = T(z')           termination probability (c: continuation)

with every MLP made of Linear -> LayerNorm -> Mish layers (the first layer of each
Q also dropout 0.01). There is no decoder: nothing is trained to reproduce
observations. Training, on windows of H = `sequence_length` steps (3) from the
data:

- **latent consistency**: the latent rolled out by d from the encoding of o_0 on
  the recorded actions, z_{t+1} = d(z_t, a_t), regresses the encoding of the
  recorded next observation, held fixed (no gradient): sum_t rho^t ||z_{t+1} -
  sg(enc(o_{t+1}))||^2, rho = 0.5;
- **reward and value** by discrete regression: a scalar x is the two-hot vector
  of symlog(x) over 101 bins evenly spaced on [-10, 10]; R and every Q_i are
  trained by the cross-entropy to those vectors (rho^t weighted along the
  rollout). The TD target of Q is r_t + gamma (1 - term_t) min(Q'_j, Q'_k)(z'_t,
  a' ~ pi(z'_t)), with z'_t the encoding of the recorded next observation, Q' the
  target Q-functions (an exponential moving average of the Q weights, rate
  tau = 0.01 per step) and j, k two of the Q-functions drawn at random;
- **termination**: binary cross-entropy of T(z_{t+1}) with the recorded flag;
- **policy prior**: on the rolled-out latents, held fixed, pi maximises
  alpha * H + Q(z, a) / S (the mean of two random Q-functions whose weights are held
  fixed, alpha = 1e-4 times the action dimension times the entropy H's estimate -log
  pi(a|z), S a running 5-95 percentile range of Q, at least 1), rho^t weighted.

    loss = 20 consistency + 0.1 reward + 0.1 value + 1 termination + policy

The loss holds the policy's term too, with gradients kept apart: the policy's
term reaches only pi (the Q weights it reads are detached) and the other terms
never reach pi. The encoder learns at 0.3 times the learning rate
(`param_groups`); the policy prior's gradient norm and the rest's are clipped at
20 each (`clip_gradients`); the target Q-functions follow after each step
(`after_step`). So `train-wm` trains everything a planner needs, and a checkpoint
alone plans: `plans` is True, `value(z)` = Q(z, pi(z)) (the mean of two random
Q-functions with a generator, of all of them without) and `policy(z)` samples the
prior (its mean action without a generator). `agents.mppi.MppiAgent` plans over
it in the latent with that value at its horizon and trajectories of the prior
among its samples, TD-MPC2's planner.

**What `next` returns as the observation.** A model without a decoder cannot
predict observations; `predicts_obs` is False and `Step.obs` is the latent z'
itself (`state_dim` wide), never a fabricated observation. `ImaginedEnv` serves
that latent as its observation (an agent acting in it must act on the latent, as
the MPPI planner over the same model does), and `eval-wm` and `train-wm`'s report
give no observation error for it (they say it is not available) while its reward
error is measured as for every model.

Numbers from TD-MPC2's source (github.com/nicklashansen/tdmpc2, `config.yaml`,
`common/__init__.py`, `common/layers.py`, `common/math.py`, `tdmpc2.py`): horizon 3,
rho 0.5, batch 256, learning rate 3e-4 (Adam), encoder learning-rate scale 0.3,
gradient clip 20, tau 0.01, consistency / reward / value / termination weights 20 /
0.1 / 0.1 / 1, 101 bins on [-10, 10] in symlog space, 5 Q-functions with dropout
0.01, SimNorm groups of 8, policy log-std in [-10, 2], entropy weight 1e-4; the
default model ("5M") has latent 512, MLPs of 512 and an encoder of 256 (2 layers),
the smallest ("1M") latent 128, MLPs of 384 and 2 Q-functions. The defaults here
are sized for a 2-core CPU: latent 128, MLPs of 256, encoder 256, 2 Q-functions
(0.75M trained parameters for cart-pole, 0.76M for the walker). Its discount is a
setting (0.99, which TD-MPC2's episode-length rule gives for 500-step episodes). Differences: inputs
are standardised with the training set's statistics (TD-MPC2 feeds state
observations raw), the termination head is always trained (TD-MPC2 only on
episodic tasks; on others it learns to predict 0), and windows cut at an episode's
end are masked, where TD-MPC2 samples only whole windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from envs.features import feature_dim
from world_models.base import Step, WorldModel, masked_count
from world_models.models.rssm import symexp, symlog

DEFAULTS: dict[str, Any] = {
    "latent": 128,  # latent size (a multiple of simnorm_dim)
    "hidden": 256,  # units of the dynamics, reward, value, policy and termination MLPs
    "enc_hidden": 256,  # units of the encoder's hidden layers
    "enc_layers": 2,  # encoder layers (hidden layers + 1)
    "simnorm_dim": 8,  # entries per SimNorm group
    "num_q": 2,  # Q-functions (TD-MPC2: 5; its smallest model, 2)
    "dropout": 0.01,  # dropout of each Q's first layer
    "num_bins": 101,  # bins of the discrete regression
    "vmin": -10.0,  # lowest bin [symlog units]
    "vmax": 10.0,  # highest bin [symlog units]
    "rho": 0.5,  # discount of the loss terms along the rollout
    "discount": 0.99,  # gamma of the TD targets [per agent step]
    "tau": 0.01,  # rate of the target Q-functions' moving average
    "consistency_coef": 20.0,
    "reward_coef": 0.1,
    "value_coef": 0.1,
    "termination_coef": 1.0,
    "entropy_coef": 1e-4,
    "log_std_min": -10.0,
    "log_std_max": 2.0,
    "enc_lr_scale": 0.3,
}


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish, x tanh(softplus(x)), written as x n / (n + 2) with n = e^x (e^x + 2) (the
    same function: tanh(log(1 + e^x)) = n / (n + 2)): 2.5x faster than `F.mish` on
    this CPU build (0.73 against 1.80 ms for 512 x 256 on one thread), which took 41%
    of planning. Agrees with `F.mish` to 2e-6 on [-30, 30]."""
    e = torch.exp(x.clamp(max=20.0))
    n = e * (e + 2.0)
    return x * n / (n + 2.0)


class Mish(nn.Module):
    """`mish` as a layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)


@dataclass
class TdMpc2Cfg:
    """Decoder-less latent model with value and policy prior (TD-MPC2 style)."""

    latent: int = 128
    """Latent size, a multiple of simnorm_dim (TD-MPC2: 512, its smallest model 128)."""
    hidden: int = 256
    """Units of the dynamics, reward, Q, policy and termination MLPs (TD-MPC2: 512)."""
    enc_hidden: int = 256
    """Units of the encoder's hidden layers (TD-MPC2: 256)."""
    enc_layers: int = 2
    """Encoder layers (TD-MPC2: 2)."""
    simnorm_dim: int = 8
    """Entries per SimNorm group (a softmax each)."""
    num_q: int = 2
    """Q-functions (at least 2: targets take the lesser of two). TD-MPC2 uses 5, its
    smallest (1M) model 2; 2 cost 0.69x the update time of 5 here."""
    dropout: float = 0.01
    """Dropout of each Q-function's first layer."""
    num_bins: int = 101
    """Bins of the reward's and the values' discrete regression (symlog space)."""
    rho: float = 0.5
    """Weight decay of the loss terms along the latent rollout (rho^t)."""
    discount: float = 0.99
    """gamma of the TD targets [per agent step]; a planner over the model uses its own
    (MppiCfg.gamma), which must equal it."""
    tau: float = 0.01
    """Rate of the target Q-functions' moving average (per gradient step)."""
    entropy_coef: float = 1e-4
    """Entropy weight of the policy prior (times the action dimension)."""
    enc_lr_scale: float = 0.3
    """The encoder's learning rate as a share of lr."""
    sequence_length: int = 3
    """Steps per training window: the horizon H of the latent rollout."""
    batch_size: int = 256
    """Windows per gradient step."""
    lr: float = 3e-4
    """Learning rate (Adam: no weight decay by default)."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    grad_clip: float = 20.0
    """Largest gradient norm, of the policy prior's and of the rest's each (0: none)."""


def simnorm(x: torch.Tensor, group: int) -> torch.Tensor:
    """Softmax over consecutive groups of `group` entries of the last dimension."""
    shape = x.shape
    return torch.softmax(x.reshape(*shape[:-1], -1, group), -1).reshape(shape)


class SimNorm(nn.Module):
    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return simnorm(x, self.group)


def mlp(
    fan_in: int, hidden: list[int], fan_out: int, out: nn.Module | None = None
) -> nn.Sequential:
    """Linear -> LayerNorm -> Mish per hidden layer, then a linear output layer (or,
    with `out`, Linear -> LayerNorm -> `out`)."""
    mods: list[nn.Module] = []
    dims = [fan_in, *hidden]
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        mods += [nn.Linear(a, b), nn.LayerNorm(b), Mish()]
    mods.append(nn.Linear(dims[-1], fan_out))
    if out is not None:
        mods += [nn.LayerNorm(fan_out), out]
    return nn.Sequential(*mods)


def two_hot(x: torch.Tensor, bins: int, vmin: float, vmax: float) -> torch.Tensor:
    """Scalars `[...]` -> two-hot vectors `[..., bins]` of symlog(x) over bins evenly
    spaced on [vmin, vmax] (clipped): the two bins around it, weighted by nearness."""
    pos = (symlog(x).clamp(vmin, vmax) - vmin) / ((vmax - vmin) / (bins - 1))
    low = pos.floor().clamp(0, bins - 2)
    upper = (pos - low).unsqueeze(-1)
    low = low.long().unsqueeze(-1)
    out = torch.zeros(*x.shape, bins, dtype=x.dtype, device=x.device)
    return out.scatter(-1, low, 1 - upper).scatter(-1, low + 1, upper)


def two_hot_inv(logits: torch.Tensor, vmin: float, vmax: float) -> torch.Tensor:
    """Bin logits `[..., bins]` -> scalars `[...]`: symexp of the expected bin."""
    centres = torch.linspace(vmin, vmax, logits.shape[-1], device=logits.device)
    return symexp((torch.softmax(logits, -1) * centres).sum(-1))


def soft_ce(logits: torch.Tensor, x: torch.Tensor, vmin: float, vmax: float) -> torch.Tensor:
    """Cross-entropy `[...]` of bin logits `[..., bins]` with the two-hot vectors of `x`."""
    target = two_hot(x, logits.shape[-1], vmin, vmax)
    return -(target * F.log_softmax(logits, -1)).sum(-1)


class QEnsemble(nn.Module):
    """`members` MLPs of two hidden layers (Linear -> [dropout] -> LayerNorm -> Mish)
    in one batched network; `forward` takes the weights to use, so that the same
    function runs the trained weights, detached copies or the target weights."""

    NAMES = ("w0", "b0", "g0", "s0", "w1", "b1", "g1", "s1", "w2", "b2")

    def __init__(self, members: int, fan_in: int, hidden: int, fan_out: int, dropout: float):
        super().__init__()
        self.dropout = dropout
        shapes = {
            "w0": (fan_in, hidden),
            "w1": (hidden, hidden),
            "w2": (hidden, fan_out),
            "b0": (1, hidden),
            "b1": (1, hidden),
            "b2": (1, fan_out),
            "g0": (1, hidden),
            "g1": (1, hidden),
            "s0": (1, hidden),
            "s1": (1, hidden),
        }
        for name in self.NAMES:
            value = torch.zeros(members, *shapes[name])
            if name in ("w0", "w1"):
                nn.init.trunc_normal_(value, std=0.02)
            elif name in ("g0", "g1"):
                value.fill_(1.0)
            # w2 stays zero: every Q starts predicting the middle bin (TD-MPC2)
            self.register_parameter(name, nn.Parameter(value))
            self.register_buffer(f"target_{name}", value.clone())

    def weights(self, which: str) -> list[torch.Tensor]:
        """ "online" (trained), "detached" (the same, no gradient) or "target"."""
        if which == "target":
            return [getattr(self, f"target_{n}") for n in self.NAMES]
        params = [getattr(self, n) for n in self.NAMES]
        return [p.detach() for p in params] if which == "detached" else params

    def forward(self, x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        """Inputs `[B, in]` -> logits `[members, B, out]`."""
        w0, b0, g0, s0, w1, b1, g1, s1, w2, b2 = weights
        h = torch.baddbmm(b0, x.expand(len(w0), *x.shape), w0)
        if self.training and self.dropout:
            h = F.dropout(h, self.dropout)
        h = mish(F.layer_norm(h, h.shape[-1:]) * g0 + s0)
        h = mish(F.layer_norm(torch.baddbmm(b1, h, w1), h.shape[-1:]) * g1 + s1)
        return torch.baddbmm(b2, h, w2)

    @torch.no_grad()
    def follow(self, tau: float) -> None:
        """Move the target weights toward the trained ones by `tau`."""
        for name in self.NAMES:
            getattr(self, f"target_{name}").lerp_(getattr(self, name), tau)


class TdMpc2(WorldModel):
    """Model state = the SimNorm latent z `[B, latent]`; `Step.obs` is z too."""

    kind = "tdmpc2"
    settings = TdMpc2Cfg
    periodic_inputs = True
    predicts_obs = False
    plans = True
    validation_windows = 1024  # windows of 3 steps: 64 would score on 192 transitions

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any] | None = None):
        config = {**DEFAULTS, **(config or {})}
        super().__init__(obs_dim, action_dim, config)
        c = config
        if c.get("pixels"):
            raise ValueError("the tdmpc2 model encodes state vectors; it does not see frames")
        if c["latent"] % c["simnorm_dim"]:
            raise ValueError(
                f"latent {c['latent']} must be a multiple of simnorm_dim {c['simnorm_dim']}"
            )
        if c["num_q"] < 2:
            raise ValueError(
                f"num_q must be >= 2 (targets take the lesser of two), got {c['num_q']}"
            )
        lat, hid, a = c["latent"], c["hidden"], action_dim
        norm = SimNorm(c["simnorm_dim"])
        enc_hidden = [c["enc_hidden"]] * max(c["enc_layers"] - 1, 1)
        self.encoder = mlp(feature_dim(obs_dim, self.periodic), enc_hidden, lat, norm)
        self.dynamics = mlp(lat + a, [hid, hid], lat, SimNorm(c["simnorm_dim"]))
        self.reward_head = mlp(lat + a, [hid, hid], c["num_bins"])
        self.termination_head = mlp(lat, [hid, hid], 1)
        self.pi = mlp(lat, [hid, hid], 2 * a)
        self.apply(_init)
        nn.init.zeros_(self.reward_head[-1].weight)
        self.qs = QEnsemble(c["num_q"], lat + a, hid, c["num_bins"], c["dropout"])
        self.register_buffer("obs_mean", torch.zeros(feature_dim(obs_dim, self.periodic)))
        self.register_buffer("obs_std", torch.ones(feature_dim(obs_dim, self.periodic)))
        self.register_buffer("q_scale", torch.ones(()))  # S of the policy's objective

    @property
    def state_dim(self) -> int:
        return self.config["latent"]

    def prepare(self, batch: dict[str, torch.Tensor]) -> None:
        """Observation statistics of the training transitions."""
        seen = self.features(batch["obs"])
        self.obs_mean.copy_(seen.mean(0))
        self.obs_std.copy_(seen.std(0).clamp_min(1e-6))

    # ------------------------------------------------------------ pieces
    def _encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder((self.features(obs) - self.obs_mean) / self.obs_std)

    def _next(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.dynamics(torch.cat((z, action), -1))

    def _reward_logits(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.reward_head(torch.cat((z, action), -1))

    def _q_logits(
        self,
        z: torch.Tensor,
        action: torch.Tensor,
        which: str,
        members: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits `[members, ..., bins]` of the Q-functions `members` (all by default) at
        (z, a) `[..., *]`."""
        x = torch.cat((z, action), -1)
        weights = self.qs.weights(which)
        if members is not None:
            weights = [w[members] for w in weights]
        out = self.qs(x.reshape(-1, x.shape[-1]), weights)
        return out.reshape(len(out), *x.shape[:-1], out.shape[-1])

    def _q_pair(
        self,
        z: torch.Tensor,
        action: torch.Tensor,
        which: str,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Values `[2, ...]` of two Q-functions drawn at random (only they are run)."""
        pick = torch.randperm(self.config["num_q"], generator=generator)[:2].to(z.device)
        logits = self._q_logits(z, action, which, pick)
        return two_hot_inv(logits, self.config["vmin"], self.config["vmax"])

    def _policy(
        self, z: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sampled action, deterministic action tanh(mu), log-probability of the sample)."""
        c = self.config
        mu, raw = self.pi(z).chunk(2, -1)
        log_std = c["log_std_min"] + 0.5 * (c["log_std_max"] - c["log_std_min"]) * (
            torch.tanh(raw) + 1
        )
        if generator is None:
            eps = torch.randn_like(mu)
        else:
            eps = torch.randn(mu.shape, generator=generator).to(mu)
        pre = mu + eps * log_std.exp()
        log_prob = (-0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        action = torch.tanh(pre)
        # change of variables through tanh (TD-MPC2's numerically guarded form)
        log_prob = log_prob - torch.log(F.relu(1 - action**2) + 1e-6).sum(-1)
        return action, torch.tanh(mu), log_prob

    # ---------------------------------------------------------- training
    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The encoder at `enc_lr_scale` times lr; the policy prior with Adam's eps 1e-5
        (TD-MPC2's two optimisers); the rest as given."""
        enc = list(self.encoder.parameters())
        pi = list(self.pi.parameters())
        seen = {id(p) for p in enc + pi}
        rest = [p for p in self.parameters() if id(p) not in seen]
        return [
            {"params": enc, "lr": lr * self.config["enc_lr_scale"]},
            {"params": rest},
            {"params": pi, "eps": 1e-5},
        ]

    def clip_gradients(self, max_norm: float) -> None:
        """The policy prior's gradient norm and the rest's, each clipped on its own."""
        pi = {id(p) for p in self.pi.parameters()}
        nn.utils.clip_grad_norm_([p for p in self.parameters() if id(p) not in pi], max_norm)
        nn.utils.clip_grad_norm_(self.pi.parameters(), max_norm)

    def after_step(self) -> None:
        self.qs.follow(self.config["tau"])

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Windows `[B, H, ...]` from `EpisodeData(sequence_length=H)`."""
        c = self.config
        obs, next_obs, actions = batch["obs"], batch["next_obs"], batch["actions"]
        if obs.dim() != 3:
            raise ValueError(f"tdmpc2 trains on windows [B, H, obs_dim], got {tuple(obs.shape)}")
        rewards, terminated = batch["rewards"].float(), batch["terminated"].float()
        mask = batch.get("mask", torch.ones_like(terminated, dtype=torch.bool)).float()
        b, steps = terminated.shape
        rho = c["rho"] ** torch.arange(steps + 1, device=obs.device, dtype=obs.dtype)
        weight = mask * rho[:steps]  # of each transition
        count = masked_count(mask)
        vmin, vmax = c["vmin"], c["vmax"]
        with torch.no_grad():
            target_z = self._encode(next_obs)  # [B, H, latent]
            next_action = self._policy(target_z)[0]
            next_q = self._q_pair(target_z, next_action, "target").min(0).values
            td = rewards + c["discount"] * (1 - terminated) * next_q
        z = self._encode(obs[:, 0])
        zs = [z]
        for t in range(steps):
            z = self._next(z, actions[:, t])
            zs.append(z)
        zs_all = torch.stack(zs, 1)  # [B, H + 1, latent]
        now, later = zs_all[:, :-1], zs_all[:, 1:]
        consistency = (((later - target_z) ** 2).mean(-1) * weight).sum() / count
        reward_ce = soft_ce(self._reward_logits(now, actions), rewards, vmin, vmax)
        reward_loss = (reward_ce * weight).sum() / count
        q_ce = soft_ce(
            self._q_logits(now, actions, "online"), td.expand(c["num_q"], b, steps), vmin, vmax
        )
        value_loss = (q_ce * weight).sum() / count / c["num_q"]
        term_logit = self.termination_head(later).squeeze(-1)
        term_ce = F.binary_cross_entropy_with_logits(term_logit, terminated, reduction="none")
        term_loss = (term_ce * mask).sum() / count
        pi_loss, pi_scalars = self._policy_loss(zs_all.detach(), mask, rho)
        loss = (
            c["consistency_coef"] * consistency
            + c["reward_coef"] * reward_loss
            + c["value_coef"] * value_loss
            + c["termination_coef"] * term_loss
            + pi_loss
        )
        with torch.no_grad():
            reward_pred = two_hot_inv(self._reward_logits(now, actions), vmin, vmax)
            reward_mse = (((reward_pred - rewards) ** 2) * mask).sum() / count
        return loss, {
            "loss": loss.item(),
            "consistency": consistency.item(),
            "reward": reward_loss.item(),
            "reward_mse": reward_mse.item(),
            "value": value_loss.item(),
            "termination": term_loss.item(),
            "td_target": float((td * mask).sum() / count),
            **pi_scalars,
        }

    def _policy_loss(
        self, zs: torch.Tensor, mask: torch.Tensor, rho: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The policy prior's loss on latents `[B, H + 1, latent]` held fixed: minus
        (entropy bonus + Q / S), rho^t weighted; S follows Q's 5-95 percentile range
        while training."""
        c = self.config
        valid = torch.cat((torch.ones_like(mask[:, :1]), mask), 1)  # z_0 is the encoding
        action, _, log_prob = self._policy(zs)
        q = self._q_pair(zs, action, "detached").mean(0)  # [B, H + 1]
        if self.training:
            with torch.no_grad():
                first = q[:, 0]
                low, high = torch.quantile(first, torch.tensor([0.05, 0.95], device=q.device))
                self.q_scale.lerp_((high - low).clamp_min(1.0), c["tau"])
        entropy = -log_prob * self.action_dim  # TD-MPC2's entropy scaled by the action dims
        objective = c["entropy_coef"] * entropy + q / self.q_scale
        loss = -(objective * valid * rho).sum() / masked_count(valid)
        return loss, {
            "pi_loss": loss.item(),
            "pi_entropy": float((-log_prob.detach() * valid).sum() / valid.sum()),
            "q_scale": float(self.q_scale),
        }

    @torch.no_grad()
    def validate(self, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
        """Score on held-out windows: the model's part of the loss, latent consistency,
        reward and termination in their weights (the value and policy terms chase
        moving targets and choose nothing); the whole loss's terms are logged."""
        was = self.training
        self.eval()
        _, scalars = self.loss(batch)
        self.train(was)
        c = self.config
        score = (
            c["consistency_coef"] * scalars["consistency"]
            + c["reward_coef"] * scalars["reward"]
            + c["termination_coef"] * scalars["termination"]
        )
        scalars["model_score"] = score
        return score, scalars

    # -------------------------------------------------------- prediction
    @torch.no_grad()
    def encode(self, obs: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        return self._encode(obs)

    def _step(self, state: torch.Tensor, action: torch.Tensor) -> Step:
        z = self._next(state, action)
        c = self.config
        reward = two_hot_inv(self._reward_logits(state, action), c["vmin"], c["vmax"])
        cont = torch.sigmoid(-self.termination_head(z).squeeze(-1))
        return Step(z, z, reward, cont, z.new_zeros(len(z)))

    @torch.no_grad()
    def next(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> Step:
        """The next latent (also as `obs`), reward and continuation: deterministic, so a
        generator changes nothing."""
        return self._step(state, action)

    def imagine(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> Step:
        with torch.enable_grad():
            return self._step(state, action)

    @torch.no_grad()
    def value(self, state: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """V(z) = Q(z, a), a from the policy prior: with a generator a sampled action and
        the mean of two random Q-functions (TD-MPC2's planning value), without one the
        deterministic action and the mean of all Q-functions."""
        if generator is None:
            action = self._policy(state)[1]
            logits = self._q_logits(state, action, "online")
            return two_hot_inv(logits, self.config["vmin"], self.config["vmax"]).mean(0)
        action = self._policy(state, generator)[0]
        return self._q_pair(state, action, "online", generator).mean(0)

    @torch.no_grad()
    def policy(self, state: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        sample, mean, _ = self._policy(state, generator)
        return sample if generator is not None else mean


def _init(module: nn.Module) -> None:
    """TD-MPC2's initialisation: truncated normal weights (std 0.02), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
