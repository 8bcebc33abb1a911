"""`python run.py train-wm`: fit a world model to a recorded dataset.

Whole episodes are held out: validation episodes choose (the epoch to stop at,
the model kept, an ensemble's elites), test episodes choose nothing and are what
the report's open-loop errors are measured on (`sim.data.split`). An epoch is
`steps_per_epoch` gradient steps (by default one pass over the training
transitions), then the model is scored on the validation episodes and the best
model so far is kept.
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
- tdmpc2: windows of `sequence_length` (its latent rollout horizon, 3) steps; its
  loss also trains its value and policy prior, its encoder has its own learning rate
  (`param_groups`), the policy's gradient is clipped apart (`clip_gradients`) and
  its target Q-functions follow after every step (`after_step`); validation is its
  latent consistency and reward error on held-out windows.

Checkpoints are atomic: `model.pt` (the best model) and `last.pt` (everything
`--resume` needs). TensorBoard scalars go to `<out>/tb`; `report.json` holds the
open-loop error of the best model on the test episodes, beside the copy-last and
constant-velocity baselines (with `--test-fraction 0` on the validation episodes,
and the report says so).

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
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import world_models.models  # noqa: F401  (registers every model kind)
from envs.features import periodic_obs
from sim.data.atomic import write_json_atomic
from sim.data.dataset import Dataset
from sim.data.loader import EpisodeData
from sim.data.split import split_episodes
from world_models.base import (
    KINDS,
    load,
    model_config,
    read_checkpoint,
    save_atomic,
    shared_batch,
    with_settings,
)
from world_models.metrics import HORIZONS, no_obs_error, open_loop_error

CONTEXT = 8  # observed steps before each open-loop start in the report

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


@dataclass
class _TrainWMCfg:
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
    """Share of episodes held out for validation (at least one): early stopping, the
    model kept and the elites are chosen on them."""
    test_fraction: float = 0.1
    """Share of episodes held out for the test (at least one; 0: none): nothing is
    chosen on them, the report's open-loop errors are measured on them."""
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
    continue_from: Path | None = None
    """Continue another run's training on this data: the model of the same kind and
    settings in that run's `last.pt`, with its normalisation statistics and its
    optimiser's state, as if its training had gone on (the closed loop's one model
    trained across iterations at a fixed ratio of gradient steps to data)."""
    keep_last: bool = False
    """Write the last epoch's model as `model.pt` (continual training: the newest
    weights act), not the one with the best validation score."""
    progress: bool = True
    """Show a progress bar."""


TrainWMCfg = with_settings(
    _TrainWMCfg, sorted(k for k, c in KINDS.items() if hasattr(c, "settings"))
)
"""`train-wm`'s config: `_TrainWMCfg` and one settings field per registered model kind
(`--ensemble.*`, `--rssm.*`, ...)."""


def _model_settings(cfg: TrainWMCfg):
    """(model config dict, training settings) of the chosen model."""
    settings = getattr(cfg, cfg.model)
    return model_config(settings), settings


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
    if cfg.model not in KINDS:
        raise ValueError(f"unknown model {cfg.model!r}; valid models: {', '.join(KINDS)}")
    if cfg.init is not None and cfg.continue_from is not None:
        raise ValueError(
            "--init starts from a model's weights, --continue-from goes on with "
            "its training: give one of them"
        )
    rank, world, device = _process_group(cfg.device)
    try:
        return _train(cfg, rank, world, device)
    finally:
        if world > 1:  # free DDP's hold on the group first, while Python is fully alive
            gc.collect()
            dist.destroy_process_group()


def _train(cfg: TrainWMCfg, rank: int, world: int, device: str) -> dict:
    """Split the data, build the model, restore or initialise it, train it epoch by
    epoch until the budget or early stopping, and report the best model."""
    run = _Run(replace(cfg, device=device), rank, world)
    run.restore()
    run.start()
    while run.state["epoch"] < cfg.epochs and run.state["since_best"] < cfg.patience:
        sums = run.gradient_steps()
        run.end_epoch(sums)
    return run.finish()


class _Run:
    """One training run: its data and split, model, optimiser, progress and files."""

    def __init__(self, cfg: TrainWMCfg, rank: int, world: int):
        self.cfg, self.rank, self.world = cfg, rank, world
        torch.manual_seed(cfg.seed)
        self.dataset = dataset = Dataset(cfg.data)
        model_cfg, self.settings = self._model_config()
        pixels = bool(model_cfg.get("pixels"))
        kind = KINDS[cfg.model]
        window = getattr(self.settings, "sequence_length", None)
        if kind.acts:  # a WAM's windows follow from its settings
            window = kind.window({**kind.defaults, **model_cfg})
        self.window = window
        self.data = EpisodeData(dataset, sequence_length=window, pixels=pixels, device=cfg.device)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self._split()
        obs_dim, act_dim = self.data.data["obs"].shape[1], self.data.data["actions"].shape[1]
        self.model = KINDS[cfg.model](obs_dim, act_dim, model_cfg).to(cfg.device)
        self.play = _play_data(cfg, dataset, window, obs_dim, act_dim, pixels)
        self._prepare(pixels)
        self.val_batch = self._validation_batch()
        self.members = getattr(self.settings, "members", 1)
        if self.settings.batch_size % world:
            raise ValueError(
                f"batch size {self.settings.batch_size} does not split over {world} "
                "processes: use a multiple"
            )
        self.opt = torch.optim.AdamW(
            self.model.param_groups(self.settings.lr),
            lr=self.settings.lr,
            weight_decay=self.settings.weight_decay,
        )
        train_settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
        self.meta = {
            "env_args": dataset.env_args,
            "data": str(cfg.data),
            "val_episodes": self.val_eps,
            "test_episodes": self.test_eps,
            "train": train_settings,
        }
        self.state = {"epoch": 0, "best": float("inf"), "since_best": 0}
        self.last = cfg.out / "last.pt"

    def _model_config(self) -> tuple[dict, Any]:
        """The model's config (frame shape included for a model that sees) and the
        kind's settings."""
        cfg, dataset = self.cfg, self.dataset
        model_cfg, settings = _model_settings(cfg)
        pixels = bool(model_cfg.get("pixels"))
        if pixels:
            if not dataset.has_pixels():
                raise ValueError(
                    f"{cfg.data}: --{cfg.model}.pixels needs a dataset with frames "
                    "(collect --pixels 64)"
                )
            model_cfg["frame_shape"] = list(dataset.frame_shape())
        if KINDS[cfg.model].periodic_inputs:
            model_cfg["periodic"] = list(periodic_obs(dataset.env_args.get("env_name")))
        return KINDS[cfg.model].adapt(model_cfg, pixels), settings

    def _split(self) -> None:
        """Hold out validation and test episodes; index the others' transitions."""
        cfg, n = self.cfg, len(self.dataset)
        split = split_episodes(n, cfg.val_fraction, cfg.test_fraction, self.gen, str(cfg.data))
        self.val_eps, self.test_eps = split.val, split.test
        part = split.part_of(self.data.episode_of)
        self.train_idx = (part == 0).nonzero().squeeze(-1)
        self.val_idx = (part == 1).nonzero().squeeze(-1)

    def _prepare(self, pixels: bool) -> None:
        """Fit the model's normalisation statistics to the training data (and play)."""
        data, model = self.data, self.model
        fit = {k: v[self.train_idx.to(self.cfg.device)] for k, v in data.data.items()}
        if self.play is not None:  # statistics of everything the dynamics learn from
            fit = {k: torch.cat((v, self.play.data[k])) for k, v in fit.items()}
        if pixels and model.acts:  # pixel-change statistics from up to 256 training windows
            fit.update(_frame_sample(data, self.train_idx, self.gen))
        model.prepare(fit)

    def _validation_batch(self) -> dict[str, torch.Tensor]:
        """Up to 50,000 held-out transitions, or up to 64 non-overlapping windows (a kind's
        `validation_windows`, if it sets one: short windows need more)."""
        data, val_idx, gen = self.data, self.val_idx, self.gen
        if self.window is None:
            pick = val_idx[torch.randperm(len(val_idx), generator=gen)[:50_000]]
            return data.__getitems__(pick)
        starts = val_idx[data.step[val_idx].cpu() % self.window == 0]
        count = getattr(self.model, "validation_windows", 64)
        return data.__getitems__(starts[torch.randperm(len(starts), generator=gen)[:count]])

    def restore(self) -> None:
        """Continue from `last.pt` (--resume), or start from --init's weights with the
        statistics of this data; refuse to overwrite a finished model."""
        cfg, model = self.cfg, self.model
        if cfg.resume and self.last.exists():
            ckpt = read_checkpoint(self.last, cfg.model)
            split = (ckpt["val_episodes"], ckpt.get("test_episodes", []))
            if ckpt["config"] != model.config or split != (self.val_eps, self.test_eps):
                raise ValueError(f"{self.last}: was trained with other settings; cannot resume")
            model.load_state_dict(ckpt["state_dict"])
            self.opt.load_state_dict(ckpt["optimizer"])
            self.state = ckpt["progress"]
            self.gen.set_state(ckpt["generator"])
            torch.set_rng_state(ckpt["torch_rng"])
        elif (cfg.out / "model.pt").exists() and not cfg.resume:
            raise ValueError(f"{cfg.out} already holds a model; pass --resume or another --out")
        elif cfg.continue_from is not None:
            ckpt = read_checkpoint(Path(cfg.continue_from) / "last.pt", cfg.model)
            if ckpt["config"] != model.config:
                raise ValueError(
                    f"{cfg.continue_from}: a model with other settings cannot be continued "
                    f"as {model.config}"
                )
            model.load_state_dict(ckpt["state_dict"])  # its statistics included
            self.opt.load_state_dict(ckpt["optimizer"])
        elif cfg.init is not None:
            ckpt = read_checkpoint(cfg.init, cfg.model)
            if ckpt["config"] != model.config:
                raise ValueError(
                    f"{cfg.init}: a model with other settings cannot be fine-tuned as "
                    f"{model.config}"
                )
            stats = {k: v for k, v in model.state_dict().items() if k in _STATISTICS}
            model.load_state_dict({**ckpt["state_dict"], **stats})

    def start(self) -> None:
        """Steps per epoch, the (DDP-wrapped) loss, the log and the progress bar."""
        cfg = self.cfg
        self.per_step = self.members * self.settings.batch_size * (self.window or 1)
        self.steps = cfg.steps_per_epoch or max(1, len(self.train_idx) // self.per_step)
        self.lead = self.rank == 0  # writes the files
        self.step_loss: nn.Module = _Loss(self.model, self.world)
        if self.world > 1:  # replicas start from rank 0's weights; gradients are averaged
            self.step_loss = DistributedDataParallel(self.step_loss)
        self.log = SummaryWriter(str(cfg.out / "tb")) if self.lead else None
        self.bar = tqdm(
            total=cfg.epochs,
            initial=self.state["epoch"],
            unit="epoch",
            disable=not (cfg.progress and self.lead),
        )
        self.began, self.first_epoch = time.perf_counter(), self.state["epoch"]

    def gradient_steps(self) -> dict[str, float]:
        """One epoch of gradient steps; the sums of the loss terms."""
        members, batch_size = self.members, self.settings.batch_size
        rank, world, play = self.rank, self.world, self.play
        self.model.train()
        sums: dict[str, float] = {}
        for _ in range(self.steps):
            pick = torch.randint(len(self.train_idx), (members * batch_size,), generator=self.gen)
            batch = self.data.__getitems__(self.train_idx[_shard(pick, members, rank, world)])
            if play is not None:
                rows = torch.randint(len(play), (batch_size,), generator=self.gen)
                batch = _with_play(batch, play.__getitems__(_shard(rows, 1, rank, world)))
            if members > 1:  # each member its own rows: [E, B, ...]
                batch = {k: v.reshape(members, -1, *v.shape[1:]) for k, v in batch.items()}
            loss, scalars = self.step_loss(batch)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.settings.grad_clip:
                self.model.clip_gradients(self.settings.grad_clip)
            self.opt.step()
            self.model.after_step()
            for key, value in scalars.items():
                sums[key] = sums.get(key, 0.0) + value
        return sums

    def end_epoch(self, sums: dict[str, float]) -> None:
        """Validate, track the best score, log and checkpoint (rank 0)."""
        self.model.eval()
        score, val_scalars = self.model.validate(self.val_batch)
        state = self.state
        state["epoch"] += 1
        if self.world > 1:  # the losses of the whole global batches
            names = sorted(sums)
            total = torch.tensor(
                [sums[k] for k in names], dtype=torch.float64, device=self.cfg.device
            )
            dist.all_reduce(total)
            sums = dict(zip(names, (total / self.world).tolist(), strict=True))
        improved = score < 0.99 * state["best"]
        if improved:
            state["best"], state["since_best"] = score, 0
        else:
            state["since_best"] += 1
        if self.lead:
            self._log_epoch(sums, score, val_scalars)
            self._checkpoint(score, improved)
        self.bar.update(1)
        self.bar.set_postfix(val=f"{score:.4f}", best=f"{state['best']:.4f}")

    def _log_epoch(self, sums: dict[str, float], score: float, val_scalars: dict) -> None:
        log, epoch = self.log, self.state["epoch"]
        for key, value in sums.items():
            log.add_scalar(f"losses/{key}", value / self.steps, epoch)
        log.add_scalar("val/score", score, epoch)
        for key, value in val_scalars.items():
            log.add_scalar(f"val/{key}", value, epoch)
        seen = (epoch - self.first_epoch) * self.steps * self.per_step
        log.add_scalar("charts/transitions_per_s", seen / (time.perf_counter() - self.began), epoch)

    def _checkpoint(self, score: float, improved: bool) -> None:
        """`model.pt` when the score improved; `last.pt` (what --resume needs) always."""
        model = self.model
        if improved or self.cfg.keep_last:
            save_atomic(model.checkpoint(**self.meta, val_score=score), self.cfg.out / "model.pt")
        save_atomic(
            model.checkpoint(
                **self.meta,
                optimizer=self.opt.state_dict(),
                progress=self.state,
                generator=self.gen.get_state(),
                torch_rng=torch.get_rng_state(),
            ),
            self.last,
        )

    def finish(self) -> dict:
        """The report of the best model (its open-loop errors), written by rank 0."""
        cfg, state = self.cfg, self.state
        self.bar.close()
        if not self.lead:
            dist.barrier()  # rank 0 writes the report
            return {"model": cfg.model, "epochs": state["epoch"], "val_score": state["best"]}
        self.log.close()
        best = load(cfg.out / "model.pt").to(cfg.device)
        on = "test" if self.test_eps else "validation"
        report = {
            "model": cfg.model,
            "epochs": state["epoch"],
            "val_score": state["best"],
            "open_loop": _open_loop(best, self.dataset, self.test_eps or self.val_eps),
            "open_loop_on": on,
            **({} if best.predicts_obs else {"open_loop_note": no_obs_error(best)}),
            "val_episodes": self.val_eps,
            "test_episodes": self.test_eps,
        }
        write_json_atomic(cfg.out / "report.json", report)
        if self.world > 1:
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
        return {"model": {}, "copy_last": {}, "const_velocity": {}, "reward_model": {}}
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
    if "open_loop_note" in report:
        print(
            f"  {report['open_loop_note']}: reward error / its variance on the "
            f"{report['open_loop_on']} episodes"
        )
        for h, value in err["reward_model"].items():
            print(f"    h={h:<3} {value:10.3e}")
        return
    print(
        f"  open-loop error (normalised) on the {report['open_loop_on']} episodes: model, "
        "copy-last and constant-velocity baselines"
    )
    for h in err["model"]:
        print(
            f"    h={h:<3} {err['model'][h]:10.3e} {err['copy_last'][h]:10.3e} "
            f"{err['const_velocity'][h]:10.3e}"
        )
