"""Probabilistic ensemble dynamics (PETS, Chua et al. 2018; MBPO, Janner et al. 2019).

E Gaussian MLPs, trained together as one batched network, each on its own
shuffle of the data, predict the change of the observation and the reward as a
mean and a log-variance, plus a termination logit. Inputs and targets are
normalised with training-set statistics. The log-variance is kept inside learned
bounds with soft clamps (PETS):

    logvar = max_lv - softplus(max_lv - raw);  logvar = min_lv + softplus(logvar - min_lv)

and the loss is the Gaussian negative log-likelihood, each term weighted by its
own (detached) variance to the power 0.5 (beta-NLL, Seitzer et al. 2022: plain
NLL lets a member give up on hard dimensions by inflating their variance; on
cart-pole data this halves the validation error), plus 0.01 (max_lv - min_lv),
which keeps the bounds tight. The trainer holds out whole episodes and keeps
the `elites` members with the lowest validation error; a prediction draws one
elite per row (trajectory sampling, "TS-1") and returns the spread of the
elites' means as disagreement, the epistemic signal MOPO penalises. A task's
unbounded angles enter as (cos, sin), and their changes are predicted wrapped
(`envs.features`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from envs.features import feature_dim, wrap_angle
from world_models.base import Step, WorldModel

DEFAULTS: dict[str, Any] = {
    "members": 7,  # ensemble size
    "elites": 5,  # members used for prediction
    "hidden": 200,  # units per hidden layer
    "layers": 4,  # hidden layers
    "min_logvar": -10.0,  # initial lower bound of the log-variance (normalised units)
    "max_logvar": 0.5,  # initial upper bound
    "beta": 0.5,  # beta-NLL exponent (0: plain Gaussian NLL)
    "imagined_reward": "sample",  # or "mean": see EnsembleCfg
}
IMAGINED_REWARDS = ("sample", "mean")


class EnsembleLinear(nn.Module):
    """E independent affine maps applied to `[E, B, in]` at once."""

    def __init__(self, members: int, fan_in: int, fan_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(members, 1, fan_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


@dataclass
class EnsembleCfg:
    """Probabilistic ensemble dynamics (MBPO/PETS)."""

    members: int = 7
    """Ensemble members."""
    elites: int = 5
    """Members used for prediction."""
    hidden: int = 200
    """Units per hidden layer."""
    layers: int = 4
    """Hidden layers."""
    batch_size: int = 256
    """Transitions per member per gradient step."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-5
    """Decoupled weight decay."""
    grad_clip: float = 0.0
    """Largest gradient norm (0: no clipping)."""
    imagined_reward: str = "sample"
    """Reward of an imagined step (`imagine`, what Dreamer learns from): sample (drawn
    from the member's Gaussian, as the observation is) or mean (the member's mean,
    clamped to the range of the training rewards: no noise, no reward never seen)."""


class EnsembleDynamics(WorldModel):
    """Model state = the observation itself; `next` samples one elite per row."""

    kind = "ensemble"
    settings = EnsembleCfg
    periodic_inputs = True

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any] | None = None):
        config = {**DEFAULTS, **(config or {})}
        super().__init__(obs_dim, action_dim, config)
        e, h = config["members"], config["hidden"]
        if not 1 <= config["elites"] <= e:
            raise ValueError(f"elites must lie in [1, members={e}], got {config['elites']}")
        if config["imagined_reward"] not in IMAGINED_REWARDS:
            raise ValueError(
                f"imagined_reward must be one of {', '.join(IMAGINED_REWARDS)}, got "
                f"{config['imagined_reward']!r}"
            )
        self.out_dim = obs_dim + 1  # change of observation, reward
        in_dim = feature_dim(obs_dim, self.periodic) + action_dim
        dims = [in_dim] + [h] * config["layers"]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            layers += [EnsembleLinear(e, fan_in, fan_out), nn.SiLU()]
        self.trunk = nn.Sequential(*layers)
        self.head = EnsembleLinear(e, h, 2 * self.out_dim + 1)  # mean, logvar, termination
        self.max_logvar = nn.Parameter(torch.full((self.out_dim,), float(config["max_logvar"])))
        self.min_logvar = nn.Parameter(torch.full((self.out_dim,), float(config["min_logvar"])))
        # normalisation statistics and elites, saved with the weights
        self.register_buffer("in_mean", torch.zeros(in_dim))
        self.register_buffer("in_std", torch.ones(in_dim))
        self.register_buffer("out_mean", torch.zeros(self.out_dim))
        self.register_buffer("out_std", torch.ones(self.out_dim))
        self.register_buffer("elite_ids", torch.arange(config["elites"]))
        # the range of the rewards trained on (empty until `prepare`)
        self.register_buffer("reward_low", torch.tensor(math.inf))
        self.register_buffer("reward_high", torch.tensor(-math.inf))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Loaded weights keep the reward range of the data this model was prepared on,
        if any, joined to the checkpoint's (a model trained on from a checkpoint
        learns from both); a checkpoint from before the range has no bounds."""
        low, high = self.reward_low.clone(), self.reward_high.clone()
        state_dict.setdefault(prefix + "reward_low", torch.tensor(-math.inf))
        state_dict.setdefault(prefix + "reward_high", torch.tensor(math.inf))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.reward_low.copy_(torch.minimum(self.reward_low, low))
        self.reward_high.copy_(torch.maximum(self.reward_high, high))

    # ------------------------------------------------------------- fitting
    def prepare(self, batch: dict[str, torch.Tensor]) -> None:
        """Input and target statistics from the training transitions."""
        x, y = self._inputs(batch), self._targets(batch)
        self.in_mean.copy_(x.mean(0))
        self.in_std.copy_(x.std(0).clamp_min(1e-6))
        self.out_mean.copy_(y.mean(0))
        self.out_std.copy_(y.std(0).clamp_min(1e-6))
        self.reward_low.copy_(batch["rewards"].min())
        self.reward_high.copy_(batch["rewards"].max())

    def _inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Network inputs of a batch before normalisation (features, then actions)."""
        return torch.cat((self.features(batch["obs"]), batch["actions"]), dim=-1)

    def _targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        delta = batch["next_obs"] - batch["obs"]
        if self.periodic:  # an angle's change, whatever turn it is on
            angles = list(self.periodic)
            delta = delta.clone()
            delta[..., angles] = wrap_angle(delta[..., angles])
        return torch.cat((delta, batch["rewards"][..., None]), dim=-1)

    def _x(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Normalised network inputs of observations and actions `[B, ...]`."""
        return (self._inputs({"obs": obs, "actions": action}) - self.in_mean) / self.in_std

    def _normalized(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of a batch in the normalised units the network works in."""
        x = self._x(batch["obs"], batch["actions"])
        return x, (self._targets(batch) - self.out_mean) / self.out_std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised inputs `[E, B, in]` -> (mean, logvar `[E, B, out]`, termination logit)."""
        out = self.head(self.trunk(x))
        mean, raw, term = out.split((self.out_dim, self.out_dim, 1), dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar, term.squeeze(-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Batch fields `[E, B, ...]` (each member its own rows) or `[B, ...]` (shared)."""
        x, y = self._normalized(batch)
        e = self.config["members"]
        if x.dim() == 2:
            x, y = x.expand(e, *x.shape), y.expand(e, *y.shape)
        terminated = batch["terminated"].float().expand(e, *x.shape[1:2])
        mean, logvar, term = self(x)
        weight = torch.exp(self.config["beta"] * logvar.detach())  # variance ** beta
        nll = (weight * ((mean - y) ** 2 * torch.exp(-logvar) + logvar)).mean()
        bounds = 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
        term_loss = F.binary_cross_entropy_with_logits(term, terminated)
        loss = nll + bounds + term_loss
        mse = ((mean - y) ** 2).mean()
        return loss, {"nll": nll.item(), "mse": mse.item(), "termination": term_loss.item()}

    @torch.no_grad()
    def member_errors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean squared error of each member's mean on `batch`, normalised, `[E]`."""
        x, y = self._normalized(batch)
        e = self.config["members"]
        mean, _, _ = self(x.expand(e, *x.shape))
        return ((mean - y) ** 2).mean(dim=(1, 2))

    @property
    def has_disagreement(self) -> bool:
        """The spread of the elites' means: there is one with two elites or more."""
        return self.config["elites"] > 1

    def set_elites(self, errors: torch.Tensor) -> None:
        self.elite_ids.copy_(torch.argsort(errors)[: self.config["elites"]])

    @torch.no_grad()
    def validate(self, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
        """Each member's error on held-out transitions; the best become the elites,
        whose mean error is the score."""
        errors = self.member_errors(batch)
        self.set_elites(errors)
        elite = float(errors[self.elite_ids].mean())
        return elite, {
            "elite_mse": elite,
            **{f"member_{i}_mse": float(v) for i, v in enumerate(errors)},
        }

    # ---------------------------------------------------------- prediction
    def encode(self, obs: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        return obs

    @torch.no_grad()
    def predict(
        self, obs: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """One step for a batch `[B, ...]`: each row from a random elite, sampled from
        its Gaussian when a generator is given, else the elites' mean prediction."""
        x = self._x(obs, action)
        elites = self.elite_ids
        mean, logvar, term = self(x.expand(self.config["members"], *x.shape))
        mean, logvar, term = mean[elites], logvar[elites], term[elites]  # [K, B, ...]
        if generator is None:
            out, cont_logit = mean.mean(0), -term.mean(0)
        else:
            rows = torch.arange(len(obs), device=obs.device)
            pick = torch.randint(len(elites), (len(obs),), generator=generator).to(obs.device)
            noise = torch.randn(mean.shape[1:], generator=generator).to(obs.device)
            out = mean[pick, rows] + torch.exp(0.5 * logvar[pick, rows]) * noise
            cont_logit = -term[pick, rows]
        out = out * self.out_std + self.out_mean
        disagreement = (mean * self.out_std).std(0).norm(dim=-1) if len(elites) > 1 else None
        return {
            "next_obs": obs + out[:, : self.obs_dim],
            "reward": out[:, self.obs_dim],
            "cont": torch.sigmoid(cont_logit),
            "disagreement": disagreement
            if disagreement is not None
            else torch.zeros(len(obs), device=obs.device),
        }

    def next(self, state, action, generator=None) -> Step:
        pred = self.predict(state, action, generator)
        obs = pred["next_obs"]
        return Step(obs, obs, pred["reward"], pred["cont"], pred["disagreement"])

    def imagine(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator
    ) -> Step:
        """Trajectory sampling at the cost of one member: the rows are dealt at random
        to the K elites in K equal groups (a balanced draw of one elite per row), each
        group runs through its elite only, then each row samples that elite's Gaussian.
        Differentiable; no disagreement (it needs every elite on every row)."""
        b, k = len(state), len(self.elite_ids)
        x = self._x(state, action)
        perm = torch.randperm(b, generator=generator).to(state.device)
        per = -(-b // k)  # rows per elite, the last group padded with repeated rows
        dealt = torch.cat((perm, perm[: per * k - b])).reshape(k, per)
        h = x[dealt]  # [K, per, in]
        members = self.elite_ids
        for layer in self.trunk:
            if isinstance(layer, EnsembleLinear):
                h = torch.baddbmm(layer.bias[members], h, layer.weight[members])
            else:
                h = layer(h)
        out = torch.baddbmm(self.head.bias[members], h, self.head.weight[members])
        mean, raw, term = out.split((self.out_dim, self.out_dim, 1), dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        noise = torch.randn(mean.shape, generator=generator).to(state.device)
        sample = mean + torch.exp(0.5 * logvar) * noise
        inverse = torch.argsort(perm)  # row i sits at position inverse[i] of the deal
        sample = sample.flatten(0, 1)[:b][inverse] * self.out_std + self.out_mean
        cont = torch.sigmoid(-term.flatten(0, 1)[:b][inverse].squeeze(-1))
        obs = state + sample[:, : self.obs_dim]
        reward = sample[:, self.obs_dim]
        if self.config["imagined_reward"] == "mean":
            reward = mean[..., self.obs_dim].flatten()[:b][inverse]
            reward = reward * self.out_std[self.obs_dim] + self.out_mean[self.obs_dim]
            if self.reward_low <= self.reward_high:  # prepared: a range to keep to
                reward = reward.clamp(self.reward_low, self.reward_high)
        return Step(obs, obs, reward, cont, state.new_zeros(b))
