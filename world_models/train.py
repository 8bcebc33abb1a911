"""`python run.py train-wm`: fit a world model to a recorded dataset.

Whole episodes are held out for validation. Each epoch draws, for every
ensemble member, its own random batches of training transitions (sampling with
replacement: a bootstrap per member), then measures every member on the held-out
transitions; the best members become the elites and the best model so far is
kept. Training stops when the elites' validation error has not improved by 1%
for `patience` epochs (MBPO's rule), or at `epochs`. Checkpoints are atomic:
`model.pt` (the best model) and `last.pt` (everything `--resume` needs).
TensorBoard scalars go to `<out>/tb`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from sim.dataset import Dataset
from sim.loader import EpisodeData
from world_models.base import load, read_checkpoint, save_atomic
from world_models.ensemble import EnsembleDynamics
from world_models.metrics import open_loop_error

MODELS = ("ensemble",)


@dataclass
class TrainWMCfg:
    """Train a world model on a recorded dataset (ensemble dynamics)."""

    data: Path
    """Dataset directory written by `collect`."""
    model: str = "ensemble"
    """Model kind: ensemble (probabilistic ensemble dynamics)."""
    out: Path = Path("runs/wm")
    """Output directory: model.pt, last.pt, tb/, report.json."""
    epochs: int = 200
    """Most epochs."""
    steps_per_epoch: int = 0
    """Gradient steps per epoch (0: one pass over the training transitions)."""
    batch_size: int = 256
    """Transitions per member per gradient step."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 1e-5
    """Decoupled weight decay (AdamW)."""
    val_fraction: float = 0.1
    """Share of episodes held out for validation (at least one)."""
    patience: int = 5
    """Epochs without a 1% improvement of the elites' validation error before stopping."""
    members: int = 7
    """Ensemble members."""
    elites: int = 5
    """Members used for prediction."""
    hidden: int = 200
    """Units per hidden layer."""
    layers: int = 4
    """Hidden layers."""
    seed: int = 0
    """Seed of the split, the initialisation and the batches."""
    device: str = "cpu"
    """Torch device."""
    resume: bool = False
    """Continue from `<out>/last.pt`."""
    progress: bool = True
    """Show a progress bar."""


def train_world_model(cfg: TrainWMCfg) -> dict:
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; valid models: {', '.join(MODELS)}")
    torch.manual_seed(cfg.seed)
    dataset = Dataset(cfg.data)
    if len(dataset) < 2:
        raise ValueError(f"{cfg.data}: need at least 2 episodes (one held out), got {len(dataset)}")
    data = EpisodeData(dataset, device=cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(dataset), generator=gen)
    n_val = max(1, round(cfg.val_fraction * len(dataset)))
    val_eps = sorted(order[:n_val].tolist())
    is_val = torch.zeros(len(dataset), dtype=torch.bool)
    is_val[val_eps] = True
    in_val = is_val[data.episode_of.cpu()]
    train_idx, val_idx = (~in_val).nonzero().squeeze(-1), in_val.nonzero().squeeze(-1)
    model_cfg = {k: getattr(cfg, k) for k in ("members", "elites", "hidden", "layers")}
    model = EnsembleDynamics(data.data["obs"].shape[1], data.data["actions"].shape[1], model_cfg)
    model.to(cfg.device)
    model.set_normalizer(data.__getitems__(train_idx))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    val_batch = data.__getitems__(val_idx[torch.randperm(len(val_idx), generator=gen)[:50_000]])
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    meta = {"env_args": dataset.env_args, "data": str(cfg.data), "val_episodes": val_eps,
            "train": settings}  # fmt: skip
    state = {"epoch": 0, "best": float("inf"), "since_best": 0}
    last = cfg.out / "last.pt"
    if cfg.resume and last.exists():
        ckpt = read_checkpoint(last, cfg.model)
        if ckpt["config"] != model.config or ckpt["val_episodes"] != val_eps:
            raise ValueError(f"{last}: was trained with other settings; cannot resume")
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        state = ckpt["progress"]
        gen.set_state(ckpt["generator"])
    elif (cfg.out / "model.pt").exists() and not cfg.resume:
        raise ValueError(f"{cfg.out} already holds a model; pass --resume or another --out")
    steps = cfg.steps_per_epoch or max(1, len(train_idx) // cfg.batch_size)
    log = SummaryWriter(str(cfg.out / "tb"))
    bar = tqdm(total=cfg.epochs, initial=state["epoch"], unit="epoch", disable=not cfg.progress)
    start, first_epoch = time.perf_counter(), state["epoch"]
    while state["epoch"] < cfg.epochs and state["since_best"] < cfg.patience:
        model.train()
        for _ in range(steps):
            pick = torch.randint(len(train_idx), (cfg.members * cfg.batch_size,), generator=gen)
            batch = data.__getitems__(train_idx[pick])
            batch = {
                k: v.reshape(cfg.members, cfg.batch_size, *v.shape[1:]) for k, v in batch.items()
            }
            loss, scalars = model.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        errors = model.member_errors(val_batch)
        model.set_elites(errors)
        elite_error = float(errors[model.elite_ids].mean())
        state["epoch"] += 1
        epoch = state["epoch"]
        for key, value in scalars.items():
            log.add_scalar(f"losses/{key}", value, epoch)
        log.add_scalar("val/elite_mse", elite_error, epoch)
        for i, err in enumerate(errors.tolist()):
            log.add_scalar(f"val/member_{i}_mse", err, epoch)
        seen = (epoch - first_epoch) * steps * cfg.members * cfg.batch_size
        log.add_scalar("charts/transitions_per_s", seen / (time.perf_counter() - start), epoch)
        if elite_error < 0.99 * state["best"]:
            state["best"], state["since_best"] = elite_error, 0
            save_atomic(model.checkpoint(**meta, val_mse=elite_error), cfg.out / "model.pt")
        else:
            state["since_best"] += 1
        save_atomic(model.checkpoint(**meta, optimizer=opt.state_dict(), progress=state,
                                     generator=gen.get_state()), last)  # fmt: skip
        bar.update(1)
        bar.set_postfix(val_mse=f"{elite_error:.4f}", best=f"{state['best']:.4f}")
    bar.close()
    log.close()
    best = load(cfg.out / "model.pt").to(cfg.device)
    report = {
        "epochs": state["epoch"],
        "val_mse": state["best"],
        "open_loop": open_loop_error(best, dataset, val_eps),
    }
    (cfg.out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def run_train_wm(cfg: TrainWMCfg) -> None:
    report = train_world_model(cfg)
    err = report["open_loop"]
    print(f"{cfg.out}: {cfg.model} trained {report['epochs']} epochs, validation mse "
          f"{report['val_mse']:.4f} (normalised)")  # fmt: skip
    print("  open-loop error (normalised), model vs copy-last baseline:")
    for h in err["model"]:
        print(f"    h={h:<3} {err['model'][h]:8.4f}  vs {err['copy_last'][h]:8.4f}")
