"""Fidelity of a world model: open-loop prediction error against recorded episodes.

From a start step t of a held-out episode the model is rolled forward on the
recorded actions (mean predictions, no sampling) and compared with what the
real simulator produced: the recorded observation at t + h. Errors are squared
differences divided by each dimension's variance over the data (1.0 = as wrong
as guessing the mean), averaged over dimensions and starts. The baseline copies
the last observation: obs_t as the prediction of obs_{t+h}.
"""

from __future__ import annotations

import torch

from sim.dataset import Dataset
from world_models.base import WorldModel

HORIZONS = (1, 5, 10, 25, 50)


@torch.no_grad()
def open_loop_error(
    model: WorldModel,
    dataset: Dataset,
    episodes: list[int],
    horizons: tuple[int, ...] = HORIZONS,
    stride: int = 10,
) -> dict[str, dict[int, float]]:
    """{"model", "copy_last", "reward_model"}: normalised error per horizon."""
    longest = max(horizons)
    obs_l, act_l, rew_l = [], [], []
    for e in episodes:
        ep = dataset.episode(e, ("obs", "next_obs", "actions", "rewards"))
        # observations 0..T (the last is the final next_obs)
        obs = torch.cat((torch.from_numpy(ep["obs"]), torch.from_numpy(ep["next_obs"][-1:])))
        for t in range(0, len(ep["actions"]) - longest + 1, stride):
            obs_l.append(obs[t : t + longest + 1])
            act_l.append(torch.from_numpy(ep["actions"][t : t + longest]))
            rew_l.append(torch.from_numpy(ep["rewards"][t : t + longest]))
    if not obs_l:
        raise ValueError(f"no episode is longer than the largest horizon ({longest})")
    obs, actions, rewards = torch.stack(obs_l), torch.stack(act_l), torch.stack(rew_l)
    scale = obs.reshape(-1, obs.shape[-1]).var(0).clamp_min(1e-8)
    reward_scale = rewards.var().clamp_min(1e-8)
    device = next(model.parameters()).device
    state = model.encode(obs[:, 0].to(device))
    out: dict[str, dict[int, float]] = {"model": {}, "copy_last": {}, "reward_model": {}}
    for h in range(1, longest + 1):
        step = model.next(state, actions[:, h - 1].to(device))
        state, pred, reward = step.state, step.obs, step.reward
        if h in horizons:
            truth = obs[:, h]
            out["model"][h] = float(((pred.cpu() - truth) ** 2 / scale).mean())
            out["copy_last"][h] = float(((obs[:, 0] - truth) ** 2 / scale).mean())
            out["reward_model"][h] = float(
                ((reward.cpu() - rewards[:, h - 1]) ** 2).mean() / reward_scale
            )
    return out
