"""`python run.py finetune`: BC -> RL. A behaviour-cloned policy is fine-tuned with
PPO or GRPO inside a world model, then scored in the real simulator, beside the same
policy fine-tuned the same way in the real simulator for a given number of real steps.

The BC policy becomes an SB3 `ActorCriticPolicy` with exactly its behaviour
(`bc_to_ppo`): the BC's input standardisation as the policy's features extractor
(`Standardize`, shared by actor and value net), the actor net the BC net's hidden
layers (SiLU), the BC output layer as `action_net` and the BC's fitted log sigma as
PPO's state-independent log std; its deterministic action clamp(mu, -1, 1) is the
BC policy's. The value net is new (initialised from `--seed`, so a run
reproduces) and sees the same standardised observations: on raw ones (push's
positions are centimetres, its velocities metres a second) it fits the returns so
poorly that PPO's advantages are noise and the policy only gets worse. PPO's first
updates with a random critic would move the actor on noise, so the critic is warmed up first
(`critic_warmup` steps with the actor frozen), as done when RL starts from a
pretrained policy.

`--algo grpo` is a group-relative objective without a critic (GRPO-style): each
iteration starts `groups` start states `group_size` times each, rolls the cloned
policy out with its Gaussian exploration for `horizon` steps, and scores every
rollout by its return relative to its group's (minus the group mean, over the
group std). Every step of a rollout takes that advantage; the policy's mean net is
updated with PPO's clipped ratio objective for `grpo_epochs` passes, optionally
with a KL penalty towards the cloned policy (`kl_coef`, GRPO's reference term).
The policy stays a `bc` agent. In the real simulator a group's rollouts start
from the same episode seed (`reset_envs`), so they start from the same state.

In imagination the reward is the world model's learned reward head
(`ImaginedEnv`), plus `--success-bonus` times a learned success head's
probability that the imagined observation is at the goal (`world_models.success`);
episodes start from real reset states (no real steps), or with `--start-data`
from recorded states (branched, MBPO-style), and run `horizon` model steps.
The real-sim run fine-tunes the same converted policy with the same PPO settings
for `real_steps` environment steps; both are then evaluated on the same real
episodes (deterministic actions): success rate and return.
The fine-tuning in imagination is watched by the exploitation meter
(`agents.jobs.meter`; `--meter-every` model transitions, 0: off): the policy's
real and imagined returns from the same starts and the model's errors along its
real episodes, in the report (`meter`), `meter.png` and TensorBoard (`meter/*`);
the real-sim run is read the same way against the real steps it spent, and
`real_steps.png` draws both runs' real success (or return) against real steps.
With `--cotrain-episodes` the model (and the success head) is refitted in rounds
on the policy's own real episodes as it improves (`agents.jobs.cotrain`), those
real steps count, and branched starts take in their states. `--meter-patience`
stops a run whose meter readings have stopped improving.
Outputs: `report.json`, both fine-tuned agents (`agent_imagined.pt`,
`agent_real.pt`, loadable by `eval`), TensorBoard scalars under `tb/`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.base import Agent, load, read_checkpoint, save
from agents.bc import BcAgent
from agents.jobs.cotrain import CoTrainer, model_data
from agents.jobs.evaluate import evaluate, make_eval_env
from agents.jobs.meter import Meter, plot_real_steps
from agents.sb3_agents import PpoAgent, PpoCfg, Sb3Cfg, Sb3Learner, StepBar
from envs.rewards import SuccessBonus
from sim.data import ownership
from sim.data.atomic import read_json, write_atomic, write_json_atomic
from sim.data.loader import EpisodeData
from world_models import base as wm_base
from world_models.imagined_env import ImaginedEnv, ImaginedEnvCfg, check_penalty
from world_models.success import SuccessHead, SuccessHeadCfg, fit_success_head


@dataclass
class FinetuneCfg:
    """Fine-tune a BC policy with PPO or GRPO inside a world model; check it in the real sim."""

    agent: Path
    """The behaviour-cloned agent (train-bc's directory or agent.pt)."""
    wm: Path
    """The world model to fine-tune in (train-wm's directory or model.pt), trained on
    the task the agent was cloned on."""
    out: Path | None = None
    """Output directory (report.json, agent_imagined.pt, agent_real.pt, tb/), new or
    empty; default runs/finetune/<task>-<algo>-<time>."""
    algo: str = "ppo"
    """ppo (SB3 PPO with a critic) or grpo (group-relative, no critic)."""
    imagined_steps: int = 200_000
    """Transitions in imagination (PPO: after the critic's warm-up; GRPO: whole
    iterations of groups x group_size x horizon)."""
    real_steps: int = 16_000
    """Transitions of the real-sim fine-tuning run beside it (PPO: after the same
    warm-up, which there costs real steps too); 0 skips that run."""
    critic_warmup: int = 16_384
    """Transitions of PPO with the actor frozen, to fit the new value net first."""
    num_envs: int = 64
    """PPO: parallel imagined rollouts."""
    real_envs: int = 16
    """PPO: parallel real envs of the real-sim fine-tuning run."""
    horizon: int = 100
    """Steps of an imagined episode (model errors grow with it)."""
    start_states: int = 1024
    """Real reset states imagined episodes start from (drawn at random per episode)."""
    sample: bool = False
    """PPO: sample the model's next state (else its mean prediction; GRPO always
    takes the mean)."""
    log_std: float | None = None
    """Log std of the exploration (None: the BC policy's fitted sigma)."""
    value_hidden: tuple[int, ...] = (256, 256)
    """Hidden units of the new value net (SiLU)."""
    learning_rate: float = 1e-4
    """Adam learning rate (PPO: of actor and critic; GRPO: of the policy)."""
    n_steps: int = 64
    """Steps per env per PPO rollout."""
    batch_size: int = 512
    """Transitions per PPO minibatch."""
    n_epochs: int = 5
    """Passes over each rollout."""
    clip_range: float = 0.1
    """Probability-ratio clipping of PPO and GRPO (small: stay near the cloned policy)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    episodes: int = 64
    """Real episodes of each evaluation (before, after in imagination, after in the real sim)."""
    eval_seed: int = 1000
    """Seed of the evaluation episodes' starts (the same for every policy)."""
    groups: int = 32
    """GRPO: start states per iteration."""
    group_size: int = 8
    """GRPO: rollouts from each start state."""
    grpo_epochs: int = 4
    """GRPO: passes over each iteration's rollouts."""
    grpo_batch: int = 4096
    """GRPO: transitions per gradient step."""
    kl_coef: float = 0.0
    """GRPO: weight of the KL divergence from the cloned policy."""
    start_data: Path | None = None
    """Start imagined episodes (PPO) or rollouts (GRPO) from every recorded
    observation of this dataset (branched rollouts, MBPO-style: every phase of the
    task) instead of reset states; with co-training, from every round's real
    episodes too, as they come (PPO bootstraps its value at the `--horizon` cut)."""
    penalty: float = 0.0
    """MOPO's lambda (PPO and GRPO): the model's reward minus lambda times its
    disagreement (an ensemble's spread over its elites; refused for a model without
    one)."""
    meter_every: int = 20_000
    """The exploitation meter reads the policy in imagination every this many model
    transitions (at the next update; PPO: after the critic's warm-up), before the
    first update and at the end (0: no meter)."""
    meter_episodes: int = 16
    """Episodes of each reading, real and imagined from the same starts."""
    meter_seed: int = 2000
    """Seed of the meter's starts (apart from the evaluation's, `eval_seed`)."""
    meter_keep: str = "last"
    """Which policy a fine-tuning run keeps: last, or best (that of the meter's best
    reading: model selection on the meter's starts, whose real steps then count)."""
    meter_patience: int = 0
    """Stop fine-tuning (in the model, and in the real sim alike) once this many
    readings in a row have not beaten the meter's best (its real success rate, on
    a task without a goal its return): early stopping on the real simulator, for a
    policy that has begun to fool its model (0: never; needs the meter)."""
    cotrain_episodes: int = 0
    """Co-training (Dyna): every `cotrain_every` model transitions the policy collects
    this many real episodes, and the model is refitted on its data and every episode
    collected so far before fine-tuning goes on in it (0: the model stays as it is).
    The real steps spent are reported (`agents.jobs.cotrain`)."""
    cotrain_every: int = 25_600
    """Model transitions between co-training rounds (at the next update)."""
    cotrain_epochs: int = 5
    """Epochs of each refit, from the model's current weights (early stopping on
    validation episodes as in train-wm)."""
    cotrain_data: Path | None = None
    """The episodes the world model was trained on (default: the path its checkpoint
    records); copied into <out>/data, never changed."""
    success_bonus: float = 0.0
    """Fine-tune on the task's reward plus this much for every step that ends at
    the goal: in the real sim the env's `at_goal`, in imagination a learned success
    head's probability of it on the imagined observation
    (`world_models.success`, fitted on the model's data, `--cotrain-data`, and
    refitted at every co-training round). A task's shaped reward can pay nearly as
    much near the goal as in it (push: 0.98 of its best a centimetre outside);
    this makes reaching it pay. 0: the task's reward alone, no head."""
    seed: int = 0
    """Seed of PPO and of the imagined starts."""
    progress: bool = True
    """Show a progress bar of each fine-tuning run (transitions)."""


def bc_to_ppo(
    bc: BcAgent,
    value_hidden: tuple[int, ...] = (256, 256),
    log_std: float | None = None,
    seed: int = 0,
) -> PpoAgent:
    """A PPO agent (SB3 `ActorCriticPolicy`) acting exactly as `bc`; a new value net
    initialised from `seed` (the global generator is left as it was)."""
    linears = [m for m in bc.net if isinstance(m, torch.nn.Linear)]
    hidden = [lin.out_features for lin in linears[:-1]]
    init = float(bc.log_std.mean()) if log_std is None else log_std
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        agent = PpoAgent(
            bc.obs_dim,
            bc.action_dim,
            {
                "net_arch": {"pi": hidden, "vf": list(value_hidden)},
                "activation": "silu",
                "log_std_init": init,
                "ortho_init": False,
                "obs_mean": bc.obs_mean.tolist(),
                "obs_std": bc.obs_std.tolist(),
            },
        )
    policy = agent.policy
    targets = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for src, dst in zip(linears[:-1], targets, strict=True):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        policy.action_net.weight.copy_(linears[-1].weight)
        policy.action_net.bias.copy_(linears[-1].bias)
        policy.log_std.copy_(bc.log_std if log_std is None else torch.full_like(bc.log_std, init))
    return agent


def _actor(policy) -> list[torch.nn.Parameter]:
    return [
        *policy.mlp_extractor.policy_net.parameters(),
        *policy.action_net.parameters(),
        policy.log_std,
    ]


def _learner(agent: PpoAgent, env, cfg: FinetuneCfg, name: str) -> Sb3Learner:
    ppo = PpoCfg(
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
    )
    sb3 = Sb3Cfg(
        algo="ppo",
        learning_rate=cfg.learning_rate,
        gamma=cfg.gamma,
        seed=cfg.seed,
        tensorboard_log=cfg.out / "tb",
        tb_log_name=name,
        ppo=ppo,
    )
    return Sb3Learner(agent, env, sb3)


class Between:
    """What happens between the updates of a fine-tuning run, at the transitions
    `step` done so far: a co-training round where one is due (the model refitted on
    the policy's new real episodes, then put in place by `swap`), then the meter's
    reading where one is due. `real_steps(step)`: the real steps spent by then.
    With `patience`, a call returns False (stop) once that many readings in a row
    have not beaten the meter's best."""

    def __init__(
        self,
        meter: Meter | None = None,
        cotrainer: CoTrainer | None = None,
        swap: Callable[[wm_base.WorldModel], None] | None = None,
        real_steps: Callable[[int], int] = lambda step: 0,
        patience: int = 0,
    ):
        self.meter, self.cotrainer, self.swap, self.real_steps = meter, cotrainer, swap, real_steps
        self.patience = patience
        self.stopped_at: int | None = None  # the transitions at which the meter stopped it
        self.steps = 0  # the transitions fine-tuning took, once it ended

    def __call__(self, current: Callable[[], Agent], step: int) -> bool:
        """`current()`: the policy as it is now; whether fine-tuning goes on."""
        if self.cotrainer is not None and self.cotrainer.due(step):
            with torch.random.fork_rng(devices=[]):  # the fine-tuning's draws go on as they were
                wm = self.cotrainer.round(current(), step)
            self.swap(wm)
            if self.meter is not None:
                self.meter.wm = wm
        if self.meter is not None and self.meter.due(step):
            self.meter.read(current(), step, self.real_steps(step))
            if self.patience and self.meter.since_best >= self.patience:
                self.stopped_at = step
                return False
        return True

    def end(self, agent: Agent, step: int) -> None:
        """After the last update: the meter's last reading (where it stopped the run,
        the one it stopped on)."""
        step = step if self.stopped_at is None else self.stopped_at
        self.steps = step
        if self.meter is not None:
            self.meter.finish(agent, step, self.real_steps(step))


class BetweenCallback(BaseCallback):
    """Calls a `Between` at the start of each of PPO's rollouts (the policy after the
    updates so far), counting the transitions of this `learn`."""

    def __init__(self, between: Between, agent: PpoAgent):
        super().__init__()
        self.between, self.agent, self.offset, self.go_on = between, agent, 0, True

    def _on_training_start(self) -> None:
        self.offset = self.model.num_timesteps

    def _on_rollout_start(self) -> None:
        self.go_on = self.between(self.current, self.model.num_timesteps - self.offset)

    def _on_step(self) -> bool:
        return self.go_on  # False: SB3 ends `learn` at once

    def current(self) -> PpoAgent:
        """A copy of the agent holding the policy's weights now."""
        agent = copy.deepcopy(self.agent)
        agent.policy.load_state_dict(self.model.policy.state_dict())
        return agent


def fine_tune(
    agent: PpoAgent,
    env,
    steps: int,
    cfg: FinetuneCfg,
    name: str,
    between: Between | None = None,
) -> PpoAgent:
    """PPO on `env`: `cfg.critic_warmup` transitions with the actor frozen, then
    `steps` with everything training, `between` called between its updates.
    Returns the agent with the trained weights."""
    learner = _learner(agent, env, cfg, name)
    actor = _actor(learner.model.policy)
    with tqdm(
        total=cfg.critic_warmup + steps,
        unit="step",
        desc=f"ppo {name}",
        disable=not cfg.progress,
        dynamic_ncols=True,
    ) as bar:
        if cfg.critic_warmup > 0:
            for p in actor:
                p.requires_grad_(False)
            learner.learn(cfg.critic_warmup, StepBar(bar))
            for p in actor:
                p.requires_grad_(True)
        if steps <= 0:
            if between is not None:
                between.end(learner.agent, 0)
            return learner.agent
        callback: BaseCallback = StepBar(bar)
        if between is not None:
            callback = CallbackList([callback, BetweenCallback(between, learner.agent)])
        start = learner.model.num_timesteps
        tuned = learner.learn(steps, callback)
        if between is not None:
            between.end(tuned, learner.model.num_timesteps - start)
        return tuned


# ------------------------------------------------------------------------ GRPO
Rollouts = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Observations `[B, H, obs_dim]`, actions before clipping `[B, H, act_dim]`, rewards
`[B, H]` of B rollouts of H steps; rows g * group_size ... share a start state."""


def group_advantages(returns: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each return minus its group's mean over its group's std, `[B]`; groups are
    consecutive runs of `group_size` rows. A group of equal returns gets zeros."""
    if group_size < 2 or returns.numel() % group_size:
        raise ValueError(
            f"group_size must be >= 2 and divide {returns.numel()} returns, got {group_size}"
        )
    grouped = returns.reshape(-1, group_size)
    centred = grouped - grouped.mean(1, keepdim=True)
    return (centred / (grouped.std(1, keepdim=True) + 1e-6)).reshape(-1)


@torch.no_grad()
def _rollouts(
    obs: torch.Tensor,
    step: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    policy: BcAgent,
    std: torch.Tensor,
    horizon: int,
    gen: torch.Generator,
) -> Rollouts:
    """`horizon` steps of `policy` with Gaussian noise of `std` from `obs`; `step`
    takes the clipped actions and gives (next observations, rewards)."""
    steps = []
    for _ in range(horizon):
        mean = policy.mean(obs)
        action = mean + std * torch.randn(mean.shape, generator=gen)
        next_obs, reward = step(action.clamp(-1.0, 1.0))
        steps.append((obs, action, reward.float()))
        obs = next_obs.float()
    return tuple(torch.stack(x, 1) for x in zip(*steps, strict=True))  # type: ignore[return-value]


@torch.no_grad()
def model_rollouts(
    wm,
    starts: torch.Tensor,
    policy: BcAgent,
    std: torch.Tensor,
    horizon: int,
    gen: torch.Generator,
    penalty: float = 0.0,
    head: SuccessHead | None = None,
    bonus: float = 0.0,
) -> Rollouts:
    """Rollouts of `policy` with Gaussian noise of `std` in `wm` from `starts` (mean
    predictions; the learned reward, minus `penalty` times the model's disagreement,
    plus `bonus` times the success `head`'s probability of each imagined observation)."""
    state = wm.encode(starts)

    def step(action):
        nonlocal state
        out = wm.next(state, action)
        state = out.state
        reward = out.reward - penalty * out.disagreement
        if head is not None and bonus:
            reward = reward + bonus * head.prob(out.obs).nan_to_num(0.0)
        return out.obs, reward

    return _rollouts(starts, step, policy, std, horizon, gen)


def env_rollouts(
    env, seeds: torch.Tensor, policy: BcAgent, std: torch.Tensor, horizon: int, gen: torch.Generator
) -> Rollouts:
    """Rollouts of `policy` with Gaussian noise in the real `env` (one row per seed,
    `env.num_envs` of them), each episode started from its seed."""
    if horizon > env.cfg.episode_length // env.cfg.action_repeat:
        raise ValueError(f"horizon {horizon} is longer than the env's episodes")
    obs = env.reset_envs(torch.arange(env.num_envs), seeds).float()
    return _rollouts(obs, lambda a: env.step(a)[:2], policy, std, horizon, gen)


def grpo(
    bc: BcAgent,
    rollouts: Callable[[BcAgent, torch.Tensor, torch.Generator], Rollouts],
    iterations: int,
    cfg: FinetuneCfg,
    name: str = "grpo",
    between: Between | None = None,
) -> BcAgent:
    """GRPO-style fine-tuning of a copy of `bc` (see the module docstring): each of
    `iterations` takes `rollouts(policy, std, gen)`, scores them relative to their
    group and takes clipped-ratio steps on the policy's mean net; `between`, if
    given, is called before each iteration and ended after the last."""
    policy, reference = copy.deepcopy(bc), bc
    log_std = (
        bc.log_std.detach() if cfg.log_std is None else torch.full_like(bc.log_std, cfg.log_std)
    )
    policy.log_std.data.copy_(log_std)  # the saved policy explores as it was trained
    std = log_std.exp()
    for p in policy.parameters():
        p.requires_grad_(False)
    params = list(policy.net.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.learning_rate)
    gen = torch.Generator().manual_seed(cfg.seed)
    writer = SummaryWriter(str(cfg.out / "tb" / name))
    bar = tqdm(
        total=iterations,
        unit="iter",
        desc=f"grpo {name}",
        disable=not cfg.progress,
        dynamic_ncols=True,
    )
    transitions = 0
    try:
        for it in range(iterations):
            if between is not None and not between(lambda: policy, transitions):
                break
            obs, actions, rewards = rollouts(policy, std, gen)
            transitions += rewards.numel()
            horizon = rewards.shape[1]
            discount = cfg.gamma ** torch.arange(horizon, dtype=rewards.dtype)
            returns = (rewards * discount).sum(1)
            adv = group_advantages(returns, cfg.group_size)
            obs, actions = obs.reshape(-1, obs.shape[-1]), actions.reshape(-1, actions.shape[-1])
            adv = adv[:, None].expand(-1, horizon).reshape(-1)
            with torch.no_grad():
                old, ref = policy.mean(obs), reference.mean(obs)
            for _ in range(cfg.grpo_epochs):
                order = torch.randperm(len(obs), generator=gen)
                for rows in order.split(cfg.grpo_batch):
                    mean = policy.mean(obs[rows])
                    a = actions[rows]
                    # log pi(a|s) - log pi_old(a|s): the Gaussians share sigma
                    log_ratio = ((a - old[rows]) ** 2 - (a - mean) ** 2) / (2 * std**2)
                    ratio = log_ratio.sum(-1).exp()
                    clipped = ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
                    gain = torch.min(ratio * adv[rows], clipped * adv[rows])
                    kl = ((mean - ref[rows]) ** 2 / (2 * std**2)).sum(-1)
                    loss = -(gain - cfg.kl_coef * kl).mean()
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
            writer.add_scalar("grpo/return", returns.mean().item(), it)
            best = returns.reshape(-1, cfg.group_size).max(1).values.mean()
            writer.add_scalar("grpo/best_of_group", best.item(), it)
            writer.add_scalar("grpo/kl_to_bc", kl.mean().item(), it)
            bar.update(1)
            bar.set_postfix(rollout_return=f"{returns.mean().item():.2f}")
        if between is not None:
            between.end(policy, transitions)
    finally:
        bar.close()
        writer.close()
    for p in params:
        p.requires_grad_(False)
    return policy.eval()


def _score(agent, env_args, cfg: FinetuneCfg) -> dict[str, Any]:
    env = make_eval_env(env_args, None, cfg.episodes)
    report = evaluate(agent, env, seed=cfg.eval_seed)
    env.close()
    out = {"return": report["real_return"]["mean"]}
    if "real_success_rate" in report:
        out["success_rate"] = report["real_success_rate"]
    return out


def _check(cfg: FinetuneCfg, bc, wm) -> None:
    if bc.kind != "bc":
        raise ValueError(
            f"{cfg.agent}: finetune starts from a behaviour-cloned agent "
            f"(train-bc), got a {bc.kind!r} agent"
        )
    if (wm.obs_dim, wm.action_dim) != (bc.obs_dim, bc.action_dim):
        raise ValueError(
            f"{cfg.wm}: observation/action dims ({wm.obs_dim}, {wm.action_dim}) "
            f"differ from the agent's ({bc.obs_dim}, {bc.action_dim})"
        )
    if wm.sees_pixels or not wm.predicts_obs:
        raise ValueError(
            f"{cfg.wm}: finetune needs a world model that predicts state observations "
            f"(a {wm.kind} model{' sees frames' if wm.sees_pixels else ' predicts none'})"
        )
    check_penalty(cfg.penalty, wm, "--penalty")
    for name in (
        "imagined_steps",
        "real_steps",
        "critic_warmup",
        "meter_every",
        "meter_patience",
        "cotrain_episodes",
        "success_bonus",
    ):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    for name in (
        "num_envs",
        "real_envs",
        "horizon",
        "start_states",
        "episodes",
        "meter_episodes",
        "groups",
        "grpo_epochs",
        "grpo_batch",
    ):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.meter_keep not in ("last", "best"):
        raise ValueError(f"unknown --meter-keep {cfg.meter_keep!r}; valid: last, best")
    if cfg.meter_keep == "best" and cfg.meter_every == 0:
        raise ValueError("--meter-keep best keeps the meter's best policy: it needs a meter")
    if cfg.meter_patience and cfg.meter_every == 0:
        raise ValueError("--meter-patience stops on the meter's readings: it needs a meter")
    if cfg.algo not in ("ppo", "grpo"):
        raise ValueError(f"unknown algo {cfg.algo!r}; valid: ppo, grpo")
    if cfg.algo == "grpo" and cfg.group_size < 2:
        raise ValueError(
            f"group_size must be >= 2 (advantages are relative to the group), got {cfg.group_size}"
        )


def run_finetune(cfg: FinetuneCfg) -> dict[str, Any]:
    """BC -> PPO or GRPO in imagination (and in the real sim); writes and returns the
    report."""
    env_args, bc, wm = _load_inputs(cfg)
    if cfg.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        cfg.out = Path("runs/finetune") / f"{env_args['env_name']}-{cfg.algo}-{stamp}"
    if not ownership.is_empty(cfg.out):  # never over another run's agents or report
        raise ValueError(f"--out {cfg.out}: is not empty; choose a new or empty directory")
    ownership.mark(cfg.out, "finetune")
    started = time.perf_counter()
    report: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "task": env_args["env_name"],
    }
    report["bc"] = _score(bc, env_args, cfg)
    print(f"finetune {env_args['env_name']}: BC {_line(report['bc'])}", flush=True)
    head = None
    if cfg.success_bonus:
        head, report["success_head"] = _success_head(cfg)
        print(f"  success head: {_head_line(report['success_head'])}", flush=True)

    cotrainer = None
    if cfg.cotrain_episodes:
        cotrainer = CoTrainer(
            cfg.wm,
            cfg.out,
            cfg.cotrain_episodes,
            cfg.cotrain_every,
            cfg.cotrain_epochs,
            cfg.seed,
            cfg.cotrain_data,
        )
    meter = _meter(cfg, wm, env_args, "meter", head)
    try:
        agent, steps = _improve_in_imagination(cfg, bc, wm, env_args, meter, cotrainer, head)
    finally:
        if meter is not None:
            meter.close()
    agent, kept = _kept(cfg, agent, meter)
    save(agent, cfg.out / "agent_imagined.pt", env_args=env_args)
    spent = (0 if cotrainer is None else cotrainer.real_steps) + kept.get("real_steps_read", 0)
    report["imagined"] = {
        **_score(agent, env_args, cfg),
        "steps": steps,
        "real_steps": spent,
        **kept,
    }
    where = "in imagination" if cotrainer is None else "in imagination, co-trained"
    print(
        f"  after {cfg.algo} {where} ({steps} model steps, {spent} real steps): "
        f"{_line(report['imagined'])}",
        flush=True,
    )
    if cotrainer is not None:
        report["cotrain"] = cotrainer.report()
    if meter is not None:
        report["meter"] = meter.readings
        meter.plot(cfg.out / "meter.png", f"{env_args['env_name']}: {cfg.algo} {where}")
        print(f"  meter: {_meter_line(meter.readings[0])} -> {_meter_line(meter.readings[-1])}")

    if cfg.real_steps > 0:
        real_meter = _meter(cfg, wm, env_args, "meter_real", head)
        try:
            agent, real_steps = _improve_for_real(cfg, bc, env_args, real_meter)
        finally:
            if real_meter is not None:
                real_meter.close()
        agent, kept = _kept(cfg, agent, real_meter)
        save(agent, cfg.out / "agent_real.pt", env_args=env_args)
        real_steps += kept.get("real_steps_read", 0)
        report["real"] = {**_score(agent, env_args, cfg), "real_steps": real_steps, **kept}
        print(
            f"  after {cfg.algo} in the real sim ({real_steps} real steps): "
            f"{_line(report['real'])}",
            flush=True,
        )
        if real_meter is not None:
            report["real"]["meter"] = real_meter.readings
            curves = {
                f"{cfg.algo} {where}": meter.readings,
                f"{cfg.algo} in the real sim": real_meter.readings,
            }
            plot_real_steps(cfg.out / "real_steps.png", curves, env_args["env_name"])
    if "success_rate" in report["bc"]:
        report["success_gain_points"] = 100 * (
            report["imagined"]["success_rate"] - report["bc"]["success_rate"]
        )
    report["seconds"] = time.perf_counter() - started
    write_json_atomic(cfg.out / "report.json", report)
    print(f"wrote {cfg.out / 'report.json'}")
    return read_json(cfg.out / "report.json")  # what the file holds


def _load_inputs(cfg: FinetuneCfg) -> tuple[dict[str, Any], BcAgent, wm_base.WorldModel]:
    """Load the BC agent (and its env_args) and the world model, checked to match."""
    ckpt = read_checkpoint(cfg.agent)
    env_args = ckpt.get("env_args")
    if env_args is None:
        raise ValueError(f"{cfg.agent}: the agent names no task (train it with train-bc)")
    bc = load(cfg.agent)
    wm_ckpt = wm_base.read_checkpoint(cfg.wm)
    wm = wm_base.from_checkpoint(wm_ckpt, cfg.wm)
    _check(cfg, bc, wm)
    wm_task = (wm_ckpt.get("env_args") or {}).get("env_name")
    if wm_task is not None and wm_task != env_args["env_name"]:
        raise ValueError(
            f"{cfg.wm}: a model of {wm_task!r}, the agent was cloned on {env_args['env_name']!r}"
        )
    return env_args, bc, wm


def _meter(
    cfg: FinetuneCfg,
    wm: wm_base.WorldModel,
    env_args: dict[str, Any],
    name: str,
    head: SuccessHead | None = None,
) -> Meter | None:
    """An exploitation meter logging to `tb/<name>` (None: --meter-every 0)."""
    if cfg.meter_every == 0:
        return None
    env = make_eval_env(env_args, None, cfg.meter_episodes)
    writer = SummaryWriter(str(cfg.out / "tb" / name))
    return Meter(wm, env, cfg.meter_every, cfg.meter_seed, writer, head)


def _success_head(cfg: FinetuneCfg, data: Path | None = None, init: SuccessHead | None = None):
    """The success head fitted on `data` (default: the model's data), or refitted
    from `init` for `--cotrain-epochs` epochs as the model is; saved to
    <out>/success_head.pt; (head, its report)."""
    data = data or model_data(wm_base.read_checkpoint(cfg.wm), cfg.cotrain_data)
    settings = SuccessHeadCfg() if init is None else SuccessHeadCfg(epochs=cfg.cotrain_epochs)
    head, report = fit_success_head(EpisodeData(data), settings, seed=cfg.seed, init=init)
    write_atomic(cfg.out / "success_head.pt", lambda f: torch.save(head.state_dict(), f))
    return head, {"data": str(data), **report}


def _head_line(report: dict[str, Any]) -> str:
    parts = [f"{report['success_share']:.0%} of the training steps succeeded"]
    for key in ("accuracy_on_success", "accuracy_on_failure"):
        if report[key] is not None:
            parts.append(f"validation {key.replace('_', ' ')} {report[key]:.0%}")
    return ", ".join(parts)


def _kept(cfg: FinetuneCfg, agent, meter: Meter | None) -> tuple[Any, dict[str, Any]]:
    """The policy a run keeps (`--meter-keep`) and what the report says of it: with
    best, the step of the reading it was kept at; with best or `--meter-patience`,
    the real steps the meter's readings took (which then count as spent: they
    chose the policy or when to stop)."""
    if meter is None:
        return agent, {}
    read = {"real_steps_read": meter.real_steps_read} if cfg.meter_patience else {}
    if cfg.meter_keep == "last":
        return agent, read
    best, reading = meter.best
    return best, {"kept_at": reading["step"], "real_steps_read": meter.real_steps_read}


def _meter_line(reading: dict[str, Any]) -> str:
    return (
        f"real {reading['real_return']:.1f}, imagined {reading['imagined_return']:.1f}, "
        f"reward bias {reading['reward_bias']:+.3f} at {reading['step']:,}"
    )


def _improve_in_imagination(
    cfg: FinetuneCfg,
    bc: BcAgent,
    wm: wm_base.WorldModel,
    env_args: dict[str, Any],
    meter: Meter | None = None,
    cotrainer: CoTrainer | None = None,
    head: SuccessHead | None = None,
) -> tuple[PpoAgent | BcAgent, int]:
    """Fine-tune the BC agent in the world model, read by `meter`, with the model
    (and the success `head`, paying `--success-bonus`) refitted by `cotrainer`'s
    rounds if given; (the agent, the model steps it took)."""
    reset_env = make_eval_env(env_args, None, cfg.start_states)
    # what fine-tuning goes on in: the model, the success head and the start states
    # (branched: recorded observations; co-training refits the first two and adds
    # each round's observations to the third)
    model = {"wm": wm, "head": head, "starts": _branch_starts(cfg)}
    imagined: ImaginedEnv | None = None  # PPO's env, which takes them up

    def swap(new: wm_base.WorldModel) -> None:
        model["wm"] = new
        if model["head"] is not None:
            model["head"], fitted = _success_head(cfg, cotrainer.data, model["head"])
            cotrainer.rounds[-1].success_head = fitted
            if meter is not None:
                meter.success_head = model["head"]
        if model["starts"] is not None:
            model["starts"] = torch.cat((model["starts"], cotrainer.round_observations().float()))
        if imagined is not None:
            imagined.use_model(model["wm"])
            imagined.use_success_head(model["head"])
            if model["starts"] is not None:
                imagined.use_starts(model["starts"])

    def real_steps(step: int) -> int:
        return 0 if cotrainer is None else cotrainer.real_steps

    between = Between(meter, cotrainer, swap, real_steps, cfg.meter_patience)
    if cfg.algo == "ppo":
        settings = ImaginedEnvCfg(
            num_envs=cfg.num_envs,
            seed=cfg.seed,
            episode_length=cfg.horizon,
            sample=cfg.sample,
            termination="never",
            disagreement_penalty=cfg.penalty,
            success_bonus=cfg.success_bonus,
        )
        if model["starts"] is None:
            imagined = ImaginedEnv.from_env(wm, reset_env, settings, name="imagined")
        else:
            imagined = ImaginedEnv(wm, model["starts"], settings, name="imagined")
        imagined.use_success_head(head)
        agent = fine_tune(
            bc_to_ppo(bc, cfg.value_hidden, cfg.log_std, cfg.seed),
            imagined,
            cfg.imagined_steps,
            cfg,
            "imagined",
            between,
        )
        steps = between.steps
    else:
        resets = reset_env.reset(seed=cfg.seed).clone()

        def imagine(policy, std, gen):
            pool = resets if model["starts"] is None else model["starts"]
            pick = torch.randint(len(pool), (cfg.groups,), generator=gen)
            starts = pool[pick].repeat_interleave(cfg.group_size, 0)
            return model_rollouts(
                model["wm"],
                starts,
                policy,
                std,
                cfg.horizon,
                gen,
                cfg.penalty,
                model["head"],
                cfg.success_bonus,
            )

        agent, steps = _grpo_within(cfg.imagined_steps, bc, imagine, cfg, "imagined", between)
    reset_env.close()
    return agent, steps


def _branch_starts(cfg: FinetuneCfg) -> torch.Tensor | None:
    """Every observation of `--start-data` (None: imagined episodes start from
    real reset states)."""
    if cfg.start_data is None:
        return None
    return EpisodeData(cfg.start_data).data["obs"].float().cpu()


def _improve_for_real(
    cfg: FinetuneCfg, bc: BcAgent, env_args: dict[str, Any], meter: Meter | None = None
) -> tuple[PpoAgent | BcAgent, int]:
    """Fine-tune the BC agent in the real sim instead, read by `meter` if given (the
    real steps its critic's warm-up took counted too); (the agent, the real steps it
    took)."""
    warmup = cfg.critic_warmup if cfg.algo == "ppo" else 0
    between = Between(meter, real_steps=lambda step: step + warmup, patience=cfg.meter_patience)
    if cfg.algo == "ppo":
        real_env = _bonus(make_eval_env(env_args, None, cfg.real_envs, seed=cfg.seed), cfg)
        agent = fine_tune(
            bc_to_ppo(bc, cfg.value_hidden, cfg.log_std, cfg.seed),
            real_env,
            cfg.real_steps,
            cfg,
            "real",
            between,
        )
        real_steps = between.steps + cfg.critic_warmup
    else:
        real_env = make_eval_env(env_args, None, cfg.groups * cfg.group_size, seed=cfg.seed)
        real_env = _bonus(real_env, cfg)

        def act_for_real(policy, std, gen):
            seeds = torch.randint(-(2**63), 2**63 - 1, (cfg.groups,), generator=gen)
            seeds = seeds.repeat_interleave(cfg.group_size)
            return env_rollouts(real_env, seeds, policy, std, cfg.horizon, gen)

        agent, real_steps = _grpo_within(cfg.real_steps, bc, act_for_real, cfg, "real", between)
    real_env.close()
    return agent, real_steps


def _bonus(env, cfg: FinetuneCfg):
    """`env` paying `--success-bonus` (as it is without one)."""
    return SuccessBonus(env, cfg.success_bonus) if cfg.success_bonus else env


def _grpo_within(budget: int, bc: BcAgent, rollouts, cfg: FinetuneCfg, name: str, between: Between):
    """(`grpo` for the whole iterations that fit in `budget` transitions, at least
    one unless the budget is 0 or the meter stops it, and the transitions they took)."""
    per = cfg.groups * cfg.group_size * cfg.horizon
    iterations = 0 if budget == 0 else max(1, budget // per)
    return grpo(bc, rollouts, iterations, cfg, name, between), between.steps


def _line(score: dict[str, Any]) -> str:
    success = score.get("success_rate")
    text = f"return {score['return']:.1f}"
    return text if success is None else f"success {100 * success:.0f}%, {text}"
