"""Dreamer actor-critic: lambda-returns against their definition, gradients through the
dynamics, learning on a model whose optimum is known, checkpoints, exploration, the
mean penalty and the replay value loss."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from agents import base
from agents.dreamer import DreamerAgent, ImaginationLearner, lambda_returns
from world_models.base import Step, WorldModel
from world_models.models.ensemble import EnsembleDynamics


class PointModel(WorldModel):
    """x' = x + 0.2 a on the line, reward 1 - x'^2: the best action drives x to 0."""

    kind = "test_point_dreamer"

    def __init__(self, obs_dim: int = 1, action_dim: int = 1, config: dict[str, Any] | None = None):
        super().__init__(obs_dim, action_dim, config or {})
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def encode(self, obs, frames=None):
        return obs

    def next(self, state, action, generator=None):
        nxt = state + 0.2 * action
        reward = 1.0 - nxt[:, 0] ** 2
        return Step(nxt, nxt, reward, torch.ones_like(reward), torch.zeros_like(reward))

    def loss(self, batch):
        raise NotImplementedError


def _reference_returns(rewards, conts, values, gamma, lam):
    """The lambda-return as the weighted average of n-step returns (its definition),
    for one row: G^lam_t = (1 - lam) sum_{n=1}^{H-t-1} lam^{n-1} G^n_t + lam^{H-t-1} G^{H-t}_t."""
    horizon = len(rewards)
    out = []
    for t in range(horizon):

        def n_step(n, t=t):
            total, discount = 0.0, 1.0
            for k in range(n):
                total += discount * rewards[t + k]
                discount *= gamma * conts[t + k]
            return total + discount * values[t + n]

        last = horizon - t
        g = sum((1 - lam) * lam ** (n - 1) * n_step(n) for n in range(1, last))
        out.append(g + lam ** (last - 1) * n_step(last))
    return torch.tensor(out)


def test_lambda_returns_equal_the_average_of_n_step_returns():
    gen = torch.Generator().manual_seed(0)
    h, b = 7, 3
    rewards = torch.randn(h, b, generator=gen, dtype=torch.float64)
    conts = (torch.rand(h, b, generator=gen) > 0.2).double()
    values = torch.randn(h + 1, b, generator=gen, dtype=torch.float64)
    got = lambda_returns(rewards, conts, values, 0.9, 0.8)
    for row in range(b):
        want = _reference_returns(rewards[:, row], conts[:, row], values[:, row], 0.9, 0.8)
        torch.testing.assert_close(got[:, row], want.double())
    # lam = 0: one-step TD targets; lam = 1: Monte Carlo returns bootstrapped at the end
    torch.testing.assert_close(
        lambda_returns(rewards, conts, values, 0.9, 0.0), rewards + 0.9 * conts * values[1:]
    )


def test_actor_gradient_flows_through_the_dynamics():
    torch.manual_seed(0)
    wm = EnsembleDynamics(3, 1, {"members": 3, "elites": 2, "hidden": 16, "layers": 1})
    agent = DreamerAgent(3, 1, {"hidden": 16, "layers": 1, "horizon": 4, "batch_size": 8})
    learner = ImaginationLearner(agent, termination="never")
    gen = torch.Generator().manual_seed(1)
    obs, rewards, *_ = learner.imagine(wm, torch.randn(8, 3), gen)
    rewards.sum().backward()
    grads = [p.grad for p in agent.actor.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    before = {k: v.clone() for k, v in wm.state_dict().items()}
    learner.update(wm, torch.randn(8, 3), gen)
    for key, value in wm.state_dict().items():  # the model is not trained by the agent
        torch.testing.assert_close(value, before[key])


def test_ensemble_imagine_samples_one_elite_per_row():
    torch.manual_seed(0)
    wm = EnsembleDynamics(
        2,
        1,
        {
            "members": 4,
            "elites": 3,
            "hidden": 8,
            "layers": 1,
            "min_logvar": -40.0,
            "max_logvar": -39.0,
        },
    )
    with torch.no_grad():  # noise-free members, so a sample is its member's mean
        wm.min_logvar.fill_(-40.0)
        wm.max_logvar.fill_(-39.0)
    wm.elite_ids.copy_(torch.tensor([3, 0, 2]))
    state, action = torch.randn(10, 2), torch.randn(10, 1)
    step = wm.imagine(state, action, torch.Generator().manual_seed(0))
    x = (torch.cat((state, action), -1) - wm.in_mean) / wm.in_std
    mean, _, _ = wm(x.expand(4, *x.shape))
    per_member = state + (mean * wm.out_std + wm.out_mean)[..., :2]  # [E, B, 2]
    dist = (per_member - step.obs).abs().amax(-1)  # [E, B]
    member = dist.argmin(0)
    assert dist.min(0).values.max() < 1e-4, "every row is one member's prediction"
    assert set(member.tolist()) == {0, 2, 3}, "only elites, and each of them"
    # 10 rows dealt to 3 elites in groups of ceil(10 / 3) = 4, the last one short
    assert sorted(torch.bincount(member, minlength=4)[[0, 2, 3]].tolist()) == [2, 4, 4]


def test_actor_learns_the_optimum_of_a_known_model():
    torch.manual_seed(0)
    wm = PointModel()
    agent = DreamerAgent(
        1,
        1,
        {
            "hidden": 32,
            "layers": 1,
            "horizon": 8,
            "actor_lr": 1e-3,
            "critic_lr": 1e-3,
            "gamma": 0.9,
            "mean_reg": 0.0,  # the optimum of the returns alone (the penalty costs 0.1 at x = 2)
        },
    )
    learner = ImaginationLearner(agent, termination="never")
    gen = torch.Generator().manual_seed(0)
    for _ in range(600):
        learner.update(wm, 4 * torch.rand(64, 1, generator=gen) - 2, gen)
    x = torch.linspace(-2, 2, 9)[:, None]
    action = agent.act(x)[:, 0]
    # far from 0 the best action is the largest step toward it; near 0 one step lands on it
    assert (action[x[:, 0] <= -1] > 0.8).all() and (action[x[:, 0] >= 1] < -0.8).all()

    # the policy's return is near the optimum, the clipped dead-beat law a = -x / 0.2
    def rollout(policy, state):
        total = torch.zeros(len(state))
        for _ in range(12):
            step = wm.next(state, policy(state))
            state, total = step.state, total + step.reward
        return total

    learned = rollout(agent.act, x)
    best = rollout(lambda s: (-s / 0.2).clamp(-1, 1), x)
    assert (learned > best - 0.1).all(), (learned, best)
    # the critic has learned that starting nearer the goal is worth more
    values = agent.value(x)
    assert values[4] > values[0] + 1 and values[4] > values[-1] + 1


def test_checkpoint_round_trip_and_exploration(tmp_path):
    agent = DreamerAgent(5, 2, {"hidden": 16, "layers": 1})
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(0.1 * torch.randn_like(p))
    base.save(agent, tmp_path / "agent.pt")
    again = base.load(tmp_path / "agent.pt")
    obs, noise = torch.randn(6, 5), torch.randn(6, 2)
    torch.testing.assert_close(again.act(obs), agent.act(obs))
    torch.testing.assert_close(again.act(obs, noise), agent.act(obs, noise))
    assert not torch.allclose(agent.act(obs, noise), agent.act(obs))
    assert agent.act(obs, 100 * noise).abs().max() <= 1.0
    with pytest.raises(ValueError, match=r"expected \(N, 5\)"):
        agent.act(torch.randn(6, 4))
    with pytest.raises(ValueError, match="holds a 'dreamer' agent"):
        base.load(tmp_path / "agent.pt", kind="sac")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        base.load(tmp_path / "bad.pt")


class UnsureModel(PointModel):
    """The point on the line with no reward at all; the model is unsure (disagrees)
    only right of 0, so only an exploration bonus gives the actor a direction."""

    kind = "test_unsure_dreamer"

    @property
    def has_disagreement(self) -> bool:
        return True

    def next(self, state, action, generator=None):
        nxt = state + 0.2 * action
        zero = torch.zeros_like(nxt[:, 0])
        return Step(nxt, nxt, zero, torch.ones_like(zero), nxt[:, 0].clamp_min(0))

    def imagine(self, state, action, generator):
        return self.next(state, action)


def _mean_action_after(
    explore: float, updates: int = 150, penalty: float = 0.0
) -> tuple[float, ImaginationLearner]:
    torch.manual_seed(0)
    agent = DreamerAgent(
        1,
        1,
        {
            "hidden": 32,
            "layers": 1,
            "horizon": 8,
            "actor_lr": 1e-3,
            "explore": explore,
            "explore_updates": 2 * updates,
            "penalty": penalty,
        },
    )
    learner = ImaginationLearner(agent, termination="never")
    gen = torch.Generator().manual_seed(0)
    for _ in range(updates):
        metrics = learner.update(UnsureModel(), 0.2 * torch.rand(64, 1, generator=gen) - 0.1, gen)
    assert metrics["imagined_reward"] == 0  # the bonus is not reported as model reward
    return float(agent.act(torch.zeros(9, 1)).mean()), learner


def test_exploration_bonus_drives_the_actor_where_the_model_is_unsure():
    curious, learner = _mean_action_after(explore=1.0)
    plain, _ = _mean_action_after(explore=0.0)
    assert curious > 0.3 and abs(plain) < 0.1, (curious, plain)
    # annealed linearly to 0 over explore_updates; the count survives a checkpoint
    assert learner.explore_weight() == pytest.approx(0.5) and learner.disagreement_scale > 0
    again = ImaginationLearner(learner.agent, termination="never")
    again.load_state_dict(learner.state_dict())
    assert again.updates == learner.updates == 150
    again.updates = 300
    assert again.explore_weight() == 0.0
    # a model without disagreement is refused, by name
    refuse = ImaginationLearner(DreamerAgent(1, 1, {"explore": 1.0}), termination="never")
    with pytest.raises(ValueError, match="test_point_dreamer model has none"):
        refuse.update(PointModel(), torch.zeros(4, 1), torch.Generator().manual_seed(0))


def test_uncertainty_penalty_keeps_the_actor_where_the_model_is_sure():
    wary, learner = _mean_action_after(explore=0.0, penalty=1.0)
    plain, _ = _mean_action_after(explore=0.0)
    assert wary < -0.3 and abs(plain) < 0.1, (wary, plain)
    # never annealed; with a bonus beside it, the two weights add
    learner.updates = 10**6
    assert learner.uncertainty_weight() == -1.0
    both = ImaginationLearner(
        DreamerAgent(1, 1, {"explore": 1.0, "penalty": 0.25}), termination="never"
    )
    assert both.uncertainty_weight() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="penalty must be >= 0"):
        ImaginationLearner(DreamerAgent(1, 1, {"penalty": -1.0}), termination="never")
    refuse = ImaginationLearner(DreamerAgent(1, 1, {"penalty": 1.0}), termination="never")
    with pytest.raises(ValueError, match="test_point_dreamer model has none"):
        refuse.update(PointModel(), torch.zeros(4, 1), torch.Generator().manual_seed(0))


def test_restart_gives_a_fresh_actor_critic_and_keeps_the_update_count():
    _, learner = _mean_action_after(explore=1.0, updates=20)
    learner.restart(seed=5)
    torch.manual_seed(5)
    fresh = DreamerAgent(1, 1, learner.agent.config)
    for key, value in fresh.state_dict().items():
        assert torch.equal(learner.agent.state_dict()[key], value), key
    assert learner.actor_opt.state_dict()["state"] == {}
    assert learner.critic_opt.state_dict()["state"] == {}
    assert learner.updates == 20 and learner.disagreement_scale > 0
    # the new optimisers train the agent's own (reloaded) parameters
    before = learner.agent.actor[0].weight.clone()
    learner.update(UnsureModel(), torch.zeros(8, 1), torch.Generator().manual_seed(0))
    assert not torch.equal(learner.agent.actor[0].weight, before)


def test_fork_trains_a_fresh_twin_and_adopt_takes_it_over():
    _, learner = _mean_action_after(explore=1.0, updates=20)
    kept = {k: v.clone() for k, v in learner.agent.state_dict().items()}
    twin = learner.fork(seed=5)
    torch.manual_seed(5)
    fresh = DreamerAgent(1, 1, learner.agent.config)
    for key, value in fresh.state_dict().items():
        assert torch.equal(twin.agent.state_dict()[key], value), key
    assert twin.updates == 20 and twin.disagreement_scale == learner.disagreement_scale
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        twin.update(UnsureModel(), torch.zeros(8, 1), gen)
    for key, value in kept.items():  # the forked learner is untouched
        assert torch.equal(learner.agent.state_dict()[key], value), key
    assert learner.updates == 20 and twin.updates == 23
    learner.adopt(twin)
    for key, value in twin.agent.state_dict().items():
        assert torch.equal(learner.agent.state_dict()[key], value), key
    assert learner.updates == 23
    assert learner.actor_opt.state_dict()["state"][0]["step"] == 3  # the twin's Adam
    assert learner.agent is not twin.agent  # weights copied, not shared


class FlatModel(PointModel):
    """The point's dynamics with no reward anywhere."""

    kind = "test_flat_dreamer"

    def next(self, state, action, generator=None):
        step = super().next(state, action, generator)
        return step._replace(reward=torch.zeros_like(step.reward))


def test_mean_penalty_pulls_a_saturated_actor_off_the_flat_tails_of_tanh():
    def mean_after(mean_reg: float) -> float:
        """The pre-squash mean at x = 0 after 30 updates, from a saturated actor."""
        torch.manual_seed(0)
        config = {"hidden": 16, "layers": 1, "horizon": 4, "actor_lr": 1e-2}
        agent = DreamerAgent(1, 1, config | {"mean_reg": mean_reg})
        with torch.no_grad():
            agent.actor[-1].bias[0] = 6.0  # tanh(6) = 0.99999: the gradient of tanh is 2e-5
        learner = ImaginationLearner(agent, termination="never")
        gen = torch.Generator().manual_seed(0)
        for _ in range(30):
            learner.update(FlatModel(), torch.rand(32, 1, generator=gen) - 0.5, gen)
        with torch.no_grad():
            return float(agent._dist(torch.zeros(1, 1))[0])

    # nothing else moves the mean where tanh is flat; the penalty brings it back to
    # where the gradient of the action is alive again (tanh'(3) = 0.01)
    held, free = mean_after(1e-3), mean_after(0.0)
    assert held < 3.0 and free > 5.5, (held, free)


def _windows(batch: int, length: int, reward: float, terminated_at: int | None = None) -> dict:
    """Recorded windows on the line: rewards `reward`, optionally a termination."""
    gen = torch.Generator().manual_seed(1)
    obs = torch.rand(batch, length + 1, 1, generator=gen) - 0.5
    terminated = torch.zeros(batch, length, dtype=torch.bool)
    if terminated_at is not None:
        terminated[:, terminated_at] = True
    return {
        "obs": obs[:, :-1],
        "next_obs": obs[:, 1:],
        "rewards": torch.full((batch, length), reward),
        "terminated": terminated,
    }


def test_replay_returns_are_the_lambda_returns_of_the_real_steps():
    agent = DreamerAgent(1, 1, {"hidden": 8, "layers": 1, "gamma": 0.9, "lam": 0.8})
    with torch.no_grad():
        agent.slow[-1].bias.fill_(2.0)  # a slow critic that values every state at 2
    learner = ImaginationLearner(agent, termination="never")
    replay = _windows(batch=3, length=5, reward=1.0)
    _, targets = learner.replay_returns(replay)
    values = torch.full((6,), 2.0)
    want = _reference_returns([1.0] * 5, [1.0] * 5, values, 0.9, 0.8)
    assert torch.allclose(targets, want[:, None].expand(5, 3), atol=1e-5)
    # a recorded termination ends the return there: no bootstrap past it
    _, cut = learner.replay_returns(_windows(batch=3, length=5, reward=1.0, terminated_at=2))
    assert torch.allclose(cut[2], torch.ones(3))
    assert torch.allclose(cut[1], torch.full((3,), 1 + 0.9 * (0.2 * 2.0 + 0.8 * 1.0)))


def test_replay_value_loss_ties_the_critic_to_what_the_real_steps_paid():
    def value_after(repval: float) -> float:
        """The critic at the recorded states after 100 updates on a model that pays
        nothing, with recorded windows that paid 1 a step."""
        torch.manual_seed(0)
        config = {"hidden": 16, "layers": 1, "horizon": 4, "critic_lr": 1e-2, "gamma": 0.9}
        agent = DreamerAgent(1, 1, config | {"repval": repval, "replay_length": 8})
        learner = ImaginationLearner(agent, termination="never")
        gen = torch.Generator().manual_seed(0)
        replay = _windows(batch=32, length=8, reward=1.0)
        for _ in range(100):
            learner.update(FlatModel(), torch.rand(32, 1, generator=gen) - 0.5, gen, replay)
        return float(agent.value(replay["obs"].flatten(0, 1)).mean())

    grounded, imagined_only = value_after(1.0), value_after(0.0)
    # the model alone pulls the critic to its 0; the real steps pull it up
    assert grounded > 2.0 and abs(imagined_only) < 0.3, (grounded, imagined_only)
    with pytest.raises(ValueError, match="repval > 0 needs recorded windows"):
        agent = DreamerAgent(1, 1, {"repval": 0.3})
        ImaginationLearner(agent, termination="never").update(
            FlatModel(), torch.zeros(4, 1), torch.Generator()
        )


def test_two_critics_give_the_smaller_value_everywhere(tmp_path):
    agent = DreamerAgent(1, 1, {"hidden": 8, "layers": 1, "gamma": 0.9, "lam": 0.8, "critics": 2})
    with torch.no_grad():
        agent.critic[-1].bias.fill_(3.0)
        agent.critic2[-1].bias.fill_(-1.0)
        agent.slow[-1].bias.fill_(2.0)
        agent.slow2[-1].bias.fill_(1.0)
    assert torch.allclose(agent.value(torch.zeros(4, 1)), torch.full((4,), -1.0))
    # the bootstrap is the smaller slow copy's
    learner = ImaginationLearner(agent, termination="never")
    _, targets = learner.replay_returns(_windows(batch=2, length=3, reward=0.0))
    want = _reference_returns([0.0] * 3, [1.0] * 3, torch.ones(4), 0.9, 0.8)
    assert torch.allclose(targets, want[:, None].expand(3, 2), atol=1e-5)
    # both critics learn, and the pair survives a checkpoint
    before = [c[-1].bias.clone() for c, _ in agent.critic_pairs()]
    learner.update(PointModel(), torch.zeros(8, 1), torch.Generator().manual_seed(0))
    assert all(
        not torch.equal(b, c[-1].bias)
        for b, (c, _) in zip(before, agent.critic_pairs(), strict=True)
    )
    base.save(agent, tmp_path / "agent.pt")
    again = base.load(tmp_path / "agent.pt")
    assert torch.equal(again.value(torch.ones(3, 1)), agent.value(torch.ones(3, 1)))
    with pytest.raises(ValueError, match="critics must be 1 or 2"):
        DreamerAgent(1, 1, {"critics": 3})
