"""`python run.py train-wm`: fit a world model to a recorded dataset.

Whole episodes are held out for validation. An epoch is `steps_per_epoch`
gradient steps (by default one pass over the training transitions), then the
model is scored on the held-out episodes and the best model so far is kept.
Training stops when the validation score has not improved by 1% for `patience`
epochs (MBPO's rule), or at `epochs`.

- ensemble: every member draws its own random batches of transitions (sampling
  with replacement: a bootstrap per member); validation picks the elites.
- rssm: batches of windows of `sequence_length` steps (with frames for a model
  that sees); validation is the open-loop prediction error over held-out
  windows (8 steps observed, the rest imagined) plus their reward error.
- joint: batches of windows of `context + chunk - 1` steps, with as many windows
  of `--play` episodes (dynamics only) if given; validation is the training loss
  (dynamics and actions) on held-out demonstration windows.
- cascaded: the same with windows of `chunk` steps (play windows train its inverse
  and forward dynamics, not its future predictor).

Checkpoints are atomic: `model.pt` (the best model) and `last.pt` (everything
`--resume` needs). TensorBoard scalars go to `<out>/tb`; `report.json` holds the
open-loop error of the best model on the held-out episodes.

Distributed: started by `torchrun --nproc-per-node N run.py train-wm ...`, every
process trains the model wrapped in `DistributedDataParallel` (gloo on the CPU,
nccl on GPUs, one per process). Each process draws the same global batch from the
same seeded generator and takes its 1/N slice of it (of every ensemble member's
rows), so N processes train on the batches one process would, with gradients
averaged by DDP; the batch size must be a multiple of N. Every process scores the
same held-out windows (the replicas are identical, so they stop together); only
rank 0 writes checkpoints, TensorBoard and the report, and logs the losses
averaged over the processes.
"""

from __future__ import annotations

import gc
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from sim.atomic import write_bytes_atomic
from sim.dataset import Dataset
from sim.loader import EpisodeData
from world_models.base import KINDS, load, read_checkpoint, save_atomic, shared_batch
from world_models.metrics import HORIZONS, open_loop_error

CONTEXT = 8  # observed steps before each open-loop start in the report

MODELS = ("ensemble", "rssm", "joint", "cascaded")
# data statistics, refitted when a model is fine-tuned on new data (`--init`)
_STATISTICS = (
    "in_mean",
    "in_std",
    "out_mean",
    "out_std",
    "obs_mean",
    "obs_std",
    "delta_mean",
    "delta_std",
)
_TRAINING = ("batch_size", "lr", "weight_decay", "grad_clip", "sequence_length")


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


@dataclass
class TrainWMCfg:
    """Train a world model (ensemble dynamics, an RSSM, or a joint or cascaded World
    Action Model) on a recorded dataset."""

    data: Path
    """Dataset directory written by `collect`."""
    model: str = "ensemble"
    """Model kind: ensemble (probabilistic ensemble dynamics), rssm, joint (a World
    Action Model: dynamics and a policy in one transformer) or cascaded (a World
    Action Model: a future predictor and inverse dynamics)."""
    out: Path = Path("runs/wm")
    """Output directory: model.pt, last.pt, tb/, report.json."""
    epochs: int = 200
    """Most epochs."""
    steps_per_epoch: int = 0
    """Gradient steps per epoch (0: one pass over the training transitions)."""
    val_fraction: float = 0.1
    """Share of episodes held out for validation (at least one)."""
    patience: int = 5
    """Epochs without a 1% improvement of the validation score before stopping."""
    seed: int = 0
    """Seed of the split, the initialisation and the batches."""
    device: str = "cpu"
    """Torch device."""
    resume: bool = False
    """Continue from `<out>/last.pt`."""
    play: Path | None = None
    """Play data for a joint or cascaded WAM: episodes (of the same task) that train
    the dynamics (and a cascaded WAM's inverse dynamics) but not the policy, beside
    `data`'s demonstrations; each gradient step draws as many play windows as
    demonstration windows."""
    init: Path | None = None
    """Fine-tune: start from this model's weights (a model of the same kind and
    settings); normalisation statistics are refitted to the data."""
    progress: bool = True
    """Show a progress bar."""
    ensemble: EnsembleCfg = field(default_factory=EnsembleCfg)
    """Settings of `--model ensemble`."""
    rssm: RssmCfg = field(default_factory=RssmCfg)
    """Settings of `--model rssm`."""
    joint: JointCfg = field(default_factory=JointCfg)
    """Settings of `--model joint`."""
    cascaded: CascadedCfg = field(default_factory=CascadedCfg)
    """Settings of `--model cascaded`."""


def _model_settings(cfg: TrainWMCfg):
    """(model config dict, training settings) of the chosen model."""
    settings = {
        "ensemble": cfg.ensemble,
        "rssm": cfg.rssm,
        "joint": cfg.joint,
        "cascaded": cfg.cascaded,
    }[cfg.model]
    model_cfg = {f.name: getattr(settings, f.name) for f in fields(settings)}
    for key in _TRAINING:
        model_cfg.pop(key, None)
    return model_cfg, settings


class _Loss(nn.Module):
    """The model's loss as a module's forward, which DDP wraps; its masked means
    count the valid steps of the global batch (`world_models.base.shared_batch`)."""

    def __init__(self, model: nn.Module, processes: int = 1):
        super().__init__()
        self.model, self.processes = model, processes

    def forward(self, batch: dict[str, torch.Tensor]):
        with shared_batch(self.processes):
            return self.model.loss(batch)


def _process_group(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) of this process: a torchrun launch (WORLD_SIZE > 1)
    joins the process group (gloo on the CPU, nccl on CUDA, one GPU per local rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _shard(idx: torch.Tensor, members: int, rank: int, world: int) -> torch.Tensor:
    """This process's slice of a global batch's indices: of each member's rows (the
    global batch holds `members` consecutive blocks), the rank-th 1/world part."""
    if world == 1:
        return idx
    return idx.reshape(members, world, -1)[:, rank].reshape(-1)


def train_world_model(cfg: TrainWMCfg) -> dict:
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; valid models: {', '.join(MODELS)}")
    rank, world, device = _process_group(cfg.device)
    try:
        return _train(cfg, rank, world, device)
    finally:
        if world > 1:  # free DDP's hold on the group first, while Python is fully alive
            gc.collect()
            dist.destroy_process_group()


def _train(cfg: TrainWMCfg, rank: int, world: int, device: str) -> dict:
    cfg = replace(cfg, device=device)
    torch.manual_seed(cfg.seed)
    dataset = Dataset(cfg.data)
    if len(dataset) < 2:
        raise ValueError(f"{cfg.data}: need at least 2 episodes (one held out), got {len(dataset)}")
    model_cfg, settings = _model_settings(cfg)
    pixels = bool(model_cfg.get("pixels"))
    if pixels:
        if not dataset.has_pixels():
            raise ValueError(
                f"{cfg.data}: --{cfg.model}.pixels needs a dataset with frames "
                "(collect --pixels 64)"
            )
        model_cfg["frame_shape"] = list(dataset.frame_shape())
        if cfg.model == "rssm":
            model_cfg["obs_residual"] = False
    elif cfg.model == "rssm":
        model_cfg["frame_motion"] = False
    window = getattr(settings, "sequence_length", None)
    if KINDS[cfg.model].acts:  # a WAM's windows follow from its settings
        window = KINDS[cfg.model].window({**KINDS[cfg.model].defaults, **model_cfg})
    data = EpisodeData(dataset, sequence_length=window, pixels=pixels, device=cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(dataset), generator=gen)
    n_val = max(1, round(cfg.val_fraction * len(dataset)))
    val_eps = sorted(order[:n_val].tolist())
    is_val = torch.zeros(len(dataset), dtype=torch.bool)
    is_val[val_eps] = True
    in_val = is_val[data.episode_of.cpu()]
    train_idx, val_idx = (~in_val).nonzero().squeeze(-1), in_val.nonzero().squeeze(-1)
    obs_dim, act_dim = data.data["obs"].shape[1], data.data["actions"].shape[1]
    model = KINDS[cfg.model](obs_dim, act_dim, model_cfg).to(cfg.device)
    fit = {k: v[train_idx.to(cfg.device)] for k, v in data.data.items()}
    play = _play_data(cfg, dataset, window, obs_dim, act_dim, pixels)
    if play is not None:  # statistics of everything the dynamics learn from
        fit = {k: torch.cat((v, play.data[k])) for k, v in fit.items()}
    if pixels and model.acts:  # pixel-change statistics from up to 256 training windows
        fit.update(_frame_sample(data, train_idx, gen))
    model.prepare(fit)
    if window is None:
        val_batch = data.__getitems__(val_idx[torch.randperm(len(val_idx), generator=gen)[:50_000]])
    else:  # non-overlapping windows over the held-out episodes, at most 64
        starts = val_idx[data.step[val_idx].cpu() % window == 0]
        val_batch = data.__getitems__(starts[torch.randperm(len(starts), generator=gen)[:64]])
    members = getattr(settings, "members", 1)
    if settings.batch_size % world:
        raise ValueError(
            f"batch size {settings.batch_size} does not split over {world} "
            "processes: use a multiple"
        )
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    train_settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    meta = {
        "env_args": dataset.env_args,
        "data": str(cfg.data),
        "val_episodes": val_eps,
        "train": train_settings,
    }
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
        torch.set_rng_state(ckpt["torch_rng"])
    elif (cfg.out / "model.pt").exists() and not cfg.resume:
        raise ValueError(f"{cfg.out} already holds a model; pass --resume or another --out")
    elif cfg.init is not None:
        ckpt = read_checkpoint(cfg.init, cfg.model)
        if ckpt["config"] != model.config:
            raise ValueError(
                f"{cfg.init}: a model with other settings cannot be fine-tuned as {model.config}"
            )
        stats = {k: v for k, v in model.state_dict().items() if k in _STATISTICS}
        model.load_state_dict({**ckpt["state_dict"], **stats})
    per_step = members * settings.batch_size * (window or 1)
    steps = cfg.steps_per_epoch or max(1, len(train_idx) // per_step)
    lead = rank == 0  # writes the files
    step_loss: nn.Module = _Loss(model, world)
    if world > 1:  # replicas start from rank 0's weights; gradients are averaged
        step_loss = DistributedDataParallel(step_loss)
    log = SummaryWriter(str(cfg.out / "tb")) if lead else None
    bar = tqdm(
        total=cfg.epochs, initial=state["epoch"], unit="epoch", disable=not (cfg.progress and lead)
    )
    start, first_epoch = time.perf_counter(), state["epoch"]
    while state["epoch"] < cfg.epochs and state["since_best"] < cfg.patience:
        model.train()
        sums: dict[str, float] = {}
        for _ in range(steps):
            pick = torch.randint(len(train_idx), (members * settings.batch_size,), generator=gen)
            batch = data.__getitems__(train_idx[_shard(pick, members, rank, world)])
            if play is not None:
                rows = torch.randint(len(play), (settings.batch_size,), generator=gen)
                batch = _with_play(batch, play.__getitems__(_shard(rows, 1, rank, world)))
            if members > 1:  # each member its own rows: [E, B, ...]
                batch = {k: v.reshape(members, -1, *v.shape[1:]) for k, v in batch.items()}
            loss, scalars = step_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            for key, value in scalars.items():
                sums[key] = sums.get(key, 0.0) + value
        model.eval()
        score, val_scalars = model.validate(val_batch)
        state["epoch"] += 1
        epoch = state["epoch"]
        if world > 1:  # the losses of the whole global batches
            names = sorted(sums)
            total = torch.tensor([sums[k] for k in names], dtype=torch.float64, device=device)
            dist.all_reduce(total)
            sums = dict(zip(names, (total / world).tolist(), strict=True))
        improved = score < 0.99 * state["best"]
        if improved:
            state["best"], state["since_best"] = score, 0
        else:
            state["since_best"] += 1
        if lead:
            for key, value in sums.items():
                log.add_scalar(f"losses/{key}", value / steps, epoch)
            log.add_scalar("val/score", score, epoch)
            for key, value in val_scalars.items():
                log.add_scalar(f"val/{key}", value, epoch)
            seen = (epoch - first_epoch) * steps * per_step
            log.add_scalar("charts/transitions_per_s", seen / (time.perf_counter() - start), epoch)
            if improved:
                save_atomic(model.checkpoint(**meta, val_score=score), cfg.out / "model.pt")
            save_atomic(
                model.checkpoint(
                    **meta,
                    optimizer=opt.state_dict(),
                    progress=state,
                    generator=gen.get_state(),
                    torch_rng=torch.get_rng_state(),
                ),
                last,
            )
        bar.update(1)
        bar.set_postfix(val=f"{score:.4f}", best=f"{state['best']:.4f}")
    bar.close()
    if not lead:
        dist.barrier()  # rank 0 writes the report
        return {"model": cfg.model, "epochs": state["epoch"], "val_score": state["best"]}
    log.close()
    best = load(cfg.out / "model.pt").to(cfg.device)
    report = {
        "model": cfg.model,
        "epochs": state["epoch"],
        "val_score": state["best"],
        "open_loop": _open_loop(best, dataset, val_eps),
    }
    write_bytes_atomic(cfg.out / "report.json", json.dumps(report, indent=1).encode())
    if world > 1:
        dist.barrier()
    return report


def _frame_sample(data: EpisodeData, rows: torch.Tensor, gen: torch.Generator) -> dict:
    """`pixels` / `next_pixels` of the valid transitions of up to 256 random windows."""
    pick = rows[torch.randperm(len(rows), generator=gen)[:256]]
    windows = data.__getitems__(pick)
    valid = windows["mask"].bool()
    return {"pixels": windows["pixels"][valid], "next_pixels": windows["next_pixels"][valid]}


def _play_data(
    cfg: TrainWMCfg,
    dataset: Dataset,
    window: int | None,
    obs_dim: int,
    act_dim: int,
    pixels: bool = False,
) -> EpisodeData | None:
    """The windows of `--play`'s episodes, checked against the demonstrations."""
    if cfg.play is None:
        return None
    if cfg.model not in ("joint", "cascaded"):
        raise ValueError(
            f"--play trains a WAM's dynamics without its policy; the "
            f"{cfg.model} model has no policy to leave out: collect its "
            "episodes into one dataset"
        )
    play = EpisodeData(cfg.play, sequence_length=window, pixels=pixels, device=cfg.device)
    if pixels and play.dataset.frame_shape() != dataset.frame_shape():
        raise ValueError(
            f"{cfg.play}: frames of shape {play.dataset.frame_shape()}, the "
            f"demonstrations' {dataset.frame_shape()}"
        )
    task, play_task = dataset.env_args.get("env_name"), play.dataset.env_args.get("env_name")
    if play_task != task:
        raise ValueError(
            f"{cfg.play}: play data of task {play_task!r}, the demonstrations are of {task!r}"
        )
    dims = (play.data["obs"].shape[1], play.data["actions"].shape[1])
    if dims != (obs_dim, act_dim):
        raise ValueError(
            f"{cfg.play}: (obs, action) dims {dims}, the demonstrations' {(obs_dim, act_dim)}"
        )
    return play


def _with_play(demos: dict[str, torch.Tensor], play: dict[str, torch.Tensor]) -> dict:
    """One batch of demonstration and play windows; `demo` marks the windows whose
    actions are targets."""
    batch = {k: torch.cat((v, play[k])) for k, v in demos.items()}
    n, m = len(demos["obs"]), len(play["obs"])
    batch["demo"] = torch.cat((torch.ones(n, dtype=torch.bool), torch.zeros(m, dtype=torch.bool)))
    batch["demo"] = batch["demo"].to(demos["obs"].device)
    return batch


def _open_loop(model, dataset: Dataset, episodes: list[int]) -> dict:
    """Open-loop errors at the horizons that the held-out episodes are long enough for
    (after the 8 observed steps); empty dicts if none is."""
    longest = max(dataset.length(e) for e in episodes)
    horizons = tuple(h for h in HORIZONS if CONTEXT + h <= longest)
    if not horizons:
        return {"model": {}, "copy_last": {}, "reward_model": {}}
    return open_loop_error(model, dataset, episodes, horizons, context=CONTEXT)


def run_train_wm(cfg: TrainWMCfg) -> None:
    report = train_world_model(cfg)
    if "open_loop" not in report:  # a distributed run's other ranks
        return
    err = report["open_loop"]
    print(
        f"{cfg.out}: {cfg.model} trained {report['epochs']} epochs, validation score "
        f"{report['val_score']:.4f}"
    )
    print("  open-loop error (normalised), model vs copy-last baseline:")
    for h in err["model"]:
        print(f"    h={h:<3} {err['model'][h]:8.4f}  vs {err['copy_last'][h]:8.4f}")
