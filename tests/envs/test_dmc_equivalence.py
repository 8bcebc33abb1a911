"""Every task equals its DeepMind Control Suite counterpart.

From identical physics states and identical action sequences, observations and
rewards match at every step of a whole episode, and episodes end at the same
step; initial states come from the same distribution (two-sample KS tests over
many resets, with independent random streams).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs

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
