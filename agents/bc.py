"""`python run.py train-bc`: behaviour cloning of a recorded dataset's actions.

The policy is a Gaussian N(mu(s), diag sigma^2): an MLP over observations
standardised with the training episodes' statistics gives the mean mu(s) in action
units, and log sigma is a learned vector that does not depend on the state.

The mean is fitted by least squares, (a - mu(s))^2 averaged over transitions and
action dimensions. sigma is not trained by gradient: given mu, the Gaussian negative
log-likelihood  (a - mu)^2 / (2 sigma^2) + log sigma  is minimised per dimension at
sigma^2 = E[(a - mu(s))^2], the residual variance, so after every epoch log sigma is
set to that over the training transitions (floored at `STD_MIN`). This is the NLL's
optimum without its drawbacks: the full NLL scales the mean's gradient by
1 / sigma^2, a step size that grows as sigma shrinks, and a gradient-trained log
sigma moves by about the learning rate per step, far too slowly to reach the tiny
residuals of a deterministic expert. The held-out NLL (reported) measures how well
this sigma is calibrated on unseen episodes.

The deterministic action is clamp(mu, -1, 1), not tanh(mu): scripted experts
saturate, and recorded actions sit exactly at +-1 often; a clamped linear mean
reaches the bounds at finite weights, a tanh only in the limit. The exploring action
is clamp(mu + sigma eps, -1, 1).

Whole episodes are held out (`sim.data.split`): validation episodes choose, test
episodes are reported. An epoch is one shuffled pass over the training
transitions, then the validation action MSE is measured; the best agent so far is
saved atomically (`agent.pt`), and training stops when that error has not improved
by 1% for `patience` epochs (the world models' rule), or at `epochs`. The report
gives the kept agent's action MSE and NLL on the test episodes, which chose
nothing. TensorBoard scalars go to `<out>/tb`, the summary to `report.json`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.base import Agent, load, save
from sim.data.atomic import write_json_atomic
from sim.data.dataset import Dataset
from sim.data.loader import EpisodeData
from sim.data.split import split_episodes

DEFAULTS: dict[str, Any] = {
    "hidden": 256,  # units per hidden layer
    "layers": 2,  # hidden layers
}
STD_MIN = 1e-3
"""Smallest action std sigma the fit gives (a residual of exactly 0 would give log 0)."""
STD_FLOOR = 1e-2
"""Smallest observation std used for standardising: a feature that hardly varies in
the data (cos of a balanced pole) would otherwise turn small deviations into huge
inputs."""


class BcAgent(Agent):
    """Gaussian MLP policy: standardised obs -> mean; state-independent log std."""

    kind = "bc"

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any] | None = None):
        config = {**DEFAULTS, **(config or {})}
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise ValueError(
                f"bc agent: unknown config key(s) {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(DEFAULTS))}"
            )
        if config["layers"] < 1 or config["hidden"] < 1:
            raise ValueError("bc agent: hidden and layers must be >= 1")
        super().__init__(obs_dim, action_dim, config)
        dims = [obs_dim] + [config["hidden"]] * config["layers"]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(dims[-1], action_dim))
        # set by `fit_std` (closed form), kept a parameter for learners that fine-tune it
        self.log_std = nn.Parameter(torch.zeros(action_dim), requires_grad=False)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))

    def set_normalization(self, obs: torch.Tensor) -> None:
        """Standardise inputs with the statistics of `obs` `[M, obs_dim]`."""
        obs = obs.to(self.obs_mean.device, torch.float32)
        self.obs_mean.copy_(obs.mean(0))
        self.obs_std.copy_(obs.std(0, correction=0).clamp_min(STD_FLOOR))

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        """The Gaussian's mean mu(s) `[N, action_dim]` (unclamped, with a graph)."""
        return self.net((obs - self.obs_mean) / self.obs_std)

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(mean squared error of mu, {"mse", "nll"}): the Gaussian NLL per action
        dimension with the current sigma, both averaged over rows and dimensions."""
        mu = self.mean(obs)
        mse = (actions - mu).pow(2).mean()
        var = (2 * self.log_std).exp()
        nll = ((actions - mu.detach()).pow(2) / (2 * var) + self.log_std).mean()
        return mse, {"mse": mse.item(), "nll": nll.item() + 0.5 * math.log(2 * math.pi)}

    @torch.no_grad()
    def fit_std(self, obs: torch.Tensor, actions: torch.Tensor, chunk: int = 65536) -> None:
        """sigma^2 = mean (a - mu(s))^2 per action dimension over `obs`, `actions`: the
        Gaussian likelihood's maximiser for the current mean."""
        total = torch.zeros_like(self.log_std)
        for i in range(0, len(obs), chunk):
            total += (actions[i : i + chunk] - self.mean(obs[i : i + chunk])).pow(2).sum(0)
        var = (total / max(1, len(obs))).clamp_min(STD_MIN**2)
        self.log_std.copy_(0.5 * var.log())

    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x = self.check_obs(obs).to(self.obs_mean.device)
        action = self.mean(x)
        if noise is not None:
            action = action + self.log_std.exp() * self.check_noise(noise, action)
        return action.clamp(-1.0, 1.0).to(torch.as_tensor(obs).device)


@dataclass
class TrainBCCfg:
    """Behaviour cloning: fit a Gaussian policy to a recorded dataset's actions."""

    data: Path
    """Dataset directory written by `collect`."""
    out: Path = Path("runs/bc")
    """Output directory: agent.pt (best held-out error), tb/, report.json."""
    epochs: int = 200
    """Most epochs (passes over the training transitions)."""
    batch_size: int = 256
    """Transitions per gradient step."""
    lr: float = 1e-3
    """Adam learning rate."""
    hidden: int = 256
    """Units per hidden layer."""
    layers: int = 2
    """Hidden layers."""
    val_fraction: float = 0.1
    """Share of episodes held out for validation (at least one): the epoch to stop at
    and the agent kept are chosen on them."""
    test_fraction: float = 0.1
    """Share of episodes held out for the test (at least one; 0: none): the report's
    held-out figures are measured on them."""
    patience: int = 10
    """Epochs without a 1% improvement of the held-out action MSE before stopping."""
    seed: int = 0
    """Seed of the split, the initialisation and the batches."""
    device: str = "cpu"
    """Torch device."""
    progress: bool = True
    """Show a progress bar."""


def _check(cfg: TrainBCCfg) -> None:
    for name in ("epochs", "batch_size", "hidden", "layers", "patience"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.lr <= 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")


@dataclass
class _Split:
    """The training, validation and test transitions: whole episodes are held out."""

    val_episodes: list[int]
    test_episodes: list[int]
    train_obs: torch.Tensor
    train_act: torch.Tensor
    val_obs: torch.Tensor
    val_act: torch.Tensor
    test_obs: torch.Tensor
    test_act: torch.Tensor


def train_bc(cfg: TrainBCCfg) -> dict:
    """Train a `BcAgent` on `cfg.data`; returns the report (also in report.json)."""
    _check(cfg)
    dataset = _open_dataset(cfg)
    torch.manual_seed(cfg.seed)
    data = EpisodeData(dataset, device=cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    split = _split_episodes(cfg, dataset, data, gen)
    obs_dim, action_dim = split.train_obs.shape[1], split.train_act.shape[1]
    agent = BcAgent(obs_dim, action_dim, {"hidden": cfg.hidden, "layers": cfg.layers})
    agent.to(cfg.device)
    agent.set_normalization(split.train_obs)
    opt = torch.optim.Adam(agent.parameters(), lr=cfg.lr)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    meta = {
        "env_args": dataset.env_args,
        "data": str(cfg.data),
        "val_episodes": split.val_episodes,
        "test_episodes": split.test_episodes,
        "train": settings,
    }
    epoch, best_val, start = _fit(cfg, agent, opt, split, gen, meta)
    if best_val is None:
        raise ValueError(
            f"{cfg.data}: the held-out action error was never finite; "
            "check the dataset for NaNs or lower --lr"
        )
    report = _report(cfg, split, epoch, best_val, start)
    write_json_atomic(cfg.out / "report.json", report)
    return report


def _open_dataset(cfg: TrainBCCfg) -> Dataset:
    """Open the dataset, refusing an `out` in use."""
    dataset = Dataset(cfg.data)  # a ValueError (DatasetError) for a missing or foreign path
    if (cfg.out / "agent.pt").exists():
        raise ValueError(f"{cfg.out} already holds an agent; pass another --out")
    return dataset


def _split_episodes(
    cfg: TrainBCCfg, dataset: Dataset, data: EpisodeData, gen: torch.Generator
) -> _Split:
    """Hold out validation and test episodes (`split_episodes`), drawn from `gen`."""
    split = split_episodes(len(dataset), cfg.val_fraction, cfg.test_fraction, gen, str(cfg.data))
    part = split.part_of(data.episode_of).to(cfg.device)  # 0 train, 1 validation, 2 test
    obs, actions = data.data["obs"].float(), data.data["actions"].float()
    return _Split(
        split.val,
        split.test,
        *(x[part == p] for p in (0, 1, 2) for x in (obs, actions)),
    )


def _fit(
    cfg: TrainBCCfg,
    agent: BcAgent,
    opt: torch.optim.Optimizer,
    split: _Split,
    gen: torch.Generator,
    meta: dict[str, Any],
) -> tuple[int, dict[str, float] | None, float]:
    """The epochs, until `epochs` or `patience`; (epochs run, best held-out scalars, start)."""
    log = SummaryWriter(str(cfg.out / "tb"))
    bar = tqdm(total=cfg.epochs, unit="epoch", disable=not cfg.progress)
    best, since_best, epoch, start = float("inf"), 0, 0, time.perf_counter()
    best_val: dict[str, float] | None = None
    n = len(split.train_obs)
    while epoch < cfg.epochs and since_best < cfg.patience:
        sums = _train_epoch(cfg, agent, opt, split, gen)
        agent.eval()
        agent.fit_std(split.train_obs, split.train_act)
        with torch.no_grad():
            _, val = agent.loss(split.val_obs, split.val_act)
        epoch += 1
        _log_epoch(log, epoch, sums, val, agent, epoch * n / (time.perf_counter() - start))
        if val["mse"] < 0.99 * best:
            best, since_best, best_val = val["mse"], 0, val
            save(agent, cfg.out / "agent.pt", **meta, val_mse=val["mse"], val_nll=val["nll"])
        else:
            since_best += 1
        bar.update(1)
        bar.set_postfix(val_mse=f"{val['mse']:.5f}", best=f"{best:.5f}")
    bar.close()
    log.close()
    return epoch, best_val, start


def _train_epoch(
    cfg: TrainBCCfg,
    agent: BcAgent,
    opt: torch.optim.Optimizer,
    split: _Split,
    gen: torch.Generator,
) -> dict[str, float]:
    """One shuffled pass over the training transitions; the mean of each loss term."""
    agent.train()
    n = len(split.train_obs)
    steps = math.ceil(n / cfg.batch_size)
    perm = torch.randperm(n, generator=gen).to(cfg.device)
    sums = {"mse": 0.0, "nll": 0.0}
    for i in range(steps):
        rows = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        loss, scalars = agent.loss(split.train_obs[rows], split.train_act[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for key in sums:
            sums[key] += scalars[key] / steps
    return sums


def _log_epoch(
    log: SummaryWriter,
    epoch: int,
    sums: dict[str, float],
    val: dict[str, float],
    agent: BcAgent,
    transitions_per_s: float,
) -> None:
    """Log an epoch's training and held-out scalars to TensorBoard."""
    for key, value in sums.items():
        log.add_scalar(f"losses/{key}", value, epoch)
    for key, value in val.items():
        log.add_scalar(f"val/{key}", value, epoch)
    log.add_scalar("charts/std", agent.log_std.exp().mean().item(), epoch)
    log.add_scalar("charts/transitions_per_s", transitions_per_s, epoch)


def _report(
    cfg: TrainBCCfg, split: _Split, epoch: int, best_val: dict[str, float], start: float
) -> dict[str, Any]:
    """The report of the training: the kept agent's action std and test errors."""
    best_agent = load(cfg.out / "agent.pt", kind="bc")
    test: dict[str, float | None] = {"mse": None, "nll": None, "action_var": None}
    if split.test_episodes:
        with torch.no_grad():
            _, test = best_agent.to(cfg.device).loss(split.test_obs, split.test_act)
        test["action_var"] = split.test_act.var(0, correction=0).mean().item()
    return {
        "agent": str(cfg.out / "agent.pt"),
        "epochs": epoch,
        "val_mse": best_val["mse"],
        "val_nll": best_val["nll"],
        # the MSE of always predicting the held-out mean action: what val_mse beats
        "val_action_var": split.val_act.var(0, correction=0).mean().item(),
        "action_std": best_agent.log_std.exp().tolist(),
        "train_transitions": len(split.train_obs),
        "val_transitions": len(split.val_obs),
        "val_episodes": split.val_episodes,
        # the kept agent on the test episodes (chosen on nothing): the reported figures
        "test_mse": test["mse"],
        "test_nll": test["nll"],
        "test_action_var": test["action_var"],
        "test_transitions": len(split.test_obs),
        "test_episodes": split.test_episodes,
        "seconds": time.perf_counter() - start,
    }


def run_train_bc(cfg: TrainBCCfg) -> None:
    """Train a behaviour-cloning agent on a recorded dataset and print a summary."""
    report = train_bc(cfg)
    print(
        f"{report['agent']}: behaviour cloning, {report['epochs']} epochs on "
        f"{report['train_transitions']:,} transitions"
    )
    if report["test_mse"] is not None:
        print(
            f"  test action MSE {report['test_mse']:.5f} (action variance "
            f"{report['test_action_var']:.5f}; validation {report['val_mse']:.5f}), "
            f"policy std {report['action_std']}"
        )
    else:
        print(
            f"  validation action MSE {report['val_mse']:.5f} (action variance "
            f"{report['val_action_var']:.5f}; no test episodes), policy std "
            f"{report['action_std']}"
        )
