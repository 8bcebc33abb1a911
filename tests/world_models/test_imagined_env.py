"""ImaginedEnv speaks the env protocol: shapes and dtypes, same-step autoreset with
the true final observation, horizon truncation, episode statistics, seeding,
action checks, the MOPO penalty, and Stable-Baselines3 runs on it unmodified."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import envs
import world_models
from agents.jobs.collect import CollectCfg, collect
from envs.sb3 import Sb3VecEnv
from world_models.base import KINDS, Step, WorldModel, model_config
from world_models.imagined_env import ImaginedEnv, ImaginedEnvCfg
from world_models.models.ensemble import EnsembleCfg
from world_models.train import TrainWMCfg, train_world_model


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagined")
    collect(
        CollectCfg(
            task="pendulum_swingup",
            num_envs=4,
            episodes=8,
            episode_length=200,
            policy="noise",
            out=root / "data",
            progress=False,
        )
    )
    small = EnsembleCfg(hidden=64, layers=2, members=3, elites=2)
    train_world_model(
        TrainWMCfg(data=root / "data", out=root / "wm", epochs=3, ensemble=small, progress=False)
    )
    return world_models.load(root / "wm" / "model.pt"), root / "data"


def _env(model_and_data, **kw):
    model, data = model_and_data
    cfg = ImaginedEnvCfg(**{"num_envs": 6, "episode_length": 7, "termination": "never", **kw})
    return ImaginedEnv.from_dataset(model, data, cfg)


def test_protocol_and_autoreset(model_and_data):
    env = _env(model_and_data)
    starts = env.starts
    obs = env.reset(seed=1)
    assert obs.shape == (6, 3) and obs.dtype == torch.float32
    assert env.observation_space.shape == (3,) and env.action_space.shape == (1,)
    for t in range(7):
        prev = obs
        obs, reward, terminated, truncated, info = env.step(torch.zeros(6, 1))
        assert reward.shape == (6,) and reward.dtype == torch.float32
        assert not terminated.any() and truncated.all() == (t == 6)
    # the horizon ended every episode: final_obs continues them, obs starts new ones
    assert "episode_return" in info and (info["episode_length"] == 7).all()
    assert not torch.equal(info["final_obs"], obs)
    assert all((starts == row).all(-1).any() for row in obs)  # each new obs is a start
    assert not torch.equal(info["final_obs"], prev)
    # seeding: the same seed gives the same imagined rollout
    a = [env.reset(seed=3)] + [env.step(torch.full((6, 1), 0.5))[0] for _ in range(3)]
    b = [env.reset(seed=3)] + [env.step(torch.full((6, 1), 0.5))[0] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_use_model_goes_on_from_where_each_row_is_in_the_new_model(model_and_data):
    model, _ = model_and_data
    env = _env(model_and_data, sample=False)  # mean predictions
    env.reset(seed=2)
    obs = env.step(torch.full((6, 1), 0.3))[0]
    torch.manual_seed(5)  # another model of the same kind and settings
    other = type(model)(model.obs_dim, model.action_dim, model.config).eval()
    env.use_model(other)
    action = torch.full((6, 1), -0.4)
    step = other.next(other.encode(obs), action)
    after, reward, *_ = env.step(action)
    torch.testing.assert_close(after, step.obs.float())
    torch.testing.assert_close(reward, step.reward.float())
    with pytest.raises(ValueError, match="cannot replace"):
        env.use_model(type(model)(4, 1, model.config))


def test_use_starts_draws_the_episodes_to_come_from_new_states(model_and_data):
    env = _env(model_and_data)
    env.reset(seed=1)
    obs = env.step(torch.zeros(6, 1))[0]
    new = torch.randn(5, 3) + 10.0  # states no recorded episode holds
    env.use_starts(new)
    after = env.step(torch.zeros(6, 1))[0]
    assert not (after > 5).any()  # running episodes go on where they were
    for _ in range(5):  # until the horizon (7) ends them
        obs = env.step(torch.zeros(6, 1))[0]
    assert all((new == row).all(-1).any() for row in obs)  # each new one from the new states
    assert all((new == row).all(-1).any() for row in env.reset())
    with pytest.raises(ValueError, match=r"start states have shape \(5, 2\)"):
        env.use_starts(torch.zeros(5, 2))
    model, _ = model_and_data
    real = envs.make("pendulum_swingup", num_envs=4, episode_length=7)
    cfg = ImaginedEnvCfg(num_envs=4, episode_length=7, termination="never")
    with pytest.raises(ValueError, match="only for random starts"):
        ImaginedEnv.from_env(model, real, cfg).use_starts(new)


def test_from_env_starts_each_row_where_the_real_env_did(model_and_data):
    """`eval` and `eval-wm` compare a real and an imagined episode row by row: the
    imagined row i must begin in the real row i's start, not in a random draw of them."""
    model, _ = model_and_data
    real = envs.make("pendulum_swingup", num_envs=10, episode_length=7)
    starts = real.reset(seed=5)
    cfg = ImaginedEnvCfg(num_envs=10, seed=5, episode_length=7, termination="never")
    assert torch.equal(ImaginedEnv.from_env(model, real, cfg).reset(), starts)
    # more rows than starts: each start in turn, then again
    wider = ImaginedEnv.from_env(model, real, dataclasses.replace(cfg, num_envs=25))
    assert torch.equal(wider.reset(), starts.repeat(3, 1)[:25])
    # after the first episodes the starts are drawn at random, as from a dataset
    imagined = ImaginedEnv.from_env(model, real, cfg)
    for _ in range(7):
        obs = imagined.step(torch.zeros(10, 1))[0]
    assert not torch.equal(obs, starts)
    assert all((starts == row).all(-1).any() for row in obs)
    # a seeded reset starts the same states again, row by row, as the real env's does
    assert torch.equal(imagined.reset(seed=9), starts)


def test_penalty_and_checks(model_and_data):
    plain, penalised = (
        _env(model_and_data, sample=False),
        _env(model_and_data, sample=False, disagreement_penalty=2.0),
    )
    plain.reset(seed=0), penalised.reset(seed=0)
    action = torch.rand(6, 1) * 2 - 1
    _, r0, _, _, info = plain.step(action)
    _, r1, _, _, _ = penalised.step(action)
    torch.testing.assert_close(r1, r0 - 2.0 * info["disagreement"].float())
    assert (info["disagreement"] > 0).all()
    with pytest.raises(ValueError, match=r"action has shape \(6, 2\), expected \(6, 1\)"):
        plain.step(torch.zeros(6, 2))
    with pytest.raises(ValueError, match="NaN or inf"):
        plain.step(torch.full((6, 1), float("nan")))
    with pytest.raises(ValueError, match=r"start states have shape \(4, 2\)"):
        ImaginedEnv(plain.model, torch.zeros(4, 2), ImaginedEnvCfg())
    with pytest.raises(ValueError, match="disagreement_penalty must be >= 0"):
        _env(model_and_data, disagreement_penalty=-1.0)


@pytest.mark.parametrize("kind", ["ensemble", "joint", "rssm"])
def test_a_penalty_on_a_model_without_disagreement_is_refused(kind):
    """One elite, or a kind with no disagreement: the penalty would silently do nothing."""
    config = {"members": 2, "elites": 1, "hidden": 8, "layers": 1} if kind == "ensemble" else {}
    settings = KINDS[kind].settings
    model = KINDS[kind](3, 1, {**model_config(settings()), **config})
    assert not model.has_disagreement
    cfg = ImaginedEnvCfg(num_envs=2, disagreement_penalty=0.5)
    with pytest.raises(ValueError, match=f"the {kind} model has .* the penalty would do nothing"):
        ImaginedEnv(model, torch.zeros(4, 3), cfg)


def test_sb3_trains_in_imagination(model_and_data):
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    vec = Sb3VecEnv(_env(model_and_data, episode_length=20))
    agent = PPO("MlpPolicy", vec, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    agent.set_logger(Logger(folder=None, output_formats=[]))  # no temp dir per learn()
    agent.learn(total_timesteps=6 * 32 * 2)
    obs = vec.reset()
    actions, _ = agent.predict(obs, deterministic=True)
    vec.step_async(actions)
    obs, rewards, dones, infos = vec.step_wait()
    assert obs.shape == (6, 3) and np.isfinite(rewards).all()


class _TargetAction(WorldModel):
    """A model whose reward is highest for the action 0.5 in every state: what an
    agent that learns through the imagined env must end up doing."""

    kind = "test_target_action"

    def encode(self, obs, frames=None):
        return obs

    def next(self, state, action, generator=None):
        reward = 1.0 - 4.0 * (action[:, 0] - 0.5) ** 2
        zero = reward.new_zeros(len(state))
        return Step(state, state, reward, zero + 1, zero)

    def loss(self, batch):
        raise NotImplementedError


def test_sb3_learns_from_the_imagined_rewards():
    """PPO on the imagined env moves its deterministic action from about 0 to the
    model's best action, 0.5, and its imagined return rises with it."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    model = _TargetAction(2, 1, {})
    model.register_parameter("unused", torch.nn.Parameter(torch.zeros(1)))
    cfg = ImaginedEnvCfg(num_envs=8, episode_length=16, termination="never", seed=0)
    vec = Sb3VecEnv(ImaginedEnv(model, torch.zeros(4, 2), cfg))
    agent = PPO(
        "MlpPolicy",
        vec,
        n_steps=32,
        batch_size=64,
        n_epochs=5,
        learning_rate=1e-3,
        policy_kwargs={"log_std_init": -1.0},  # exploration the action bounds hardly clip
        seed=0,
        device="cpu",
    )
    agent.set_logger(Logger(folder=None, output_formats=[]))

    def act() -> np.ndarray:
        return agent.predict(vec.reset(), deterministic=True)[0][:, 0]

    before = act()
    agent.learn(total_timesteps=8 * 32 * 12)
    after = act()
    assert np.abs(before - 0.5).mean() > 0.3, before  # it starts far from the target
    assert np.abs(after - 0.5).mean() < 0.1, after
