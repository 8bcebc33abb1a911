"""The world model protocol, and checkpoints that say what they hold.

A world model is a `torch.nn.Module` with a few verbs (TD-MPC2 style):

    state = wm.encode(obs, frames)                  # model state of one observation
    state = wm.observe(obs, actions, frames)        # ... or filtered through a history
    step = wm.next(state, action, generator)        # Step: state, obs, reward, cont, disagreement
    step = wm.imagine(state, action, generator)     # a sampled step that gradients flow through
    images = wm.frames(state)                       # decoded frames (models that see)
    v = wm.value(state, generator)                  # models that `plans`: their own value
    action = wm.policy(state, generator)            # ... and policy prior (TD-MPC2)
    actions = wm.action_chunk(state)                # World Action Models (`acts`): the
    state = wm.advance(state, action, obs)          # policy, and its history after a real step
    loss, metrics = wm.loss(batch)                  # batch from `sim.data.loader.EpisodeData`
    score, metrics = wm.validate(batch)             # held-out score, lower is better

`cont` is the probability that the episode continues (1 - termination);
`disagreement` is the model's epistemic uncertainty per row (0 if it has none).
With a generator `next` samples, without one it returns the mean prediction.
A model without a decoder (`predicts_obs` False, TD-MPC2's latent model) cannot
predict observations: its `Step.obs` is its latent state, which `ImaginedEnv`
serves as the observation and the fidelity metrics refuse to compare with real
observations.
Checkpoints are plain dicts (`format`, `kind`, `config`, `dims`, `state_dict`,
and whatever the trainer adds) saved atomically and loaded with
`weights_only=True`; `load` checks the format, the kind and the shapes and says
what does not match. A checkpoint file is what `torch.save` writes (a zip archive,
which plain `torch.load` reads) with the SHA-256 of its bytes as the archive's
comment; `load` checks it first, since torch checks no checksum of its own and
would read damaged weights as wrong numbers (`save_atomic`, `read_file`).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import field, fields, make_dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import torch
import torch.distributed as dist
import tyro
from torch import nn

from envs.features import angle_features
from sim.data.atomic import write_atomic

FORMAT = "wam-sandbox/world-model"
MODEL_KEYS = ("format", "kind", "config", "dims", "state_dict", "env_args")
"""What of a world model's checkpoint rebuilds it (an agent's config that holds a
model keeps these, not the trainer's optimiser state or progress)."""
KINDS: dict[str, type[WorldModel]] = {}
"""Every registered model kind (a subclass that sets `kind` registers itself)."""
TRAINING = ("batch_size", "lr", "weight_decay", "grad_clip", "sequence_length")
"""Fields of a kind's settings that configure its training, not the model."""


_SHARERS = 1  # processes whose batches make up the global batch of a training step


@contextmanager
def shared_batch(processes: int) -> Iterator[None]:
    """Inside, `loss` sees this process's share of a global batch split over
    `processes` DDP processes, and `masked_count` the mean count over them: each
    process's masked mean is then its sum over the global count times `processes`, so
    DDP's averaged gradients (and the losses averaged over processes) are those of
    the global batch's masked means."""
    global _SHARERS
    before, _SHARERS = _SHARERS, processes
    try:
        yield
    finally:
        _SHARERS = before


def masked_count(weights: torch.Tensor) -> torch.Tensor:
    """The denominator of a masked mean `(x * weights).sum() / masked_count(weights)`:
    the weights' sum (at least 1), inside `shared_batch` their mean sum over the
    processes (a collective: every process calls it in the same order)."""
    count = weights.detach().sum(dtype=torch.float64)
    if _SHARERS > 1:
        dist.all_reduce(count)
        count = count / _SHARERS
    return count.clamp_min(1.0).to(weights.dtype)


def settings_of(kinds: list[str] | tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    """Dataclass fields (name, type, default), one per kind, holding each kind's
    settings: the fields a config adds for the model kinds it accepts."""
    return [
        (
            kind,
            Annotated[KINDS[kind].settings, tyro.conf.arg(help=f"Settings of `--model {kind}`.")],
            field(default_factory=KINDS[kind].settings),
        )
        for kind in kinds
    ]


def with_settings(base: type, kinds: list[str] | tuple[str, ...]) -> type:
    """`base` (a dataclass named `_<Name>`) with a settings field for each of `kinds`,
    as dataclass `<Name>` of the same module: a config that grows with the registry."""
    name = base.__name__.lstrip("_")
    cls = make_dataclass(name, settings_of(kinds), bases=(base,))
    cls.__module__, cls.__qualname__, cls.__doc__ = base.__module__, name, base.__doc__
    return cls


def model_config(settings: Any) -> dict[str, Any]:
    """A kind's settings less its training settings: the model's config."""
    return {f.name: getattr(settings, f.name) for f in fields(settings) if f.name not in TRAINING}


class Step(NamedTuple):
    """One imagined step of a batch, every field `[B, ...]`."""

    state: torch.Tensor
    obs: torch.Tensor
    reward: torch.Tensor
    cont: torch.Tensor
    disagreement: torch.Tensor


class WorldModel(nn.Module, ABC):
    """Base class: subclasses set `kind`, build their modules from (dims, config)."""

    kind: str
    acts: bool = False
    """A World Action Model: also `action_chunk(state)` and `advance(state, action, obs)`."""
    predicts_obs: bool = True
    """`next` predicts observations; False for a model without a decoder, whose
    `Step.obs` is its latent state (as wide as `state_dim`)."""
    plans: bool = False
    """The model carries its own value and policy prior (`value`, `policy`), trained
    by its `loss`, so that a planner over it needs nothing else (TD-MPC2)."""
    settings: type
    """The kind's settings dataclass (`--<kind>.*` of `train-wm`): the model's config
    plus its training settings (`TRAINING`)."""
    periodic_inputs: bool = False
    """The kind feeds its networks `features(obs)`: the task's unbounded angles
    (`config["periodic"]`, which `train-wm` fills in from the dataset's task) as (cos,
    sin), and predicts their changes wrapped (`envs.features`)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if getattr(cls, "kind", None):
            KINDS[cls.kind] = cls

    @classmethod
    def adapt(cls, config: dict[str, Any], pixels: bool) -> dict[str, Any]:
        """The config to build for data with (`pixels`) or without frames; a kind whose
        settings depend on what it sees changes them here."""
        return config

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any]):
        super().__init__()
        self.obs_dim, self.action_dim, self.config = obs_dim, action_dim, dict(config)

    @property
    def periodic(self) -> tuple[int, ...]:
        """Observation entries that are unbounded angles (empty unless `periodic_inputs`)."""
        return tuple(self.config.get("periodic", ())) if self.periodic_inputs else ()

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """What the networks see of observations `[..., obs_dim]`: the periodic entries as
        (cos, sin), `[..., obs_dim + len(periodic)]`."""
        return angle_features(obs, self.periodic)

    @property
    def has_disagreement(self) -> bool:
        """Whether `next` reports an epistemic disagreement (else its zeros mean
        nothing, and a penalty on it would silently do nothing)."""
        return False

    @property
    def state_dim(self) -> int:
        """Width of a model state `[B, state_dim]` (models whose states are flat vectors;
        for one that `predicts_obs` not, also the width of `Step.obs`)."""
        raise ValueError(f"a {self.kind} model does not declare its state's width")

    @property
    def sees_pixels(self) -> bool:
        """Whether the model takes (and decodes) camera frames."""
        return bool(self.config.get("pixels", False))

    @property
    def frame_shape(self) -> tuple[int, int, int] | None:
        """(H, W, 3) of the frames a model that sees takes, else None."""
        return tuple(self.config["frame_shape"]) if self.sees_pixels else None

    @abstractmethod
    def encode(self, obs: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Model state `[B, ...]` of observations `[B, obs_dim]` (and, for a model that
        sees, their frames, uint8 `[B, H, W, 3]`) with no history before them."""

    def observe(
        self, obs: torch.Tensor, actions: torch.Tensor, frames: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Model state after a history: observations `[B, T, obs_dim]` (frames
        `[B, T, H, W, 3]`) and the `[B, T-1, action_dim]` actions between them.
        Markov models need only the last observation."""
        return self.encode(obs[:, -1], None if frames is None else frames[:, -1])

    def imagine(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator
    ) -> Step:
        """One sampled step for learning in imagination: differentiable with respect to
        state and action (gradients flow through the dynamics), as cheap as the model
        allows; `disagreement` may be zeros. By default `next` with its gradients."""
        with torch.enable_grad():
            return self.next(state, action, generator)

    def frames(self, state: torch.Tensor) -> torch.Tensor:
        """Decoded camera frames of model states, uint8 `[B, H, W, 3]`."""
        raise ValueError(f"a {self.kind} model has no pixel decoder")

    def value(self, state: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The model's own value of states `[B]` (models that `plans`)."""
        raise ValueError(f"a {self.kind} model has no value of its own")

    def policy(self, state: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions `[B, action_dim]` of the model's own policy prior (models that `plans`):
        sampled with a generator, else its deterministic action."""
        raise ValueError(f"a {self.kind} model has no policy prior")

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The optimiser's parameter groups (a kind may give parts their own learning
        rate or settings); by default one group of every parameter."""
        return [{"params": list(self.parameters())}]

    def clip_gradients(self, max_norm: float) -> None:
        """Clip the gradients after `loss(...).backward()`: by default their global norm."""
        nn.utils.clip_grad_norm_(self.parameters(), max_norm)

    def after_step(self) -> None:  # noqa: B027 - optional
        """Called after each optimiser step (a kind's slow target networks follow here)."""

    @abstractmethod
    def next(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> Step:
        """The next model state with its predicted observation, reward, continuation
        probability and disagreement."""

    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch and named scalars to log."""

    def prepare(self, batch: dict[str, torch.Tensor]) -> None:  # noqa: B027 - optional
        """Fit data statistics (normalisers) to training transitions before training."""

    @torch.no_grad()
    def validate(self, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
        """Score on held-out data (lower is better; the trainer keeps the best model)
        and named scalars to log. By default the training loss in eval mode."""
        was = self.training
        self.eval()
        loss, scalars = self.loss(batch)
        self.train(was)
        return float(loss), scalars

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        return payload(self, FORMAT, **extra)


def payload(module: nn.Module, fmt: str, **extra: Any) -> dict[str, Any]:
    """The checkpoint dict of a model or an agent: what rebuilds it (`kind`, `config`,
    `dims`), its weights, and whatever the caller adds."""
    return {
        "format": fmt,
        "kind": module.kind,
        "config": module.config,
        "dims": {"obs": module.obs_dim, "action": module.action_dim},
        "state_dict": module.state_dict(),
        **extra,
    }


def save_atomic(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """`torch.save` to a temporary file beside `path` (sealed with its checksum), fsync,
    rename over it. A failed write (a full disk) raises an OSError naming `path` and
    leaves the previous file unchanged."""
    data = sealed(payload)
    write_atomic(path, lambda f: f.write(data))


_SEAL = b"wam-sandbox sha256:"
_SEAL_SIZE = len(_SEAL) + 64  # the comment: _SEAL and the hex digest
_END = b"PK\x05\x06"  # a zip archive ends in this record: 22 bytes (then its comment)


def sealed(payload: dict[str, Any]) -> bytes:
    """The bytes `torch.save` writes for `payload`, with the archive's comment (empty
    as torch writes it) set to the SHA-256 of every byte before it."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    if data[-22:-18] != _END or data[-2:] != b"\0\0":
        raise RuntimeError("torch.save wrote no zip archive (or one with a comment)")
    head = data[:-2] + struct.pack("<H", _SEAL_SIZE)  # the comment's length
    return head + _SEAL + hashlib.sha256(head).hexdigest().encode()


def check_seal(data: bytes, path: str | os.PathLike) -> None:
    """Raise a ValueError naming `path` unless `data`, a checkpoint file's bytes, match
    their checksum. A file torch saved without one (before checkpoints had it) passes
    unchecked."""
    if data[-_SEAL_SIZE:-64] == _SEAL:
        if hashlib.sha256(data[:-_SEAL_SIZE]).hexdigest().encode() != data[-64:]:
            raise ValueError(
                f"{path}: corrupt checkpoint: its bytes do not match its checksum (the "
                "file was damaged after it was written)"
            )
    elif data[-22:-18] != _END or data[-2:] != b"\0\0":  # not a plain torch.save either
        raise ValueError(
            f"{path}: not a readable checkpoint (truncated, damaged or not a checkpoint: "
            "it ends in no checksum)"
        )


def checkpoint_path(path: str | os.PathLike) -> Path:
    """The checkpoint file `path` names: the file itself, or `model.pt` in a directory
    (as `train-wm` writes it)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model.pt").exists():
            raise ValueError(f"{path}: no world model here (no model.pt in the directory)")
        return path / "model.pt"
    if not path.exists():
        raise ValueError(
            f"{path}: no such checkpoint; no such world model (a directory "
            "holding model.pt, or a .pt file)"
        )
    return path


def read_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """A checked checkpoint dict (tensors on the CPU) of a file or a model directory."""
    path = checkpoint_path(path)
    ckpt = read_file(path, FORMAT, "world model")
    kind_class(KINDS, ckpt, path, "model")
    if kind is not None and ckpt["kind"] != kind:
        raise ValueError(f"{path}: holds a {ckpt['kind']!r} model, expected {kind!r}")
    return ckpt


def load(path: str | os.PathLike, kind: str | None = None) -> WorldModel:
    """The world model saved at `path` (a file or a model directory), in eval mode."""
    return from_checkpoint(read_checkpoint(path, kind), path)


def from_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> WorldModel:
    """The world model of a checkpoint dict read by `read_checkpoint`, in eval mode."""
    return build(kind_class(KINDS, ckpt, path, "model"), ckpt, path, "model")


def read_file(path: Path, fmt: str | tuple[str, ...], what: str) -> dict[str, Any]:
    """A checkpoint file of format `fmt` (or one of several) read with
    `weights_only=True`, its checksum checked, or a ValueError naming the file and the
    problem (`what` names the expected content)."""
    data = Path(path).read_bytes()
    check_seal(data, path)
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged or foreign file
        raise ValueError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
        ) from err
    formats = (fmt,) if isinstance(fmt, str) else fmt
    if not isinstance(ckpt, dict) or ckpt.get("format") not in formats:
        raise ValueError(f"{path}: not a wam-sandbox {what} checkpoint")
    return ckpt


def kind_class(
    registry: dict[str, type], ckpt: dict[str, Any], path: str | os.PathLike, what: str
) -> type:
    """The class that `registry` holds for the checkpoint's kind, or a ValueError."""
    kind = ckpt.get("kind")
    if kind not in registry:
        raise ValueError(f"{path}: unknown {what} kind {kind!r}; known: {sorted(registry)}")
    return registry[kind]


def build(
    cls: type[nn.Module], ckpt: dict[str, Any], path: str | os.PathLike, what: str
) -> nn.Module:
    """`cls` rebuilt from a checkpoint's dims and config, with its weights, in eval mode.
    A class may fill in settings that older checkpoints lack (`checkpoint_config`)."""
    config = ckpt["config"]
    if hasattr(cls, "checkpoint_config"):
        config = cls.checkpoint_config(config)
    module = cls(ckpt["dims"]["obs"], ckpt["dims"]["action"], config)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit a {ckpt['kind']} {what}: {err}") from err
    return module.eval()
