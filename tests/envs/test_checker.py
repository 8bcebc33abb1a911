"""The protocol checker: every real task and an imagined env pass it, and envs broken
in one rule each are caught with a message naming the env and that rule."""

from __future__ import annotations

import itertools
import tempfile

import pytest
import torch

import envs
import world_models
from agents.jobs.collect import CollectCfg, collect
from envs.checker import check_batched_env
from sim.data.loader import EpisodeData
from world_models.imagined_env import ImaginedEnv, ImaginedEnvCfg
from world_models.models.ensemble import EnsembleCfg
from world_models.models.rssm import RssmCfg
from world_models.train import TrainWMCfg, train_world_model

TASKS = [task for task in envs.list_tasks() if not task.startswith("test_")]


def factory(task: str, **cfg):
    return lambda n, seed, length: envs.make(
        task, num_envs=n, seed=seed, episode_length=length, **cfg
    )


@pytest.mark.parametrize("task", TASKS)
def test_real_task_passes(task):
    check_batched_env(factory(task))


def test_the_checker_leaves_no_files(tmp_path, monkeypatch):
    """Its PPO run would make an SB3 log directory under the temp dir."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    check_batched_env(factory("pendulum_swingup"))
    assert not list(tmp_path.glob("SB3-*"))


@pytest.mark.render
def test_pixel_observations_pass():
    check_batched_env(factory("cartpole_swingup", obs="pixels", render_width=32, render_height=32))


def test_pixel_observations_refuse_what_needs_a_state():
    env = envs.make("pendulum_swingup", num_envs=2, obs="pixels", render_width=32, render_height=32)
    assert env.observation_space.shape == (32, 32, 3) and env.reset().dtype == torch.uint8
    with pytest.raises(ValueError, match="state observations"):
        env.set_state_from_obs(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="obs must be"):
        envs.make("pendulum_swingup", obs="depth")


# ---------------------------------------------------------------- imagined envs
# One small model of each kind, trained on the same few episodes: another kind joins
# with one line here (its TrainWMCfg settings).
SMALL_MODELS = {
    "ensemble": {"ensemble": EnsembleCfg(hidden=32, layers=2, members=3, elites=2)},
    "rssm": {
        "rssm": RssmCfg(deter=32, stoch=4, classes=4, hidden=32, layers=1, sequence_length=16)
    },
}


@pytest.fixture(scope="module")
def pendulum_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("checker") / "data"
    collect(
        CollectCfg(
            task="pendulum_swingup",
            num_envs=4,
            episodes=8,
            episode_length=100,
            policy="noise",
            out=out,
            progress=False,
        )
    )
    return out


@pytest.fixture(scope="module", params=sorted(SMALL_MODELS))
def world_model(request, pendulum_data, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    train_world_model(
        TrainWMCfg(
            data=pendulum_data,
            model=request.param,
            out=out,
            epochs=2,
            progress=False,
            **SMALL_MODELS[request.param],
        )
    )
    return world_models.load(out / "model.pt")


def test_imagined_env_passes(world_model, pendulum_data):
    def make(n, seed, length):
        cfg = ImaginedEnvCfg(num_envs=n, seed=seed, episode_length=length, termination="never")
        return ImaginedEnv.from_dataset(world_model, pendulum_data, cfg)

    check_batched_env(make, name=f"imagined {world_model.kind}")


def test_random_starts_false_admits_a_single_start_state(world_model, pendulum_data):
    one_start = EpisodeData(pendulum_data).data["obs"][:1]

    def make(n, seed, length):
        cfg = ImaginedEnvCfg(
            num_envs=n, seed=seed, episode_length=length, termination="never", sample=False
        )
        return ImaginedEnv(world_model, one_start, cfg)

    check_batched_env(make, random_starts=False)
    with pytest.raises(AssertionError, match=r"^imagined: \[seeding\] seeds 0 and 1 give the same"):
        check_batched_env(make, render=False, sb3=False)


# ------------------------------------------------------------ broken envs are caught
class Wrapper:
    """A real env seen through the protocol, for breaking one rule at a time."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, seed=None):
        return self.env.reset(seed=seed)

    def step(self, action):
        return self.env.step(action)


class FinalObsIsResetObs(Wrapper):
    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "final_obs": obs.clone()}


class ReturnMissesLastReward(Wrapper):
    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "episode_return" in info:
            info["episode_return"] = info["episode_return"] - reward.double()
        return obs, reward, terminated, truncated, info


class BadActionSteps(Wrapper):
    """Steps with zeros before it complains: the error comes too late."""

    def step(self, action):
        if torch.is_tensor(action) and action.shape == (self.num_envs, self.action_dim):
            return self.env.step(action)
        self.env.step(torch.zeros(self.num_envs, self.action_dim))
        raise ValueError(f"{self.name}: action must have shape {(self.num_envs, self.action_dim)}")


class NanBecomesZero(Wrapper):
    def step(self, action):
        if torch.is_tensor(action):
            action = torch.nan_to_num(action, nan=0.0, posinf=1.0, neginf=-1.0)
        return self.env.step(action)


class Float64Obs(Wrapper):
    def reset(self, seed=None):
        return self.env.reset(seed=seed).double()

    def step(self, action):
        obs, *rest = self.env.step(action)
        return obs.double(), *rest

    def get_observations(self):
        return self.env.get_observations().double()


class TimeLimitTerminates(Wrapper):
    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated | truncated, torch.zeros_like(truncated), info


class HalvesActions(Wrapper):
    """Scales actions instead of clipping them: [-1, 1] maps to [-0.5, 0.5]."""

    def step(self, action):
        if torch.is_tensor(action) and action.dtype.is_floating_point:
            action = action / 2
        return self.env.step(action)


class ReusesObsBuffer(Wrapper):
    """Returns one tensor, refilled in place every step."""

    def reset(self, seed=None):
        self.buf = self.env.reset(seed=seed).clone()
        return self.buf

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.buf.copy_(obs)
        return self.buf, reward, terminated, truncated, {**info, "final_obs": info["final_obs"]}

    def get_observations(self):
        return self.buf


def wrapped(cls, task="cartpole_balance", **cfg):
    make = factory(task, **cfg)
    return lambda n, seed, length: cls(make(n, seed, length))


def one_step_late(n, seed, length):
    return envs.make("cartpole_balance", num_envs=n, seed=seed, episode_length=length + 1)


_seeds = itertools.count(100)


def seed_ignored(n, seed, length):
    return envs.make("cartpole_balance", num_envs=n, seed=next(_seeds), episode_length=length)


BROKEN = [
    (
        wrapped(FinalObsIsResetObs),
        r"\[autoreset\] step 4: rows \[0, 1, 2, 3\] ended but "
        r"info\['final_obs'\] equals obs, the new episode's first observation",
    ),
    (
        wrapped(ReturnMissesLastReward),
        r"\[episode stats\] step 4: row 0 ended with "
        r"info\['episode_return'\] [\d.]+, but its rewards since the episode began sum to",
    ),
    (
        one_step_late,
        r"\[horizon\] step 4: row 0 reached the horizon \(4 steps since its "
        r"episode began\) but was not truncated",
    ),
    (
        wrapped(BadActionSteps),
        r"\[bad action\] an action of shape \(4, 2\) was rejected but "
        r"changed get_observations\(\)",
    ),
    (wrapped(NanBecomesZero), r"\[bad action\] an action of NaN was accepted"),
    (
        wrapped(Float64Obs),
        r"\[reset\] reset\(\) obs has dtype torch.float64, expected "
        r"torch.float32",
    ),
    (
        wrapped(TimeLimitTerminates),
        r"\[horizon\] step 4: terminated at the horizon differs "
        r".*a time limit must be truncation, never termination",
    ),
    (
        wrapped(HalvesActions),
        r"\[clipping\] step 12 \(actions outside \[-1, 1\]\): \w+ "
        r"differs from a twin env given the same actions clipped to \[-1, 1\]",
    ),
    (wrapped(ReusesObsBuffer), r"\[step\] step 1 overwrote obs returned by reset\(\) in place"),
    (
        seed_ignored,
        r"\[seeding\] reset\(\): obs differs from a second env made with the same "
        r"seed",
    ),
]


@pytest.mark.parametrize(
    "make_env, message",
    BROKEN,
    ids=[
        "final_obs_is_reset_obs",
        "return_misses_last_reward",
        "truncation_one_step_late",
        "bad_action_steps",
        "nan_action_accepted",
        "float64_obs",
        "time_limit_terminates",
        "no_clipping",
        "reused_obs_buffer",
        "seed_ignored",
    ],
)
def test_broken_env_is_caught(make_env, message):
    with pytest.raises(AssertionError, match=r"^cartpole_balance: \[") as err:
        check_batched_env(make_env, render=False, sb3=False)
    assert err.match(message), str(err.value)


def test_messages_name_the_env_and_the_rule():
    with pytest.raises(AssertionError) as err:
        check_batched_env(wrapped(FinalObsIsResetObs), name="my env", sb3=False)
    text = str(err.value)
    assert text.startswith("my env: [autoreset]")
    assert "(rule: same-step autoreset: a done row's obs starts a new episode" in text


def test_too_few_steps_for_two_episodes_is_refused():
    with pytest.raises(ValueError, match=r"steps > 2 x 4"):
        check_batched_env(factory("pendulum_swingup"), steps=8)
