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
from envs.base import ASSETS
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
}
TASKS = [t for t in DMC if t in envs.list_tasks()]


def flat(observation) -> np.ndarray:
    """dm_control's observation dict flattened in its key order."""
    return np.concatenate([np.atleast_1d(v).ravel() for v in observation.values()])


def copy_task_state(name: str, env, k: int, dmc_env) -> None:
    """Copy task state that is not physics state: the reacher's target."""
    if name.startswith("reacher"):
        model = dmc_env.physics.named.model
        assert (
            env.sim.model_field("geom_size")[k, env.object_id("geom", "target"), 0]
            == (model.geom_size["target", 0])
        )
        env.set_target(
            torch.from_numpy(model.geom_pos["target", :2][None].copy()), torch.tensor([k])
        )


@pytest.mark.parametrize("name", TASKS)
def test_trajectories_match_dm_control(name):
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
        ref = [e.step(action[k]) for k, e in enumerate(dmc_envs)]
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


@pytest.mark.parametrize("name", TASKS)
def test_compiled_physics_equals_dm_control(name):
    """Our MJCF asset compiles to dm_control's physics, field for field (masses,
    inertias, joints, geoms, actuators, sensors, options); only the look differs."""
    domain, task = DMC[name]
    asset = ASSETS / spec(name).env_cls.model_file
    ours = _physics_fields(mujoco.MjModel.from_xml_path(str(asset)))
    ref = _physics_fields(suite.load(domain, task).physics.model.ptr)
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


@pytest.mark.parametrize("name", TASKS)
def test_initial_state_distribution_matches(name):
    ours, ref = _initial_states(name, 2000)
    assert ours.shape == ref.shape
    for dim in range(ref.shape[1]):
        a, b = ours[:, dim], ref[:, dim]
        if np.ptp(b) == 0:  # deterministic coordinate
            np.testing.assert_allclose(a, b, atol=1e-7)
            continue
        p = stats.ks_2samp(a, b).pvalue
        assert p > 1e-3, f"{name}: initial obs dim {dim} differs (KS p={p:.2g})"
