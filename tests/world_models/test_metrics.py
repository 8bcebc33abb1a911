"""Open-loop error against its definition: a model that is one of the baselines
scores exactly that baseline, and the baselines are computed from the recorded
observations by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim.data.dataset import Dataset
from world_models.base import Step, WorldModel
from world_models.metrics import open_loop_error, rollout_error


class ConstantVelocity(WorldModel):
    """Carries the last change on: the state is (obs, last change)."""

    kind = "test_constant_velocity"

    def encode(self, obs, frames=None):
        return torch.cat((obs, torch.zeros_like(obs)), -1)

    def observe(self, obs, actions, frames=None):
        return torch.cat((obs[:, -1], obs[:, -1] - obs[:, -2]), -1)

    def next(self, state, action, generator=None):
        obs, change = state.chunk(2, -1)
        zero = obs.new_zeros(len(obs))
        return Step(torch.cat((obs + change, change), -1), obs + change, zero, zero + 1, zero)

    def loss(self, batch):
        raise NotImplementedError


def test_a_constant_velocity_model_scores_the_constant_velocity_baseline(swingup_data):
    dataset = Dataset(swingup_data)
    model = ConstantVelocity(5, 1, {})
    model.register_parameter("unused", torch.nn.Parameter(torch.zeros(1)))  # a device
    err = open_loop_error(model, dataset, [0, 3], horizons=(1, 5, 25), stride=50, context=4)
    assert set(err) == {"model", "copy_last", "const_velocity", "reward_model"}
    for h in (1, 5, 25):
        assert err["model"][h] == pytest.approx(err["const_velocity"][h], rel=1e-5)  # float32 sums
    # by hand: the windows of episodes 0 and 3, starts 4, 54, ... with 25 steps ahead
    obs_all, now, before, ahead = [], [], [], {1: [], 5: [], 25: []}
    for e in (0, 3):
        ep = dataset.episode(e, ("obs", "next_obs"))
        obs = np.concatenate((ep["obs"], ep["next_obs"][-1:])).astype(np.float64)
        for t in range(4, len(ep["obs"]) - 25 + 1, 50):
            obs_all.append(obs[t - 4 : t + 26])
            now.append(obs[t]), before.append(obs[t - 1])
            for h in ahead:
                ahead[h].append(obs[t + h])
    scale = np.concatenate(obs_all).var(0, ddof=1)  # as torch.var
    now, before = np.array(now), np.array(before)
    for h, truth in ahead.items():
        truth = np.array(truth)
        copy = ((now - truth) ** 2 / scale).mean()
        velocity = ((now + h * (now - before) - truth) ** 2 / scale).mean()
        assert err["copy_last"][h] == pytest.approx(copy, rel=1e-4)
        assert err["const_velocity"][h] == pytest.approx(velocity, rel=1e-4)
    # a step of 10 ms: carrying the change on beats copying at one step
    assert err["const_velocity"][1] < 0.5 * err["copy_last"][1]
    with pytest.raises(ValueError, match="context must be >= 1"):
        open_loop_error(model, dataset, [0], context=0)


class HistoryLength(WorldModel):
    """Predicts the last observation plus the number of observations it was shown,
    and a reward of the action's sum plus 0.5."""

    kind = "test_history_length"

    def encode(self, obs, frames=None):
        return self.observe(obs[:, None], obs.new_zeros(len(obs), 0, self.action_dim))

    def observe(self, obs, actions, frames=None):
        assert actions.shape[1] == obs.shape[1] - 1
        return torch.cat((obs[:, -1], obs.new_full((len(obs), 1), obs.shape[1])), -1)

    def next(self, state, action, generator=None):
        obs, seen = state[:, :-1], state[:, -1:]
        zero = obs.new_zeros(len(obs))
        return Step(state, obs + seen, action.sum(-1) + 0.5, zero + 1, zero)

    def loss(self, batch):
        raise NotImplementedError


def test_rollout_error_is_the_one_step_error_within_each_episode():
    torch.manual_seed(0)
    n, steps, context = 3, 6, 4
    obs = torch.randn(n, steps + 1, 2)
    actions, rewards = torch.randn(n, steps, 1), torch.randn(n, steps)
    mask = torch.arange(steps) < torch.tensor([[6], [4], [1]])  # episodes of 6, 4, 1 steps
    obs[:, 1:][~mask] = torch.nan  # what follows an episode's end counts nowhere
    rewards[~mask] = torch.nan
    now, after = obs[:, :-1], obs[:, 1:]
    model = HistoryLength(2, 1, {})
    err = rollout_error(model, now, actions, after, rewards, mask, context=context)
    shown = torch.arange(1, steps + 1).clamp(max=context).float()  # steps 0..t, at most 4
    pred, pred_reward = now + shown[None, :, None], actions.sum(-1) + 0.5
    scale = after[mask].var(0)
    assert err["obs_error"] == pytest.approx(float(((pred - after)[mask] ** 2 / scale).mean()))
    assert err["copy_last_error"] == pytest.approx(float(((now - after)[mask] ** 2 / scale).mean()))
    miss = (pred_reward - rewards)[mask]
    assert err["reward_bias"] == pytest.approx(float(miss.mean()))
    assert err["reward_error"] == pytest.approx(float(miss.pow(2).mean() / rewards[mask].var()))
    sums = [pred_reward[i, : int(mask[i].sum())].sum() for i in range(n)]
    assert err["predicted_return"] == pytest.approx(float(torch.stack(sums).mean()))
    real = [rewards[i, : int(mask[i].sum())].sum() for i in range(n)]
    assert err["real_return"] == pytest.approx(float(torch.stack(real).mean()))
    model.predicts_obs = False  # a model without a decoder: no observation error
    assert rollout_error(model, now, actions, after, rewards, mask)["obs_error"] is None
