"""Actor-critic learned in imagination (Dreamer: Hafner et al. 2020, 2023).

From B start observations taken from real data, the actor imagines H steps in a
world model (`wm.imagine`, sampled, differentiable); the critic bootstraps the
rest. With rewards r_t, continuation probabilities c_t (or the task's own
termination), values v_t of the critic's slow copy and discount gamma, the
lambda-returns are

    R_H = v_H,    R_t = r_t + gamma c_t ((1 - lambda) v_{t+1} + lambda R_{t+1}).

Critic: v(o_t) regresses R_t (squared error), plus a pull toward its slow copy,
an exponential moving average of its weights (DreamerV3's regulariser); with
`repval`, also the lambda-returns of recorded windows of real steps (DreamerV3's
replay value loss); with `critics=2`, two critics fit the same targets and every
value taken is the smaller of the two (TD3's clipped double estimate).
Actor: gradients of the normalised returns flow back through the model's
dynamics into the actions (Dreamer's dynamics backpropagation, the low-variance
choice for continuous control with a differentiable model), with an entropy
bonus eta; or, with `actor_grad="reinforce"`, the score-function gradient of
the advantages (R_t - v_t). Returns are normalised as in DreamerV3: divided by
max(1, S), S an EMA (decay 0.99) of the 95th minus the 5th percentile of the
batch's returns, so that one entropy scale fits every reward scale. Every
imagined step is weighted by the cumulative discount prod gamma c of the steps
before it.

The actor and the critic see observations (a world model's predicted ones in
imagination, the real ones in the real sim), symlog-squashed, so one policy
acts in both without a filter. The policy is a tanh-squashed Gaussian:
a = tanh(mu + sigma eps), sigma in [min_std, max_std]; its deterministic action
is tanh(mu). A penalty `mean_reg` mu^2 on the pre-squash mean (SAC's mean
regulariser in rlkit) keeps mu off tanh's flat tails: bang-bang actions drive mu
to |mu| ~ 8, where d tanh / d mu ~ 1e-6, and no return gradient can bring it back
(on pendulum_swingup such an actor spins the pole round for ever instead of
learning to hold it up).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from agents.base import Agent
from envs.features import angle_features, feature_dim
from world_models.base import WorldModel
from world_models.models.layers import mlp


@dataclass
class DreamerCfg:
    """Actor-critic in imagination (Dreamer)."""

    hidden: int = 256
    """Units per hidden layer of the actor and the critic."""
    layers: int = 2
    """Hidden layers."""
    horizon: int = 15
    """Imagined steps per start [agent steps]."""
    batch_size: int = 256
    """Start observations per update."""
    gamma: float = 0.99
    """Discount per agent step."""
    lam: float = 0.95
    """lambda of the lambda-returns."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critic."""
    entropy: float = 3e-4
    """Entropy bonus eta (returns are normalised, so it fits any reward scale)."""
    actor_grad: str = "dynamics"
    """dynamics (backpropagate through the model) or reinforce."""
    slow_critic: float = 0.02
    """Update rate of the critic's slow copy (EMA), which gives the bootstrap values."""
    slow_reg: float = 1.0
    """Weight of the critic's pull toward its slow copy."""
    min_std: float = 0.1
    """Smallest policy std (pre-squash)."""
    max_std: float = 1.0
    """Largest policy std (pre-squash)."""
    grad_clip: float = 100.0
    """Largest gradient norm of each network."""
    explore: float = 0.0
    """Weight of the exploration bonus added to each imagined reward: the world model's
    disagreement at the imagined step (its members' spread, the signal Plan2Explore
    explores with), in units of its running mean, so the bonus is `explore` per step
    where the model is as unsure as usual. 0: none; needs a model with disagreement."""
    explore_updates: int = 3000
    """Updates over which the bonus's weight falls linearly to 0."""
    penalty: float = 0.0
    """Weight of the uncertainty penalty taken off each imagined reward (MOPO, Yu et al.
    2020): the same disagreement in the same units as `explore`, never annealed, so an
    actor cannot earn what only a model that is unsure of itself pays. 0: none; needs a
    model with disagreement."""
    mean_reg: float = 1e-3
    """Weight of the penalty on the squared pre-squash mean, which keeps the actor off
    tanh's flat tails (where the gradient of the action vanishes; 0: none)."""
    repval: float = 0.0
    """Weight of the replay value loss (DreamerV3's, 0.3 there): the critic also
    regresses lambda-returns of recorded windows of real steps, their real rewards
    bootstrapped with the slow critic, so its values stay tied to what the real sim
    paid (0: none; the loop then samples no windows)."""
    replay_length: int = 16
    """Real steps per window of the replay value loss [agent steps]."""
    critics: int = 1
    """Critics, 1 or 2. With 2, each with its own slow copy and both fitted to the same
    targets, every value taken (the bootstrap, the baseline, `value`) is the smaller of
    the two (TD3's clipped double estimate): an actor that climbs the values' gradient
    cannot climb into states that only one critic overvalues."""


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(torch.abs(x))


def lambda_returns(
    rewards: torch.Tensor, conts: torch.Tensor, values: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """R_t = r_t + gamma c_t ((1 - lam) v_{t+1} + lam R_{t+1}), R_H = v_H, for rewards and
    continuations `[H, B]` and values `[H+1, B]`; returns `[H, B]`."""
    returns = [values[-1]]
    for t in reversed(range(len(rewards))):
        nxt = (1 - lam) * values[t + 1] + lam * returns[-1]
        returns.append(rewards[t] + gamma * conts[t] * nxt)
    return torch.stack(returns[::-1][:-1])


class DreamerAgent(Agent):
    """Actor and critic on observations; the config is a `DreamerCfg` as a dict, and
    `periodic`: the observation entries that are unbounded angles, which the networks
    see as (cos, sin) (`envs.features`; the loop fills it in from the task)."""

    kind = "dreamer"

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any] | None = None):
        config = {**asdict(DreamerCfg()), "periodic": [], **(config or {})}
        super().__init__(obs_dim, action_dim, config)
        self.periodic = tuple(int(i) for i in config["periodic"])
        c = self.settings()
        fan_in = feature_dim(obs_dim, self.periodic)
        self.actor = mlp(fan_in, c.hidden, c.layers, 2 * action_dim)
        if c.critics not in (1, 2):
            raise ValueError(f"dreamer: critics must be 1 or 2, got {c.critics}")
        self.critic = mlp(fan_in, c.hidden, c.layers, 1)
        self.slow = copy.deepcopy(self.critic).requires_grad_(False)
        if c.critics == 2:  # its own initialisation: the two differ where data are thin
            self.critic2 = mlp(fan_in, c.hidden, c.layers, 1)
            self.slow2 = copy.deepcopy(self.critic2).requires_grad_(False)
        self.register_buffer("return_scale", torch.ones(()))  # S of the return normalisation
        with torch.no_grad():  # start near zero actions and zero values
            self.actor[-1].weight.mul_(0.01)
            for critic, slow in self.critic_pairs():
                critic[-1].weight.zero_()
                slow.load_state_dict(critic.state_dict())

    def critic_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(critic, its slow copy) for each critic."""
        pairs = [(self.critic, self.slow)]
        if hasattr(self, "critic2"):
            pairs.append((self.critic2, self.slow2))
        return pairs

    def critic_value(self, inputs: torch.Tensor, slow: bool = False) -> torch.Tensor:
        """The critics' value of network inputs `[..., *]` -> `[...]`: the smaller of
        the critics' (or of their slow copies')."""
        nets = [pair[1] if slow else pair[0] for pair in self.critic_pairs()]
        return torch.stack([net(inputs).squeeze(-1) for net in nets]).min(0).values

    def settings(self) -> DreamerCfg:
        """The agent's `DreamerCfg` (its config less `periodic`)."""
        return DreamerCfg(**{k: v for k, v in self.config.items() if k != "periodic"})

    def _dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) of the pre-squash Gaussian."""
        c = self.config
        mu, raw = self.actor(self.inputs(obs)).chunk(2, -1)
        std = c["min_std"] + (c["max_std"] - c["min_std"]) * torch.sigmoid(raw + 2.0)
        return mu, std

    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        mu, std = self._dist(self.check_obs(obs))
        return torch.tanh(mu if noise is None else mu + std * self.check_noise(noise, mu))

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """The critics' value of observations `[B, obs_dim]` -> `[B]`."""
        return self.critic_value(self.inputs(self.check_obs(obs)))

    def inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """What the actor and the critic see of observations: symlog, the unbounded
        angles as (cos, sin)."""
        return symlog(angle_features(obs, self.periodic))


class ImaginationLearner:
    """Trains a `DreamerAgent` in a world model from start observations."""

    def __init__(
        self,
        agent: DreamerAgent,
        device: str = "cpu",
        termination=None,
    ):
        """`termination`: None (the model's continuation probability), "never", or a
        function obs -> bool `[B]` (the task's own termination)."""
        self.agent, self.device = agent.to(device), torch.device(device)
        self.cfg = agent.settings()
        self.termination = termination
        self._new_optimizers()
        if self.cfg.explore < 0 or self.cfg.explore_updates < 1 or self.cfg.penalty < 0:
            raise ValueError("dreamer: explore and penalty must be >= 0 and explore_updates >= 1")
        self.updates = 0  # done so far: the exploration bonus anneals over them
        self.disagreement_scale = 0.0  # running mean of the model's disagreement

    def _new_optimizers(self) -> None:
        """Adam of the actor and of the critics, with no state yet."""
        agent, c = self.agent, self.cfg
        self.actor_opt = torch.optim.Adam(agent.actor.parameters(), lr=c.actor_lr, eps=1e-5)
        critic_params = [p for critic, _ in agent.critic_pairs() for p in critic.parameters()]
        self.critic_opt = torch.optim.Adam(critic_params, lr=c.critic_lr, eps=1e-5)

    def restart(self, seed: int) -> None:
        """Start the actor-critic afresh: the agent's weights, slow critics and return
        scale as a new agent's initialised from `seed`, and new optimisers. The update
        count (which anneals the exploration bonus) and the disagreement scale go on."""
        agent = self.agent
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = DreamerAgent(agent.obs_dim, agent.action_dim, agent.config)
        agent.load_state_dict(fresh.state_dict())
        self._new_optimizers()

    def fork(self, seed: int) -> ImaginationLearner:
        """A second learner of a fresh agent (as `restart(seed)` makes it), with this
        one's counters; this learner and its agent are left as they are."""
        twin = ImaginationLearner(copy.deepcopy(self.agent), str(self.device), self.termination)
        twin.restart(seed)
        twin.updates, twin.disagreement_scale = self.updates, self.disagreement_scale
        return twin

    def adopt(self, other: ImaginationLearner) -> None:
        """Go on as `other` (a learner of an agent of the same shape): its agent's
        weights, its optimisers' state and its counters."""
        self.agent.load_state_dict(other.agent.state_dict())
        self.load_state_dict(other.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "updates": self.updates,
            "disagreement_scale": self.disagreement_scale,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.updates = int(state.get("updates", 0))
        self.disagreement_scale = float(state.get("disagreement_scale", 0.0))

    def explore_weight(self) -> float:
        """The bonus's weight now: `explore`, falling linearly to 0 over `explore_updates`."""
        c = self.cfg
        return c.explore * max(0.0, 1.0 - self.updates / c.explore_updates)

    def uncertainty_weight(self) -> float:
        """Weight of the disagreement added to each imagined reward now: the exploration
        bonus's less the penalty's."""
        return self.explore_weight() - self.cfg.penalty

    @torch.no_grad()
    def exploration_bonus(
        self, wm: WorldModel, states: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """Bonus `[H, B]` (negative where the penalty outweighs it) at imagined model
        states `[H, B, *]` and actions `[H, B, act]`: `uncertainty_weight` times the
        disagreement over its running mean."""
        if not wm.has_disagreement:
            raise ValueError(
                f"dreamer: --dreamer.explore and --dreamer.penalty need a model with "
                f"disagreement; the {wm.kind} model has none"
            )
        h, b = actions.shape[:2]
        step = wm.next(states.flatten(0, 1), actions.flatten(0, 1))
        disagreement = step.disagreement.reshape(h, b).float()
        mean = float(disagreement.mean())
        rate = 1.0 if self.disagreement_scale == 0 else 0.01
        self.disagreement_scale += rate * (mean - self.disagreement_scale)
        return self.uncertainty_weight() * disagreement / max(self.disagreement_scale, 1e-8)

    def _cont(self, step) -> torch.Tensor:
        if self.termination is None:
            return step.cont
        if self.termination == "never":
            return torch.ones_like(step.reward)
        return (~self.termination(step.obs).bool()).to(step.reward)

    def imagine(self, wm: WorldModel, starts: torch.Tensor, generator: torch.Generator):
        """Rollout of H steps from `starts`: observations `[H+1, B, obs]`, rewards,
        continuations `[H, B]`, the policy's entropies `[H, B]` and log-probs `[H, B]`,
        the model states and actions each step started from (`[H, B, *]`, detached),
        and the policy's pre-squash means `[H, B, act]`."""
        agent, c = self.agent, self.cfg
        if not wm.predicts_obs:
            raise ValueError(
                f"dreamer: the actor and critic act on observations; the {wm.kind} model "
                "predicts none (it has no decoder): plan over it with the mppi agent"
            )
        state = wm.encode(starts)
        obs = [starts]
        rewards, conts, entropies, logps, states, actions, means = [], [], [], [], [], [], []
        for _ in range(c.horizon):
            mu, std = agent._dist(obs[-1] if c.actor_grad == "dynamics" else obs[-1].detach())
            eps = torch.randn(mu.shape, generator=generator).to(mu)
            pre = mu + std * eps
            if c.actor_grad != "dynamics":
                pre = pre.detach()
            action = torch.tanh(pre)
            # log-prob of the squashed sample: Gaussian minus log |d tanh / d pre|
            log_det = 2.0 * (torch.log(torch.tensor(2.0)) - pre - nn.functional.softplus(-2 * pre))
            normal = torch.distributions.Normal(mu, std)
            logps.append((normal.log_prob(pre) - log_det).sum(-1))
            entropies.append(normal.entropy().sum(-1))
            means.append(mu)
            states.append(state.detach())
            actions.append(action.detach())
            step = wm.imagine(state, action, generator)
            state = step.state
            obs.append(step.obs)
            rewards.append(step.reward)
            conts.append(self._cont(step))
        return (
            torch.stack(obs),
            torch.stack(rewards),
            torch.stack(conts),
            torch.stack(entropies),
            torch.stack(logps),
            torch.stack(states),
            torch.stack(actions),
            torch.stack(means),
        )

    def replay_returns(self, replay: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(critic inputs `[L, B, *]`, lambda-return targets `[L, B]`) of recorded windows
        `replay` (`obs`, `next_obs` `[B, L, obs]`, `rewards`, `terminated` `[B, L]`):
        the real rewards and terminations, the slow critic's values of the real
        observations, the window's last next observation bootstrapping."""
        agent, c = self.agent, self.cfg
        obs = replay["obs"].transpose(0, 1).to(self.device)
        last = replay["next_obs"][:, -1].to(self.device)
        rewards = replay["rewards"].transpose(0, 1).to(self.device).float()
        conts = 1.0 - replay["terminated"].transpose(0, 1).to(self.device).float()
        inputs = agent.inputs(torch.cat((obs, last[None])))
        with torch.no_grad():
            values = agent.critic_value(inputs, slow=True)
            targets = lambda_returns(rewards, conts, values, c.gamma, c.lam)
        return inputs[:-1], targets

    def update(
        self,
        wm: WorldModel,
        starts: torch.Tensor,
        generator: torch.Generator,
        replay: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """One actor and one critic step on imagined rollouts from `starts` `[B, obs]`;
        with `repval`, the critic's step also fits the recorded windows `replay`
        (see `replay_returns`)."""
        agent, c = self.agent, self.cfg
        wm.requires_grad_(False)
        obs, rewards, conts, entropies, logps, states, actions, means = self.imagine(
            wm, starts.to(self.device), generator
        )
        model_rewards, bonus = rewards, torch.zeros_like(rewards)
        if self.uncertainty_weight() != 0:
            bonus = self.exploration_bonus(wm, states, actions)
            rewards = rewards + bonus
        self.updates += 1
        values = agent.critic_value(agent.inputs(obs), slow=True)  # [H+1, B] bootstrap
        ret = lambda_returns(rewards, conts, values, c.gamma, c.lam)
        with torch.no_grad():  # weight of step t: the discount of the steps before it
            weight = torch.cumprod(torch.cat((torch.ones_like(conts[:1]), c.gamma * conts[:-1])), 0)
            low, high = torch.quantile(ret.flatten(), torch.tensor([0.05, 0.95]))
            agent.return_scale.mul_(0.99).add_(0.01 * (high - low))
            scale = agent.return_scale.clamp_min(1.0)
        if c.actor_grad == "dynamics":
            objective = ret / scale
        else:
            base = agent.critic_value(agent.inputs(obs[:-1].detach())).detach()
            objective = logps * ((ret - base) / scale).detach()
        actor_loss = -(weight * (objective + c.entropy * entropies)).mean()
        if c.mean_reg:
            actor_loss = actor_loss + c.mean_reg * means.pow(2).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        nn.utils.clip_grad_norm_(agent.actor.parameters(), c.grad_clip)
        self.actor_opt.step()

        inputs = agent.inputs(obs[:-1].detach())
        replay_inputs = targets = None
        if c.repval:
            if replay is None:
                raise ValueError("dreamer: repval > 0 needs recorded windows (replay=...)")
            replay_inputs, targets = self.replay_returns(replay)
        critic_loss, replay_loss = torch.zeros(()), torch.zeros(())
        for critic, slow in agent.critic_pairs():
            pred = critic(inputs).squeeze(-1)
            with torch.no_grad():
                slow_pred = slow(inputs).squeeze(-1)
            imagined = (pred - ret.detach()) ** 2 + c.slow_reg * (pred - slow_pred) ** 2
            critic_loss = critic_loss + (weight * imagined).mean()
            if replay_inputs is not None:
                fit = (critic(replay_inputs).squeeze(-1) - targets).pow(2).mean()
                critic_loss = critic_loss + c.repval * fit
                replay_loss = replay_loss + fit.detach() / c.critics
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        for critic, _ in agent.critic_pairs():
            nn.utils.clip_grad_norm_(critic.parameters(), c.grad_clip)
        self.critic_opt.step()
        with torch.no_grad():
            for critic, slow in agent.critic_pairs():
                for target, fast in zip(slow.parameters(), critic.parameters(), strict=True):
                    target.lerp_(fast, c.slow_critic)
        wm.requires_grad_(True)
        return {
            "actor_loss": actor_loss.item(),
            "critic_loss": critic_loss.item(),
            "imagined_reward": model_rewards.detach().mean().item(),
            "imagined_return": ret[0].detach().mean().item(),
            "entropy": entropies.detach().mean().item(),
            "return_scale": float(scale),
            "explore_bonus": bonus.mean().item(),
            "replay_value_loss": replay_loss.item(),
        }
