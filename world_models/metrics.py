"""Fidelity of a world model: open-loop prediction error against recorded episodes.

From a start step t of a held-out episode the model is rolled forward on the
recorded actions (mean predictions, no sampling) and compared with what the
real simulator produced: the recorded observation at t + h. Errors are squared
differences divided by each dimension's variance over the data (1.0 = as wrong
as guessing the mean), averaged over dimensions and starts. Two baselines that
need no model: copy-last, obs_t as the prediction of obs_{t+h}, and constant
velocity, the last change carried on, obs_t + h (obs_t - obs_{t-1}).
A model that predicts no observations (`predicts_obs` False: no decoder) has no
observation error: its "model" errors are left empty, never filled with a stand-in,
and its reward errors are measured as for every model.
"""

from __future__ import annotations

import torch

from sim.data.dataset import Dataset
from world_models.base import WorldModel

HORIZONS = (1, 5, 10, 25, 50)


def no_obs_error(model: WorldModel) -> str:
    """What a report says in place of the observation error of a model without a decoder."""
    return (
        f"observation error not available: the {model.kind} model predicts no "
        "observations (it has no decoder); its reward error is measured"
    )


def baseline_errors(
    now: torch.Tensor, before: torch.Tensor, truth: torch.Tensor, h: int, scale: torch.Tensor
) -> tuple[float, float]:
    """Normalised errors (as the module describes) of the two baselines at horizon `h`:
    copy-last and constant velocity, from the observations at the start `now`, the
    step `before` it, and `truth` h steps later."""
    copy_last = float(((now - truth) ** 2 / scale).mean())
    velocity = float(((now + h * (now - before) - truth) ** 2 / scale).mean())
    return copy_last, velocity


@torch.no_grad()
def open_loop_error(
    model: WorldModel,
    dataset: Dataset,
    episodes: list[int],
    horizons: tuple[int, ...] = HORIZONS,
    stride: int = 10,
    context: int = 8,
) -> dict[str, dict[int, float]]:
    """{"model", "copy_last", "const_velocity", "reward_model"}: normalised error per
    horizon.

    The model first observes the `context` steps before each start (and their
    frames, for a model that sees), then predicts open loop from the start."""
    if context < 1:
        raise ValueError(f"context must be >= 1 (constant velocity needs a change), got {context}")
    longest = max(horizons)
    keys = ("obs", "next_obs", "actions", "rewards") + (("pixels",) if model.sees_pixels else ())
    obs_l, act_l, rew_l, frame_l = [], [], [], []
    for e in episodes:
        ep = dataset.episode(e, keys)
        # observations 0..T (the last is the final next_obs)
        obs = torch.cat((torch.from_numpy(ep["obs"]), torch.from_numpy(ep["next_obs"][-1:])))
        for t in range(context, len(ep["actions"]) - longest + 1, stride):
            obs_l.append(obs[t - context : t + longest + 1])
            act_l.append(torch.from_numpy(ep["actions"][t - context : t + longest]))
            rew_l.append(torch.from_numpy(ep["rewards"][t : t + longest]))
            if model.sees_pixels:
                frame_l.append(torch.from_numpy(ep["pixels"][t - context : t + 1]))
    if not obs_l:
        raise ValueError(
            f"no episode is longer than the context and the largest horizon ({context} + {longest})"
        )
    obs, actions, rewards = torch.stack(obs_l), torch.stack(act_l), torch.stack(rew_l)
    scale = obs.reshape(-1, obs.shape[-1]).var(0).clamp_min(1e-8)
    reward_scale = rewards.var().clamp_min(1e-8)
    device = next(model.parameters()).device
    out: dict[str, dict[int, float]] = {
        "model": {},
        "copy_last": {},
        "const_velocity": {},
        "reward_model": {},
    }
    chunks = []
    for rows in torch.arange(len(obs)).split(1024):  # bounded memory for frames
        frames = torch.stack([frame_l[i] for i in rows]).to(device) if frame_l else None
        state = model.observe(
            obs[rows, : context + 1].to(device), actions[rows, :context].to(device), frames
        )
        preds, rews = [], []
        for h in range(1, longest + 1):
            step = model.next(state, actions[rows, context + h - 1].to(device))
            state = step.state
            preds.append(step.obs.cpu())
            rews.append(step.reward.cpu())
        chunks.append((torch.stack(preds, 1), torch.stack(rews, 1)))
    pred = torch.cat([c[0] for c in chunks])  # [S, longest, d]
    reward = torch.cat([c[1] for c in chunks])
    now, before = obs[:, context], obs[:, context - 1]
    for h in horizons:
        truth = obs[:, context + h]
        if model.predicts_obs:
            out["model"][h] = float(((pred[:, h - 1] - truth) ** 2 / scale).mean())
        out["copy_last"][h], out["const_velocity"][h] = baseline_errors(
            now, before, truth, h, scale
        )
        out["reward_model"][h] = float(
            ((reward[:, h - 1] - rewards[:, h - 1]) ** 2).mean() / reward_scale
        )
    return out


@torch.no_grad()
def rollout_error(
    model: WorldModel,
    obs: torch.Tensor,
    actions: torch.Tensor,
    next_obs: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    context: int = 8,
) -> dict[str, float | None]:
    """The model's one-step error along real rollouts (a policy's own episodes): at
    every step t it observes the steps of the episode up to t (at most `context`)
    and predicts step t's outcome from the action taken there (mean prediction).

    `obs`, `next_obs` `[N, T, obs_dim]`, `actions` `[N, T, act]`, `rewards` `[N, T]`,
    `mask` bool `[N, T]` (the steps that belong to each row's episode, a prefix).
    Returns `obs_error` (normalised as the module describes, over the rollouts'
    own observations; None for a model without a decoder) beside `copy_last_error`
    (obs_t as the prediction of next_obs_t, the same units), `reward_error`
    (squared error over the rewards' variance), `reward_bias` (mean predicted minus
    real reward a step: > 0, the model pays more than the sim), and the mean over
    the episodes of the predicted and of the real rewards' sums along the real path
    (`predicted_return`, `real_return`)."""
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    preds, rews = [], []
    for t in range(obs.shape[1]):
        first = max(0, t - context + 1)
        history = obs[:, first : t + 1].to(device)
        state = model.observe(history, actions[:, first:t].to(device))
        step = model.next(state, actions[:, t].to(device))
        preds.append(step.obs.float().cpu())
        rews.append(step.reward.float().cpu())
    pred, reward = torch.stack(preds, 1), torch.stack(rews, 1)
    real = rewards.float()
    valid = mask.bool()
    scale = next_obs[valid].float().var(0).clamp_min(1e-8)
    obs_error = None
    if model.predicts_obs:
        obs_error = float(((pred[valid] - next_obs[valid]) ** 2 / scale).mean())
    masked = torch.where(valid, reward, 0.0)
    return {
        "obs_error": obs_error,
        "copy_last_error": float(((obs[valid] - next_obs[valid]) ** 2 / scale).mean()),
        "reward_error": float(
            ((reward[valid] - real[valid]) ** 2).mean() / real[valid].var().clamp_min(1e-8)
        ),
        "reward_bias": float((reward[valid] - real[valid]).mean()),
        "predicted_return": float(masked.sum(1).mean()),
        "real_return": float(torch.where(valid, real, 0.0).sum(1).mean()),
    }
