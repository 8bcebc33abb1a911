"""WarpSim (MuJoCo Warp on Warp's CPU device) against the MuJoCo CPU backend:
every task's trajectories from the same states under the same actions, zero-copy
state, resets of subsets, per-world model fields, derived fields, divergence
detection and rendering.

Marked `warp`: the first run compiles Warp's kernels (a minute or two, cached in
~/.cache/warp), so CI runs these in their own step after `pip install -e '.[warp]'`.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

pytest.importorskip("mujoco_warp")

import envs  # noqa: E402
from envs.base import ASSETS  # noqa: E402
from envs.registry import spec  # noqa: E402
from sim import make_sim  # noqa: E402
from sim.randomization import RandomizationCfg  # noqa: E402

pytestmark = pytest.mark.warp
CARTPOLE = str(ASSETS / "cartpole.xml")
STEPS = 200
# float32 physics against float64: the largest observation difference seen over
# 200 steps of random actions is below 1e-5 of 1 + |x| on every task (cheetah: 8e-5
# of a 3 rad/s velocity); 1e-4 of 1 + |x| leaves room.
TOL = 1e-4


def pair(name: str, n: int = 4, **cfg):
    return (
        envs.make(name, num_envs=n, seed=3, **cfg),
        envs.make(name, num_envs=n, seed=3, backend="warp", **cfg),
    )


# Legged tasks (walker, hopper, quadruped, humanoid) fall onto the floor from random
# poses under random actions: float32 contact dynamics part from float64 within a few
# dozen steps there (measured: 1e-4 relative at step 20, whole trajectories apart by
# step 60), as two float64 runs
# would on any change of summation order. The finger's strikes on the spinner (an
# elliptic friction cone, 200 solver iterations) stay close but spike at contact
# events (measured 5e-4 of 1 + |x| at one step of 200). They are compared step by
# step instead, each asset once: its tasks differ only in the reward (and the finger's
# target), computed by the same torch code on both backends from the compared physics.
CHAOTIC = ("finger_turn_easy", "hopper_hop", "humanoid_walk", "quadruped_walk", "walker_walk")
CHAOTIC_FAMILIES = ("finger_", "hopper_", "humanoid_", "quadruped_", "walker_")


@pytest.mark.parametrize(
    "name", [t for t in envs.list_tasks() if not t.startswith(CHAOTIC_FAMILIES)]
)
def test_trajectories_match_the_mujoco_backend(name):
    ref, env = pair(name, episode_length=150)
    assert isinstance(env.sim.qpos, torch.Tensor) and env.sim.qpos.dtype == torch.float32
    # a start drawn directly is float32-equal; one that settles first (cheetah: 200
    # physics steps) carries their rounding (measured 6e-6)
    start_tol = TOL if getattr(ref.cfg, "settle_steps", 0) else 1e-6
    torch.testing.assert_close(env.reset(), ref.reset(), rtol=0, atol=start_tol)
    gen = torch.Generator().manual_seed(0)
    ends = 0
    for _ in range(STEPS):
        action = torch.rand(ref.num_envs, ref.action_dim, generator=gen) * 2 - 1
        r_obs, r_rew, r_term, r_trunc, r_info = ref.step(action)
        obs, rew, term, trunc, info = env.step(action)
        torch.testing.assert_close(obs, r_obs, rtol=TOL, atol=TOL)
        torch.testing.assert_close(rew, r_rew, rtol=0, atol=TOL)
        torch.testing.assert_close(info["final_obs"], r_info["final_obs"], rtol=TOL, atol=TOL)
        assert torch.equal(term, r_term) and torch.equal(trunc, r_trunc)
        ends += int((r_term | r_trunc).sum())
    assert ends >= ref.num_envs  # the comparison spans an autoreset
    assert env.num_diverged == 0


# mujoco_warp orients the tangent frame of a capsule- or sphere-plane contact its own way
# (MuJoCo's follows the geom), which turns a pyramidal friction cone (the Control
# Suite's default) about the contact normal: where a humanoid's or quadruped's limbs
# slide on the floor the two engines then apply different friction (measured: one
# forward's qacc apart by up to 1.6x in 13 of 60 humanoid steps, with identical
# contacts). An elliptic cone is the same in every frame: with it they agree within
# 5.5e-4 and 1.3e-3 of 1 + |x| over these 200 steps, which checks everything else.
ELLIPTIC = {"humanoid_walk", "quadruped_walk"}


@pytest.fixture
def cone(request, monkeypatch):
    """Elliptic friction cones on both backends for the tasks in ELLIPTIC."""
    name = request.node.callspec.params["name"]
    if name in ELLIPTIC:
        cls = spec(name).env_cls
        edit = cls.edit_spec.__func__

        def elliptic(c, s, cfg):
            edit(c, s, cfg)
            s.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC

        monkeypatch.setattr(cls, "edit_spec", classmethod(elliptic))
    return name in ELLIPTIC


@pytest.mark.parametrize("name", CHAOTIC)
def test_contact_rich_tasks_match_the_mujoco_backend_step_by_step(name, cone):
    """From the MuJoCo backend's state at every step, one control step on each backend
    gives the same observation and reward (float32 against float64, through contacts:
    measured 1.2e-4 and 2.3e-4 of 1 + |x| at most on walker and hopper, 1.3e-3 on the
    quadruped); the first 20 steps run freely agree too, and resets across an episode
    boundary start the same episodes. Acceleration-stage readings (forces) start within
    float32 rounding of theirs (6e-6)."""
    ref, env = pair(name, episode_length=150)
    if cone:
        assert ref.sim.model.opt.cone == env.sim.model.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC
    tol = 2e-3 if cone else 1e-3
    torch.testing.assert_close(env.reset(), ref.reset(), rtol=0, atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    for t in range(STEPS):
        if t >= 20:  # after 20 free steps, start each step from the reference's state
            env.set_physics_state(ref.sim.qpos.float(), ref.sim.qvel.float())
        action = torch.rand(ref.num_envs, ref.action_dim, generator=gen) * 2 - 1
        r_obs, r_rew, r_term, r_trunc, r_info = ref.step(action)
        obs, rew, term, trunc, info = env.step(action)
        scale = 1 + r_info["final_obs"].abs()
        assert ((info["final_obs"] - r_info["final_obs"]).abs() / scale).max() < tol, t
        assert ((obs - r_obs).abs() / (1 + r_obs.abs())).max() < tol, t
        torch.testing.assert_close(rew, r_rew, rtol=0, atol=tol)
        assert torch.equal(term, r_term) and torch.equal(trunc, r_trunc)
    assert env.num_diverged == 0


def test_randomized_physics_match_the_mujoco_backend():
    dr = RandomizationCfg(
        mass_scale=(0.5, 2.0),
        damping_scale=(0.5, 2.0),
        actuator_gain_scale=(0.5, 1.5),
        gravity_scale=(0.8, 1.2),
    )
    ref, env = pair("cartpole_swingup", randomization=dr)
    for field in ("body_mass", "dof_damping", "actuator_gear", "opt.gravity"):
        torch.testing.assert_close(
            env.sim.model_field(field).double(), ref.sim.model_field(field), rtol=1e-6, atol=0
        )
    assert env.sim.model_field("body_mass").std(0).max() > 0.1  # the worlds differ
    gen = torch.Generator().manual_seed(1)
    for _ in range(100):
        action = torch.rand(ref.num_envs, 1, generator=gen) * 2 - 1
        torch.testing.assert_close(env.step(action)[0], ref.step(action)[0], rtol=0, atol=TOL)


@pytest.mark.parametrize("name", ["push", "reacher_hard"])
def test_randomized_masses_match_the_mujoco_backend_through_contacts(name):
    """Per-world masses change the derived constants of every world (`set_const`),
    the constraint solver's weights among them: the arm's wrist limit and the ball's
    contacts then act as on the MuJoCo backend."""
    ref, env = pair(name, randomization=RandomizationCfg(mass_scale=(0.5, 2.0)))
    gen = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        action = torch.rand(ref.num_envs, ref.action_dim, generator=gen) * 2 - 1
        torch.testing.assert_close(env.step(action)[0], ref.step(action)[0], rtol=0, atol=TOL)


def test_state_tensors_are_views_of_the_worlds():
    sim = make_sim("warp", CARTPOLE, 4)
    sim.qvel[2, 0] = 3.0  # a write through the tensor is the state the step starts from
    sim.step()
    assert sim.qpos[2, 0] > 0.02 and torch.all(sim.qpos[[0, 1, 3], 0].abs() < 1e-9)
    frame_before = sim.data("xpos").clone()
    sim.step()
    assert not torch.equal(frame_before[2], sim.data("xpos")[2])  # derived fields follow


def test_derived_fields_are_those_of_the_new_state():
    ref, sim = make_sim("mujoco", CARTPOLE, 3), make_sim("warp", CARTPOLE, 3)
    for s in (ref, sim):
        s.data("xmat"), s.data("geom_xpos")
        s.set_state(torch.tensor([[0.1, 0.5], [0.0, 2.0], [-0.3, 3.0]]), torch.ones(3, 2))
        s.step()
    for name in ("xmat", "geom_xpos"):
        assert sim.data(name).shape == ref.data(name).shape
        torch.testing.assert_close(sim.data(name).double(), ref.data(name), rtol=0, atol=1e-5)


def test_reset_touches_only_the_given_worlds():
    sim = make_sim("warp", CARTPOLE, 4)
    sim.set_state(torch.ones(4, 2), torch.ones(4, 2))
    sim.reset_worlds(torch.tensor([1, 3]))
    np.testing.assert_array_equal(sim.qpos[[1, 3]].numpy(), np.zeros((2, 2)))
    np.testing.assert_array_equal(sim.qpos[[0, 2]].numpy(), np.ones((2, 2)))
    np.testing.assert_array_equal(sim.qvel[[0, 2]].numpy(), np.ones((2, 2)))


def test_per_world_model_fields_reach_the_physics():
    sims = [make_sim(b, CARTPOLE, 3) for b in ("mujoco", "warp")]
    for sim in sims:
        cart = sim.object_id("body", "cart")
        sim.model_field("body_mass")[:, cart] = torch.tensor([0.5, 1.0, 4.0])
        sim.model_field("actuator_gear")[:, 0, 0] = torch.tensor([10.0, 20.0, 10.0])
        sim.set_const()
        sim.ctrl.fill_(1.0)
        for _ in range(5):
            sim.step()
    ref, sim = sims
    torch.testing.assert_close(sim.qpos.double(), ref.qpos, rtol=0, atol=1e-6)
    assert sim.qpos[1, 0] > sim.qpos[0, 0] > sim.qpos[2, 0] > 0


def test_divergence_is_detected_per_world():
    sim = make_sim("warp", CARTPOLE, 4)
    sim.qvel[1, 0] = 1e12
    sim.qpos[3, 1] = float("nan")
    assert sim.step().tolist() == [False, True, False, True]
    sim.reset_worlds(torch.tensor([1, 3]))
    assert not sim.step().any()


def test_unknown_model_field_is_named():
    sim = make_sim("warp", CARTPOLE, 2)
    with pytest.raises(ValueError, match="no_such_field"):
        sim.model_field("no_such_field")
    with pytest.raises(ValueError, match="no_such_field"):
        sim.data("no_such_field")


def cart_columns(frames: torch.Tensor) -> list[float]:
    """Mean column of the orange cart and pole (red well above blue) in each frame."""
    columns = []
    for frame in frames.float():
        mask = (frame[..., 0] - frame[..., 2] > 60).float()
        assert mask.sum() > 20, "cart not visible"
        columns.append(float((mask.sum(0) * torch.arange(frame.shape[1])).sum() / mask.sum()))
    return columns


def test_frames_follow_the_state_of_each_world():
    sim = make_sim("warp", CARTPOLE, 3)
    sim.set_state(torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]), torch.zeros(3, 2))
    frames = sim.render(width=96, height=64, camera="fixed")
    assert frames.shape == (3, 64, 96, 3) and frames.dtype == torch.uint8
    left, middle, right = cart_columns(frames)
    assert left < middle - 5 and middle < right - 5
    torch.testing.assert_close(sim.render([2], width=96, height=64, camera="fixed")[0], frames[2])
    sim.qpos[0, 0] = 1.0  # a write to the state is what the next frame shows
    assert cart_columns(sim.render([0], width=96, height=64, camera="fixed"))[0] == right


@pytest.mark.render
def test_frames_show_what_the_mujoco_backend_shows():
    ref, env = pair("cartpole_swingup", n=4)
    gen = torch.Generator().manual_seed(2)
    for _ in range(30):
        action = torch.rand(4, 1, generator=gen) * 2 - 1
        ref.step(action), env.step(action)
    a, b = ref.render().float(), env.render().float()
    assert a.shape == b.shape == (4, 64, 64, 3)
    # the same cart and pole where the rasteriser draws them (shading differs)
    cart_a, cart_b = (f[..., 0] - f[..., 2] > 60 for f in (a, b))
    iou = (cart_a & cart_b).sum((1, 2)) / (cart_a | cart_b).sum((1, 2))
    assert iou.min() > 0.7, iou
    assert (a - b).abs().mean() < 20  # sky, floor and lighting alike


def test_per_world_targets_are_drawn_where_they_are():
    env = envs.make("reacher_easy", num_envs=2, backend="warp", seed=0)
    env.set_target(torch.tensor([[0.15, 0.15], [-0.15, -0.15]]))
    # the target is welded to the world: its frame follows its per-world position
    env.sim.forward()
    target_xpos = env.sim.data("geom_xpos")[:, env.object_id("geom", "target"), :2]
    torch.testing.assert_close(target_xpos, torch.tensor([[0.15, 0.15], [-0.15, -0.15]]))
    frames = env.render().float()
    target = (frames[..., 0] - frames[..., 1] > 60) & (frames[..., 2] < 120)  # red-ish target
    rows = torch.arange(64.0)[:, None].expand(64, 64)
    cols = torch.arange(64.0)[None, :].expand(64, 64)
    centre = [(float(rows[m].mean()), float(cols[m].mean())) for m in target]
    assert all(m.sum() > 5 for m in target), "target not visible"
    # opposite corners of the arena: the targets sit far apart in the image
    assert abs(centre[0][0] - centre[1][0]) > 10 and abs(centre[0][1] - centre[1][1]) > 10


def test_scene_hooks_are_refused():
    sim = make_sim("warp", CARTPOLE, 1)
    with pytest.raises(ValueError, match="scene_hook"):
        sim.render(scene_hook=lambda model, data, world: None)


def test_fields_without_a_batch_dimension_stay_shared():
    sim = make_sim("warp", CARTPOLE, 2)
    with pytest.raises(ValueError, match="actuator_trntype.*per-world"):
        sim.model_field("actuator_trntype")  # one actuator: a leading 1 that is no batch


def _one_task_per_model() -> list[str]:
    """The first task of each MJCF asset: tasks of one asset render alike."""
    first: dict[str, str] = {}
    for name in envs.list_tasks():
        if not name.startswith("test_"):
            first.setdefault(spec(name).env_cls.model_file, name)
    return sorted(first.values())


@pytest.mark.parametrize("name", _one_task_per_model())
def test_pixel_observations_pass_the_protocol_checker(name):
    from envs.checker import check_batched_env

    check_batched_env(
        lambda n, seed, length: envs.make(
            name,
            num_envs=n,
            seed=seed,
            episode_length=length,
            backend="warp",
            obs="pixels",
            render_width=32,
            render_height=32,
        )
    )


cuda = pytest.mark.gpu


@cuda
@pytest.mark.parametrize(
    "name", [t for t in envs.list_tasks() if not t.startswith(CHAOTIC_FAMILIES)]
)
def test_cuda_worlds_match_the_mujoco_backend(name):
    """On a GPU the worlds, the env's buffers and its outputs stay on the device
    (CUDA graphs step the physics) and follow the MuJoCo CPU backend, randomization
    and action delay included."""
    dr = RandomizationCfg(mass_scale=(0.5, 2.0), damping_scale=(0.5, 2.0), action_delay=(0, 2))
    ref = envs.make(name, num_envs=4, seed=3, episode_length=150, randomization=dr)
    env = envs.make(
        name,
        num_envs=4,
        seed=3,
        episode_length=150,
        randomization=dr,
        backend="warp",
        device="cuda",
    )
    assert env.sim.qpos.is_cuda and env.episode_length_buf.is_cuda
    start_tol = TOL if getattr(ref.cfg, "settle_steps", 0) else 1e-6  # see above
    torch.testing.assert_close(env.reset().cpu(), ref.reset(), rtol=0, atol=start_tol)
    gen = torch.Generator().manual_seed(0)
    ends = 0
    for _ in range(STEPS):
        action = torch.rand(ref.num_envs, ref.action_dim, generator=gen) * 2 - 1
        r_obs, r_rew, r_term, r_trunc, r_info = ref.step(action)
        obs, rew, term, trunc, info = env.step(action.cuda())
        assert obs.is_cuda and rew.is_cuda and info["final_obs"].is_cuda
        torch.testing.assert_close(obs.cpu(), r_obs, rtol=TOL, atol=TOL)
        torch.testing.assert_close(rew.cpu(), r_rew, rtol=0, atol=TOL)
        torch.testing.assert_close(info["final_obs"].cpu(), r_info["final_obs"], rtol=TOL, atol=TOL)
        assert torch.equal(term.cpu(), r_term) and torch.equal(trunc.cpu(), r_trunc)
        ends += int((r_term | r_trunc).sum())
    assert ends >= ref.num_envs
    torch.testing.assert_close(env.episode_seed.cpu(), ref.episode_seed)


@cuda
def test_cuda_frames_follow_the_state_of_each_world():
    sim = make_sim("warp", CARTPOLE, 3, device="cuda")
    sim.set_state(torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]), torch.zeros(3, 2))
    frames = sim.render(width=96, height=64, camera="fixed")
    assert frames.is_cuda and frames.shape == (3, 64, 96, 3)
    left, middle, right = cart_columns(frames.cpu())
    assert left < middle - 5 and middle < right - 5
    env = envs.make(
        "cartpole_swingup", num_envs=8, seed=1, backend="warp", device="cuda", obs="pixels"
    )
    obs = env.reset()
    assert obs.is_cuda and obs.shape == (8, 64, 64, 3) and obs.dtype == torch.uint8
    assert env.step(torch.zeros(8, 1, device="cuda"))[0].is_cuda
