"""Co-training (Dyna) of a world model with the policy being fine-tuned in it.

`finetune --cotrain-episodes N`: fine-tuning in a model goes in rounds. Every
`--cotrain-every` model transitions (at the next update), the policy as it is
then collects N real episodes with its exploration noise; they join the run's
own dataset (`<out>/data`: the model's training episodes, copied once, then
every round's), and the model is refitted on all of it from its current weights
(`--cotrain-epochs` epochs of `train-wm --init` with the model's own kind and
settings, validation episodes choosing the weights kept; `<out>/wm/round_<k>/`).
Fine-tuning then goes on in the refitted model. Every collected agent step is a
real step spent: the report counts them beside the model transitions, so the run
stands against fine-tuning in the real simulator step for step (as WoVR trains
model and policy together). The model's own directory and data are only read.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from agents.base import Agent
from agents.jobs.collect import CollectCfg, agent_policy, collect, recorded_env_args
from sim.data.dataset import Dataset, DatasetWriter
from sim.data.shards import Episode
from world_models import base as wm_base
from world_models.base import KINDS
from world_models.train import TrainWMCfg, train_world_model

POLICY = "finetune"
"""The policy label of a co-training dataset (its copied episodes and its own)."""


def model_data(ckpt: dict[str, Any], data: Path | None = None) -> Path:
    """The episodes a world model (its checkpoint `ckpt`) was trained on: `data`
    (`--cotrain-data`) if given, else the path the checkpoint records."""
    path = data or ckpt.get("data")
    if path is None or not (Path(path) / "index.json").exists():
        raise ValueError(
            f"{path}: no dataset there (the data the world model was trained on): "
            "pass --cotrain-data"
        )
    return Path(path)


@dataclasses.dataclass
class Round:
    """What one round did: at which model transition, the real steps it spent, the
    mean return of its exploring episodes, the refitted model's directory (and,
    with `finetune --success-bonus`, the refitted success head's report)."""

    step: int
    real_steps: int
    collect_return: float
    wm: str
    seconds: float
    success_head: dict[str, Any] | None = None


class CoTrainer:
    """Rounds of collection and refitting for one fine-tuning run (see the module
    docstring). `wm_path`: the model fine-tuning starts in; `data`: the episodes it
    was trained on (default: the path its checkpoint records)."""

    def __init__(
        self,
        wm_path: Path,
        out: Path,
        episodes: int,
        every: int,
        epochs: int,
        seed: int,
        data: Path | None = None,
    ):
        if episodes < 1 or every < 1 or epochs < 1:
            raise ValueError(
                "--cotrain-episodes, --cotrain-every and --cotrain-epochs must be >= 1 "
                f"(got {episodes}, {every}, {epochs})"
            )
        self.ckpt = wm_base.read_checkpoint(wm_path)
        self.source = model_data(self.ckpt, data)
        self.episodes, self.every, self.epochs, self.seed = episodes, every, epochs, seed
        self.out, self.data = out, out / "data"
        self.model_file = wm_base.checkpoint_path(wm_path)
        self.rounds: list[Round] = []
        self.real_steps = 0
        source = Dataset(self.source)
        self._collect_cfg = self._collection_settings(source.env_args)
        self._copy_source(source)

    def _collection_settings(self, args: dict[str, Any]) -> CollectCfg:
        """How rounds collect: the source data's task, backend and env settings
        (`args`: its env_args)."""
        kwargs = args["env_kwargs"]
        return CollectCfg(
            task=args["env_name"],
            backend=args.get("backend", "mujoco"),
            num_envs=self.episodes,
            episodes=0,
            policy=POLICY,
            out=self.data,
            resume=True,
            seed=self.seed,
            episode_length=kwargs.get("episode_length"),
            action_repeat=kwargs.get("action_repeat"),
            nthread=1,
            progress=False,
        )

    def _copy_source(self, source: Dataset) -> None:
        """`<out>/data`: the source's episodes under the co-training dataset's
        env_args (those of the env the rounds collect in, checked to be the source's)."""
        args = recorded_env_args(self._collect_cfg)
        theirs = source.env_args["env_kwargs"]
        ours = args["env_kwargs"]
        differ = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
        if differ:
            raise ValueError(
                f"{self.source}: recorded with env settings that co-training cannot "
                f"reproduce ({', '.join(differ)})"
            )
        with DatasetWriter(self.data, args) as writer:
            for e in source.episodes:
                attrs = source.attrs(e)
                arrays = source.episode(e)
                writer.add(
                    Episode(
                        index=e,
                        seed=int(attrs.pop("seed")),
                        obs=arrays["obs"],
                        next_obs=arrays["next_obs"],
                        actions=arrays["actions"],
                        rewards=arrays["rewards"],
                        terminated=arrays["terminated"].astype(bool),
                        truncated=arrays["truncated"].astype(bool),
                        states=arrays["states"],
                        pixels=arrays.get("pixels"),
                        at_goal=arrays.get("at_goal"),
                        attrs={k: v for k, v in attrs.items() if k != "num_samples"},
                    )
                )
                if writer.num_pending >= 64:
                    writer.flush()
        self.first_new = 1 + max(source.episodes)

    def due(self, step: int) -> bool:
        """Whether a round is due at `step` model transitions (none at 0)."""
        done = self.rounds[-1].step if self.rounds else 0
        return step // self.every > done // self.every

    def round(self, agent: Agent, step: int) -> wm_base.WorldModel:
        """Collect with `agent` exploring, refit the model on all the data; returns
        the refitted model (on the CPU)."""
        started = time.perf_counter()
        k = len(self.rounds)
        settings = dataclasses.replace(
            self._collect_cfg, episodes=self.first_new + (k + 1) * self.episodes
        )
        # the episodes below first_new are the copied ones: skip to the round's own
        settings.episode_ids = tuple(range(self.first_new + k * self.episodes, settings.episodes))
        summary = collect(settings, lambda env: agent_policy(env, agent))
        self.real_steps += int(summary["transitions"])
        out = self.out / "wm" / f"round_{k:03d}"
        kind = self.ckpt["kind"]
        train = self.ckpt["train"]
        model_settings = KINDS[kind].settings(**train[kind])
        train_world_model(
            TrainWMCfg(
                data=self.data,
                model=kind,
                out=out,
                epochs=self.epochs,
                steps_per_epoch=train.get("steps_per_epoch", 0),
                seed=self.seed + k,
                init=self.model_file,
                progress=False,
                **{kind: model_settings},
            )
        )
        self.model_file = out / "model.pt"
        self.rounds.append(
            Round(
                step=step,
                real_steps=self.real_steps,
                collect_return=float(summary["mean_return"]),
                wm=str(out),
                seconds=time.perf_counter() - started,
            )
        )
        return wm_base.load(out)

    def round_observations(self, k: int = -1) -> torch.Tensor:
        """The observations of round `k`'s episodes (default: the last round's)."""
        k = k % len(self.rounds)
        data = Dataset(self.data)
        first = self.first_new + k * self.episodes
        episodes = range(first, first + self.episodes)
        return torch.cat([torch.from_numpy(data.episode(e, ("obs",))["obs"]) for e in episodes])

    def report(self) -> dict[str, Any]:
        return {
            "data": str(self.data),
            "source": str(self.source),
            "real_steps": self.real_steps,
            "rounds": [dataclasses.asdict(r) for r in self.rounds],
        }
