"""The exploitation meter: how far a world model flatters the policy improving in it.

While a policy improves inside a world model (`finetune`; the closed loop reads the
same at each of its evaluations), the meter reads the current policy before the
first update, then at the first update boundary past every `every` model
transitions, and once more at the end: its
deterministic return in the real simulator and in the model from the same N
starts (`agents.jobs.evaluate.evaluate`: the starts of `env.reset(seed)`, a seed
of the meter's own, apart from the final evaluation's), and the model's one-step
errors along the policy's own real episodes (`world_models.metrics.rollout_error`).
A policy that fools its model shows as an imagined return that climbs while the
real one does not, with a reward bias above 0 on the states it reaches. With a
learned success head (`world_models.success`) a reading holds the imagined success
rate beside the real one.

The meter also keeps the policy of its best reading (the highest real success
rate, on a task without a goal the highest real return; the first of equals):
`finetune --meter-keep best` keeps that policy instead of the last, model
selection on the meter's own starts, which the final evaluation never uses. Its
real episodes are then real steps spent (`real_steps_read`).

Reading touches none of the training's random state (torch's global generator is
restored afterwards; nothing it runs draws from numpy's), so a run with the meter
trains exactly as one without it. Readings go to TensorBoard (`meter/*` at their model-transition
count) and to a PNG: both returns against model transitions above, the model's
errors below.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch

from agents.base import Agent
from agents.jobs.evaluate import evaluate
from world_models import pictures
from world_models.base import WorldModel
from world_models.success import SuccessHead

ERRORS = ("obs_error", "copy_last_error", "reward_error", "reward_bias")
"""The model's errors a reading holds (`world_models.metrics.rollout_error`)."""


class Meter:
    """Readings of one policy's improvement in `wm`, on the real `env`'s starts of
    `env.reset(seed)` (one per env row); `every` model transitions apart (>= 1)."""

    def __init__(
        self,
        wm: WorldModel,
        env,
        every: int,
        seed: int,
        writer=None,
        success_head: SuccessHead | None = None,
    ):
        if every < 1:
            raise ValueError(f"the meter reads every >= 1 model transitions, got {every}")
        if wm.sees_pixels:
            raise ValueError(f"the meter reads state models; the {wm.kind} model sees frames")
        self.wm, self.env, self.every, self.seed, self.writer = wm, env, every, seed, writer
        self.success_head = success_head  # the imagined success rate too (fine-tuning swaps it)
        self.readings: list[dict[str, Any]] = []
        self.best: tuple[Agent, dict[str, Any]] | None = None  # (policy, its reading)
        self.since_best = 0  # readings since the best one
        self.real_steps_read = 0  # the real steps the readings' episodes took

    def due(self, step: int) -> bool:
        """Whether a reading is due at `step` model transitions: none yet, or a
        multiple of `every` passed since the last."""
        if not self.readings:
            return True
        return step // self.every > self.readings[-1]["step"] // self.every

    def read(self, agent: Agent, step: int, real_steps: int = 0) -> dict[str, Any]:
        """Read `agent` (deterministic) after `step` transitions of fine-tuning, with
        `real_steps` real steps spent by then; returns the reading."""
        with torch.random.fork_rng(devices=[]):
            report = evaluate(
                agent, self.env, self.wm, seed=self.seed, success_head=self.success_head
            )
        real, imagined = report["real_return"]["mean"], report["imagined_return"]["mean"]
        reading = {
            "step": int(step),
            "real_steps": int(real_steps),
            "real_return": real,
            "imagined_return": imagined,
            "gap": imagined - real,
            "relative_gap": (imagined - real) / abs(real) if real else None,
            **{k: report["model_error"][k] for k in ERRORS},
        }
        for key in ("real_success_rate", "imagined_success_rate"):
            if key in report:
                reading[key] = report[key]
        self.readings.append(reading)
        self.real_steps_read += report["episodes"] * report["steps"]  # every row steps to the end
        if self.best is None or score(reading) > score(self.best[1]):
            kept = copy.deepcopy(agent).requires_grad_(False).eval()  # as a finished agent
            self.best, self.since_best = (kept, reading), 0
        else:
            self.since_best += 1
        if self.writer is not None:
            for key, value in reading.items():
                if key not in ("step", "real_steps") and value is not None:
                    self.writer.add_scalar(f"meter/{key}", value, step)
            self.writer.flush()
        return reading

    def finish(self, agent: Agent, step: int, real_steps: int = 0) -> list[dict[str, Any]]:
        """Read the final policy (unless already read at `step`); all the readings."""
        if not self.readings or self.readings[-1]["step"] != step:
            self.read(agent, step, real_steps)
        return self.readings

    def close(self) -> None:
        """Close the meter's env and its TensorBoard writer."""
        self.env.close()
        if self.writer is not None:
            self.writer.close()

    def plot(self, path: Path, title: str) -> None:
        """The readings as a PNG at `path` (atomically)."""
        plot_readings(path, self.readings, title)


def score(reading: dict[str, Any]) -> float:
    """What makes a reading the best: its real success rate, else its real return."""
    return reading.get("real_success_rate", reading["real_return"])


def plot_readings(
    path: Path, readings: list[dict[str, Any]], title: str, xlabel: str = "model transitions"
) -> None:
    """Real and imagined return against the readings' steps (above) and the model's
    errors along the policy's real episodes (below), as a PNG at `path`."""
    steps = [r["step"] for r in readings]
    fig = pictures.figure(6, 6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(steps, [r["real_return"] for r in readings], "o-", label="real")
    top.plot(steps, [r["imagined_return"] for r in readings], "s--", label="imagined, same starts")
    top.set_ylabel("return")
    top.set_title(title)
    lines, labels = top.get_legend_handles_labels()
    if all("imagined_success_rate" in r for r in readings):  # a success head: both rates
        rate = top.twinx()
        for who, style in (("real", "o:"), ("imagined", "s:")):
            values = [r[f"{who}_success_rate"] for r in readings]
            rate.plot(
                steps, values, style, color="C2" if who == "real" else "C4", label=f"{who} success"
            )
        rate.set_ylabel("success rate")
        rate.set_ylim(-0.02, 1.02)
        more, more_labels = rate.get_legend_handles_labels()
        lines, labels = lines + more, labels + more_labels
    top.legend(lines, labels, fontsize="small")
    for key, style in (("obs_error", "o-"), ("reward_error", "s-")):
        values = [math.nan if r[key] is None else r[key] for r in readings]
        bottom.plot(steps, values, style, label=key.replace("_", " "))
    bottom.plot(steps, [r["copy_last_error"] for r in readings], ":", label="copy-last obs error")
    bottom.set_yscale("log")  # errors over orders of magnitude (none: a gap in the line)
    bottom.set_ylabel("one-step error along the real episodes")
    bias = bottom.twinx()
    bias.plot(steps, [r["reward_bias"] for r in readings], "^-.", color="C3", label="reward bias")
    bias.axhline(0.0, color="C3", lw=0.5)
    bias.set_ylabel("reward bias a step (model - real)")
    lines, labels = bottom.get_legend_handles_labels()
    more, more_labels = bias.get_legend_handles_labels()
    bottom.legend(lines + more, labels + more_labels, fontsize="small")
    bottom.set_xlabel(xlabel)
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    pictures.write_figure(path, fig)


def plot_real_steps(path: Path, curves: dict[str, list[dict[str, Any]]], title: str) -> None:
    """The real success rate (or, on a task without a goal, the real return) of each
    run's readings against the real steps spent by then, as a PNG at `path`."""
    rows = [r for readings in curves.values() for r in readings]
    key = "real_success_rate" if all("real_success_rate" in r for r in rows) else "real_return"
    fig = pictures.figure(6, 4)
    ax = fig.subplots()
    for (label, readings), style in zip(curves.items(), ("o-", "s--", "^:"), strict=False):
        ax.plot([r["real_steps"] for r in readings], [r[key] for r in readings], style, label=label)
    ax.set_xlabel("real steps spent")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    pictures.write_figure(path, fig)
