"""Every task equals its DeepMind Control Suite counterpart.

From identical physics states and identical action sequences, observations and
rewards match at every step of a whole episode, and episodes end at the same
step; initial states come from the same distribution (two-sample KS tests over
many resets, with independent random streams).
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

import envs
from envs.registry import spec

suite = pytest.importorskip("dm_control.suite")
stats = pytest.importorskip("scipy.stats")

# task -> (dm_control domain, dm_control task)
DMC = {
    "cartpole_balance": ("cartpole", "balance"),
    "cartpole_balance_sparse": ("cartpole", "balance_sparse"),
    "cartpole_swingup": ("cartpole", "swingup"),
    "cartpole_swingup_sparse": ("cartpole", "swingup_sparse"),
    "pendulum_swingup": ("pendulum", "swingup"),
    "reacher_easy": ("reacher", "easy"),
    "reacher_hard": ("reacher", "hard"),
    "walker_stand": ("walker", "stand"),
    "walker_walk": ("walker", "walk"),
    "walker_run": ("walker", "run"),
    "hopper_stand": ("hopper", "stand"),
    "hopper_hop": ("hopper", "hop"),
    "cheetah_run": ("cheetah", "run"),
    "acrobot_swingup": ("acrobot", "swingup"),
    "ball_in_cup_catch": ("ball_in_cup", "catch"),
    "finger_spin": ("finger", "spin"),
    "finger_turn_easy": ("finger", "turn_easy"),
    "finger_turn_hard": ("finger", "turn_hard"),
    "quadruped_walk": ("quadruped", "walk"),
    "quadruped_run": ("quadruped", "run"),
    "humanoid_stand": ("humanoid", "stand"),
    "humanoid_walk": ("humanoid", "walk"),
    "humanoid_run": ("humanoid", "run"),
}
TASKS = [t for t in DMC if t in envs.list_tasks()]


def flat(observation) -> np.ndarray:
    """dm_control's observation dict flattened in its key order."""
    return np.concatenate([np.atleast_1d(v).ravel() for v in observation.values()])


def to_dmc_action(dmc_env, action: np.ndarray) -> np.ndarray:
    """Our actions span [-1, 1] on every task (Gymnasium's convention); dm_control's
    span the actuators' control ranges (a quadruped's lift: [-1, 1.1])."""
    lo, hi = dmc_env.action_spec().minimum, dmc_env.action_spec().maximum
    return action * ((hi - lo) / 2) + (hi + lo) / 2  # in the env's own rounding


def copy_task_state(name: str, env, k: int, dmc_env) -> None:
    """Copy task state that is not physics state: the reacher's and finger's targets."""
    if name.startswith("finger_turn"):
        centre = dmc_env.physics.named.model.site_pos["target", ["x", "z"]]
        env.set_target(torch.tensor(centre)[None], torch.tensor([k]))
    if name.startswith("reacher"):
        model = dmc_env.physics.named.model
        assert (
            env.sim.model_field("geom_size")[k, env.object_id("geom", "target"), 0]
            == (model.geom_size["target", 0])
        )
        env.set_target(
            torch.from_numpy(model.geom_pos["target", :2][None].copy()), torch.tensor([k])
        )


# tasks whose asset and start law are a sibling's (only the reward, or the drawn floor's
# size, differs): their trajectory and start-law tests run in the slow step, the
# sibling's by default
SAME_LAW_AS = {
    "cartpole_balance_sparse": "cartpole_balance",
    "cartpole_swingup_sparse": "cartpole_swingup",
    "walker_stand": "walker_walk",
    "walker_run": "walker_walk",
    "hopper_stand": "hopper_hop",
    "quadruped_run": "quadruped_walk",
    "humanoid_stand": "humanoid_walk",
    "humanoid_run": "humanoid_walk",
    "finger_turn_hard": "finger_turn_easy",
}


def siblings_slow(seconds: int) -> list:
    """TASKS, those of SAME_LAW_AS marked slow with the duration they declare."""
    slow = pytest.mark.slow(seconds=seconds)
    return [pytest.param(t, marks=slow) if t in SAME_LAW_AS else t for t in TASKS]


@pytest.mark.parametrize("name", siblings_slow(6))
def test_trajectories_match_dm_control(name):
    """A thousand steps of random actions from dm_control's own starts (the tasks that
    share a sibling's asset, in the slow step: only their reward differs)."""
    domain, task = DMC[name]
    n = 3
    dmc_envs = [suite.load(domain, task, task_kwargs={"random": 100 + k}) for k in range(n)]
    first = [e.reset() for e in dmc_envs]
    env = envs.make(name, num_envs=n, seed=0)
    env.reset()
    for k, e in enumerate(dmc_envs):
        copy_task_state(name, env, k, e)
    qpos = torch.tensor(np.stack([e.physics.data.qpos for e in dmc_envs]))
    qvel = torch.tensor(np.stack([e.physics.data.qvel for e in dmc_envs]))
    obs = env.set_physics_state(qpos, qvel)
    np.testing.assert_allclose(
        obs.numpy(), np.stack([flat(t.observation) for t in first]), rtol=1e-6, atol=1e-6
    )
    rng = np.random.default_rng(0)
    steps = dmc_envs[0]._step_limit
    assert steps == env.cfg.episode_length == 1000
    for t in range(int(steps)):
        action = rng.uniform(-1, 1, size=(n, env.action_dim))
        ref = [e.step(to_dmc_action(e, action[k])) for k, e in enumerate(dmc_envs)]
        obs, reward, terminated, truncated, info = env.step(torch.tensor(action))
        ref_obs = np.stack([flat(r.observation) for r in ref])
        ours = info["final_obs"] if ref[0].last() else obs
        np.testing.assert_allclose(
            ours.numpy(),
            ref_obs,
            rtol=1e-5,
            atol=1e-5,
            err_msg=f"{name} observation at step {t + 1}",
        )
        np.testing.assert_allclose(
            reward.numpy(),
            [r.reward for r in ref],
            rtol=1e-5,
            atol=1e-6,
            err_msg=f"{name} reward at step {t + 1}",
        )
        assert truncated.tolist() == [r.last() for r in ref], f"{name} step {t + 1}"
        assert not terminated.any()


# what only drawing uses (names, materials, textures, lights, cameras, sites), which
# our assets give their own look
_LOOKS = (
    "name",
    "tex",
    "mat",
    "vis",
    "stat",
    "light",
    "cam",
    "skin",
    "mesh",
    "hfield",
    "nhfield",  # the Control Suite's quadruped keeps a heightfield no geom uses
    "text",
    "tuple",
    "key",
    "plugin",
    "flex",
    "font",
    "paths",
    "signature",
    "nbuffer",
    "nnames",
    "nmat",
    "ntex",
    "nlight",
    "ncam",
    "nsite",
    "site_",
    "bvh",
    "nbvh",
    "oct",
    "noct",
)


def _physics_fields(model) -> dict[str, np.ndarray]:
    """Every numeric MjModel field and option that the dynamics read."""
    fields = {}
    for name in dir(model):
        if name.startswith("_") or name.startswith(_LOOKS):
            continue
        if name.endswith(("rgba", "matid", "group", "user", "dataid")):
            continue
        value = getattr(model, name)
        if isinstance(value, np.ndarray | int | float) and not isinstance(value, bool):
            fields[name] = np.asarray(value)
    for name in dir(model.opt):
        value = getattr(model.opt, name)
        if not name.startswith("_") and isinstance(value, np.ndarray | int | float):
            fields[f"opt.{name}"] = np.asarray(value)
    return fields


# objects each episode places and sizes itself (a reacher's target)
EPISODE_OBJECTS = {"reacher": [("mjOBJ_GEOM", "target")]}


@pytest.mark.parametrize("name", TASKS)
def test_compiled_physics_equals_dm_control(name):
    """Our MJCF asset compiles to dm_control's physics, field for field (masses,
    inertias, joints, geoms, actuators, sensors, options); only the look differs. The
    reference is taken after dm_control's first reset, which edits the model of some
    tasks (the finger spinner's damping)."""
    domain, task = DMC[name]
    ours = _physics_fields(spec(name).env_cls.compile_model(envs.make_cfg(name)))
    dmc = suite.load(domain, task)
    dmc.reset()
    ref = _physics_fields(dmc.physics.model.ptr)
    for kind, obj in EPISODE_OBJECTS.get(domain, ()):  # checked by the trajectory test
        index = mujoco.mj_name2id(dmc.physics.model.ptr, getattr(mujoco.mjtObj, kind), obj)
        for field in [k for k in ref if k.startswith(("geom_pos", "geom_size"))]:
            ref[field][index] = ours[field][index]
    assert set(ours) == set(ref)
    # equal, or within 1e-12 where a mass is scaled by a density rather than by
    # MuJoCo's deprecated settotalmass (cheetah): float rounding of the same numbers
    differ = [
        k
        for k in ours
        if ours[k].shape != ref[k].shape or not np.allclose(ours[k], ref[k], rtol=1e-12, atol=0)
    ]
    assert not differ, f"{name}: physics fields differ from dm_control's: {differ}"


def _initial_states(name: str, count: int):
    domain, task = DMC[name]
    dmc = suite.load(domain, task, task_kwargs={"random": 7})
    ref = np.stack([flat(dmc.reset().observation) for _ in range(count)])
    ours = envs.make(name, num_envs=count, seed=1234).reset().numpy()
    return ours, ref


# dm_control finds a quadruped's starting height in up to a hundred 1 cm steps (12 ms a
# reset): fewer resets keep the test within seconds
RESETS = {"quadruped_walk": 600, "quadruped_run": 600}


@pytest.mark.parametrize("name", siblings_slow(10))
def test_initial_state_distribution_matches(name):
    ours, ref = _initial_states(name, RESETS.get(name, 2000))
    assert ours.shape == ref.shape
    for dim in range(ref.shape[1]):
        a, b = ours[:, dim], ref[:, dim]
        if np.ptp(b) < 1e-9:  # deterministic coordinate (a free fall's accelerometer: 0
            np.testing.assert_allclose(a, b, atol=1e-7)  # up to rounding, 1e-15)
            continue
        p = stats.ks_2samp(a, b).pvalue
        assert p > 1e-3, f"{name}: initial obs dim {dim} differs (KS p={p:.2g})"


def _ball_near_cup(rng: np.random.Generator, n: int, dmc) -> tuple[np.ndarray, np.ndarray]:
    """Cup anywhere, ball within 4 cm of the target box's centre (slide origins: the
    cup's 0.6 m high, the ball's 0.2 m; the box 5 cm below the cup's)."""
    cup = rng.uniform(-0.2, 0.2, size=(n, 2))
    ball = cup + np.array([0.0, 0.35]) + rng.uniform(-0.04, 0.04, size=(n, 2))
    return np.concatenate((cup, ball), 1), rng.normal(size=(n, 4))


def _finger_joints(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(-1.9, 1.9, size=(n, 2)) + np.array([-np.pi / 2, 0.0])


def _spinning_at_about_15(rng: np.random.Generator, n: int, dmc) -> tuple[np.ndarray, np.ndarray]:
    angle = rng.uniform(-np.pi, np.pi, size=(n, 1))
    qvel = np.concatenate((rng.normal(size=(n, 2)), rng.uniform(-20, -10, size=(n, 1))), 1)
    return np.concatenate((_finger_joints(rng, n), angle), 1), qvel


def _tip_near_target(rng: np.random.Generator, n: int, dmc) -> tuple[np.ndarray, np.ndarray]:
    """The body's tip (0.13 m from the hinge, at (-sin a, cos a)) within 0.6 rad of the
    target's direction (sin t, cos t) from the hinge."""
    named = dmc.physics.named.model
    offset = named.site_pos["target", ["x", "z"]] - named.body_pos["spinner", ["x", "z"]]
    target = np.arctan2(offset[0], offset[1])
    angle = -target + rng.uniform(-0.6, 0.6, size=(n, 1))
    return np.concatenate((_finger_joints(rng, n), angle), 1), rng.normal(size=(n, 3))


# task -> states where its sparse reward is won or lost (random actions rarely win it)
NEAR_GOAL = {
    "ball_in_cup_catch": _ball_near_cup,
    "finger_spin": _spinning_at_about_15,
    "finger_turn_easy": _tip_near_target,
    "finger_turn_hard": _tip_near_target,
}


@pytest.mark.parametrize("name", [t for t in NEAR_GOAL if t in TASKS])
def test_rewards_match_dm_control_near_the_goal(name):
    n = 200
    domain, task = DMC[name]
    dmc = suite.load(domain, task, task_kwargs={"random": 0})
    dmc.reset()
    qpos, qvel = NEAR_GOAL[name](np.random.default_rng(0), n, dmc)
    env = envs.make(name, num_envs=n, seed=0)
    env.reset()
    for k in range(n):
        copy_task_state(name, env, k, dmc)
    env.set_physics_state(torch.from_numpy(qpos), torch.from_numpy(qvel))
    ours = env._get_rewards().numpy()
    ref = []
    for k in range(n):
        with dmc.physics.reset_context():
            dmc.physics.data.qpos[:] = qpos[k]
            dmc.physics.data.qvel[:] = qvel[k]
        ref.append(dmc.task.get_reward(dmc.physics))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
    assert 0.1 < np.mean(ref) < 0.9  # both outcomes are tested
