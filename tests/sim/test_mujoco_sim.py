"""MujocoSim: equal to a loop of mj_step, zero-copy state, subsets, per-world fields,
divergence detection and offscreen rendering."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from envs.base import ASSETS
from sim import make_sim
from sim.mujoco_sim import MujocoSim, load_model

CARTPOLE = str(ASSETS / "cartpole.xml")


def reference_step(model, qpos, qvel, ctrl, nstep):
    """One MjData stepped with mj_step: the ground truth for a single world."""
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:], data.ctrl[:] = qpos, qvel, ctrl
    for _ in range(nstep):
        mujoco.mj_step(model, data)
    return data.qpos.copy(), data.qvel.copy()


@pytest.mark.parametrize("substeps", [1, 3])
def test_step_matches_mj_step_loop_bit_for_bit(substeps):
    sim = make_sim("mujoco", CARTPOLE, 6, substeps=substeps, nthread=2)
    rng = np.random.default_rng(0)
    qpos0 = rng.normal(size=(6, sim.nq))
    qvel0 = rng.normal(size=(6, sim.nv))
    sim.set_state(torch.tensor(qpos0), torch.tensor(qvel0))
    ctrl = rng.uniform(-1, 1, size=(6, sim.nu))
    sim.ctrl.copy_(torch.tensor(ctrl))
    assert not sim.step().any()
    for i in range(6):
        qpos, qvel = reference_step(sim.model, qpos0[i], qvel0[i], ctrl[i], substeps)
        np.testing.assert_array_equal(sim.qpos[i].numpy(), qpos)
        np.testing.assert_array_equal(sim.qvel[i].numpy(), qvel)
    assert sim.dt == pytest.approx(0.01 * substeps)


def test_state_tensors_are_views_of_the_worlds():
    sim = MujocoSim(load_model(CARTPOLE), 4, nthread=1)
    sim.qvel[2, 0] = 3.0  # a write through the tensor is the state the step starts from
    sim.step()
    assert sim.qpos[2, 0] > 0.02 and torch.all(sim.qpos[[0, 1, 3], 0].abs() < 1e-9)
    frame_before = sim.data("xpos").clone()
    sim.step()
    assert not torch.equal(frame_before[2], sim.data("xpos")[2])  # derived fields follow


def test_reset_touches_only_the_given_worlds():
    sim = MujocoSim(load_model(CARTPOLE), 4)
    sim.set_state(torch.ones(4, 2), torch.ones(4, 2))
    sim.reset_worlds(torch.tensor([1, 3]))
    np.testing.assert_array_equal(sim.qpos[[1, 3]].numpy(), np.zeros((2, 2)))
    np.testing.assert_array_equal(sim.qpos[[0, 2]].numpy(), np.ones((2, 2)))


def test_per_world_model_fields_reach_the_physics():
    sim = MujocoSim(load_model(CARTPOLE), 3)
    masses = sim.model_field("body_mass")
    gear = sim.model_field("actuator_gear")
    cart = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_BODY, "cart")
    masses[:, cart] = torch.tensor([0.5, 1.0, 4.0])
    gear[:, 0, 0] = torch.tensor([10.0, 20.0, 10.0])
    sim.set_const()
    sim.ctrl.fill_(1.0)
    for _ in range(5):
        sim.step()
    for i in range(3):
        model = load_model(CARTPOLE)
        model.body_mass[cart] = masses[i, cart].item()
        model.actuator_gear[0, 0] = gear[i, 0, 0].item()
        mujoco.mj_setConst(model, mujoco.MjData(model))
        qpos, _ = reference_step(model, np.zeros(2), np.zeros(2), [1.0], 5)
        np.testing.assert_array_equal(sim.qpos[i].numpy(), qpos)
    # push / (cart + pole mass): 20/1.1 > 10/0.6 > 10/4.1
    assert sim.qpos[1, 0] > sim.qpos[0, 0] > sim.qpos[2, 0] > 0


def test_divergence_is_detected_per_world():
    sim = MujocoSim(load_model(CARTPOLE), 4)
    sim.qvel[1, 0] = 1e12  # beyond the engine's limit: it resets the world mid-step
    sim.qpos[3, 1] = float("nan")
    diverged = sim.step()
    assert diverged.tolist() == [False, True, False, True]
    assert not sim.step().any()  # the engine reset them; later steps are clean


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError, match="valid backends: mujoco"):
        make_sim("bullet", CARTPOLE, 2)


@pytest.mark.render
def test_render_follows_the_state_of_each_world():
    sim = MujocoSim(load_model(CARTPOLE), 3)
    sim.set_state(torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]), torch.zeros(3, 2))
    frames = sim.render(width=96, height=64, camera="fixed")
    assert frames.shape == (3, 64, 96, 3) and frames.dtype == torch.uint8
    # The cart and pole (orange: red well above blue) are left in world 0, right in world 2.
    columns = []
    for frame in frames.float():
        mask = (frame[..., 0] - frame[..., 2] > 60).float()
        assert mask.sum() > 20, "cart not visible"
        columns.append((mask.sum(0) * torch.arange(96)).sum() / mask.sum())
    assert columns[0] < columns[1] - 5 and columns[1] < columns[2] - 5
    subset = sim.render([2], width=96, height=64, camera="fixed")
    torch.testing.assert_close(subset[0], frames[2])
    sim.close()


def test_bound_frames_are_those_of_the_new_state():
    sim = MujocoSim(load_model(CARTPOLE), 3)
    xmat = sim.data("xmat")
    sim.set_state(torch.tensor([[0.1, 0.5], [0.0, 2.0], [-0.3, 3.0]]), torch.ones(3, 2))
    sim.step()
    for i in range(3):
        data = mujoco.MjData(sim.model)
        data.qpos[:], data.qvel[:] = sim.qpos[i].numpy(), sim.qvel[i].numpy()
        mujoco.mj_kinematics(sim.model, data)
        np.testing.assert_allclose(xmat[i].numpy(), data.xmat, rtol=0, atol=1e-15)
