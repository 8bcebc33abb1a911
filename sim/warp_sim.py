"""MuJoCo Warp backend: N worlds of one MJCF model as Warp kernels (CPU or CUDA).

Built on `mujoco_warp` (the `warp` extra), whose version pairs with `mujoco`'s. The
host `MjModel` is moved to the device once (`put_model`) and every world is one row
of a batched `Data` (`put_data(nworld=N)`); a `step` launches the kernels of all
worlds at once. On a CUDA device the `substeps` physics steps are captured once as a
CUDA graph and replayed, which removes the per-kernel launch cost.

State and derived fields stay on the device: the tensors this class hands out are
zero-copy views of Warp's arrays (`wp.to_torch`), so a write through `qpos`,
`qvel` or `ctrl` is the state the next `step` starts from, as on the MuJoCo backend.
Warp's physics runs in float32, so these tensors are float32 (the MuJoCo backend's
are float64); trajectories follow the float64 engine closely but not bit for bit.

Differences from the MuJoCo CPU backend a user may notice:
- the engine does not reset a world whose state blows up; `step` reports worlds
  with a non-finite or huge (> 1e10) position or velocity as diverged, and their
  state stays undefined until they are reset, as the protocol says;
- `model_field` makes a field per-world by giving its leading (batch) dimension
  N rows, which is how mujoco_warp batches model parameters;
- `render` ray-traces the frames of every world in one batch with mujoco_warp's
  renderer, on the device, with no OpenGL context; its shading differs in detail
  from `mujoco.Renderer`'s, so frames of the two backends are alike, not equal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import mujoco
import numpy as np
import torch

try:
    import mujoco_warp as mjw
    import warp as wp
except ImportError as err:
    raise ImportError(
        "the warp backend needs mujoco_warp: pip install -e '.[warp]' (it pairs "
        f"mujoco-warp with mujoco {mujoco.__version__})"
    ) from err

from sim.mujoco_sim import MjModelSim

# the fields `mjw.set_const` derives from masses, inertias and sizes
_CONST_FIELDS = (
    *("body_subtreemass", "dof_invweight0", "body_invweight0", "tendon_invweight0"),
    *("actuator_acc0", "tendon_length0", "geom_aabb", "geom_rbound"),
    *("cam_pos0", "cam_poscom0", "cam_mat0", "light_pos0", "light_poscom0", "light_dir0"),
)
MAXVAL = 1e10  # |qpos| or |qvel| beyond this counts as diverged (MuJoCo's mjMAXVAL)


class WarpSim(MjModelSim):
    """N worlds of one MjModel on a Warp device.

    Args:
        model: the compiled host model.
        num_worlds: N.
        substeps: physics steps per `step` call.
        nthread: unused (Warp schedules its CPU kernels itself); kept for a common signature.
        derived: Data fields to bind now (`data(name)` binds others on first use);
            bound fields are recomputed at the new state after every `step`.
        device: Warp device, "cpu" or "cuda[:k]".
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        num_worlds: int,
        *,
        substeps: int = 1,
        nthread: int = 0,
        derived: Sequence[str] = (),
        device: str = "cpu",
    ):
        super().__init__(model, num_worlds, substeps)
        del nthread
        if wp.config.log_level == wp.LOG_INFO:  # Warp's default logs every kernel load
            wp.config.log_level = wp.LOG_WARNING
        wp.init()
        self.device = wp.get_device(device)
        host = mujoco.MjData(model)
        mujoco.mj_forward(model, host)
        with wp.ScopedDevice(self.device):
            self._m = mjw.put_model(model)
            self._d = mjw.put_data(model, host, nworld=num_worlds)
        self._host_data = host  # the shapes of the Data fields in MuJoCo's layout
        self.time = wp.to_torch(self._d.time)
        self.qpos = wp.to_torch(self._d.qpos)
        self.qvel = wp.to_torch(self._d.qvel)
        self.ctrl = wp.to_torch(self._d.ctrl)
        self._derived: dict[str, torch.Tensor] = {}
        self._model_fields: dict[str, torch.Tensor] = {}
        self._contexts: dict[tuple[int, int, int], tuple] = {}  # render context, frames
        self._graph = None  # CUDA graph of one `step`, captured on first use
        self._invweight_ratio: torch.Tensor | None = None  # see `_body_invweight_ratio`
        self._reset_mask = wp.zeros(num_worlds, dtype=bool, device=self.device)
        body = np.asarray(model.geom_bodyid)
        root_mocap = np.asarray(model.body_mocapid)[np.asarray(model.body_rootid)]
        welded = (np.asarray(model.body_weldid)[body] == 0) & (root_mocap[body] == -1)
        torch_device = self.qpos.device
        self._static = torch.from_numpy(np.flatnonzero(welded)).to(torch_device)
        self._static_body = torch.from_numpy(body[welded]).to(torch_device)
        for name in derived:
            self.data(name)

    # ------------------------------------------------------------------ state
    def data(self, name: str) -> torch.Tensor:
        """A derived Data field of every world, `[N, ...]` in the MuJoCo backend's
        shape (e.g. `xmat` `[N, nbody, 9]`), current after `step`."""
        if name not in self._derived:
            array = getattr(self._d, name, None)
            if array is None or not hasattr(self._host_data, name):
                raise ValueError(f"unknown Data field {name!r}")
            shape = np.shape(getattr(self._host_data, name))
            self._derived[name] = wp.to_torch(array).reshape(self.num_worlds, *shape)
            self._graph = None  # the step now also refreshes derived fields
            self.forward()
        return self._derived[name]

    def contact_counts(self) -> torch.Tensor:
        if not self._derived:  # forward is a no-op until a derived field is bound
            self.data("qfrc_constraint")
        n = int(wp.to_torch(self._d.nacon)[0])
        world = wp.to_torch(self._d.contact.worldid)[:n].long()
        return torch.bincount(world, minlength=self.num_worlds)

    def model_field(self, name: str) -> torch.Tensor:
        """Make a Model field per-world and return its live `[N, ...]` tensor.

        Writes take effect at the next `step` or `forward`; fields that `set_const`
        derives from (masses, inertias) need `set_const()`. MjOption fields are
        named as `opt.gravity`.
        """
        if name not in self._model_fields:
            owner, host, attr = self._owner(name)
            spec = {f.name: f.type for f in dataclasses.fields(owner)}.get(attr)
            if spec is None:
                raise ValueError(f"unknown model field {name!r}")
            if getattr(spec, "shape", ("",))[0] != "*":  # mujoco_warp's mark of a batch dim
                raise ValueError(f"model field {name!r} cannot be made per-world on warp")
            shared = getattr(owner, attr)
            batched = wp.empty(
                (self.num_worlds, *shared.shape[1:]), dtype=shared.dtype, device=self.device
            )
            view = wp.to_torch(batched)
            view.copy_(wp.to_torch(shared).expand_as(view))
            setattr(owner, attr, batched)
            self._graph = None  # kernels captured with the shared array must be re-captured
            shape = np.shape(getattr(host, attr))  # the MuJoCo backend's layout
            self._model_fields[name] = view.reshape(self.num_worlds, *shape)
        return self._model_fields[name]

    def _owner(self, name: str):
        """(device object, host object, attribute) of a model field name; MjOption
        fields are named `opt.<field>`."""
        if name.startswith("opt."):
            return self._m.opt, self.model.opt, name[4:]
        return self._m, self.model, name

    def set_const(self, env_ids: torch.Tensor | None = None) -> None:
        """Recompute derived model constants (of every world) after writing
        per-world fields. The constants become per-world first: shared, they would
        hold one world's values for all (the constraint solver's `dof_invweight0`
        would then follow one world's masses)."""
        del env_ids  # recomputing the others leaves them as they were
        for name in _CONST_FIELDS:
            if getattr(self._m, name).size:
                self.model_field(name)
        with wp.ScopedDevice(self.device):
            mjw.set_const(self._m, self._d)
            if self._invweight_ratio is None:
                self._invweight_ratio = self._body_invweight_ratio()
        self.model_field("body_invweight0").mul_(self._invweight_ratio)

    def _body_invweight_ratio(self) -> torch.Tensor:
        """MuJoCo's `body_invweight0` over what `mjw.set_const` derives, at the nominal
        model, `[nbody, 2]`. The two differ for bodies that cannot move along (or turn
        about) every axis, such as a ball on two slide joints: MuJoCo 3.17 gives it
        (1/m, 0), mujoco_warp 3.17 (2/(3m), 2/(3m)). The factor depends on which axes a
        body can move along, not on masses, so scaling every world's recomputed value
        by it keeps contacts exactly as soft as the MuJoCo backend makes them."""
        host = mujoco.MjData(self.model)
        nominal = mjw.put_model(self.model)
        mjw.set_const(nominal, mjw.put_data(self.model, host, nworld=1))
        derived = wp.to_torch(nominal.body_invweight0).reshape(-1, 2).double().cpu()
        mujoco_value = torch.as_tensor(self.model.body_invweight0, dtype=torch.float64)
        ratio = torch.where(derived > 0, mujoco_value.reshape(-1, 2) / derived, 1.0)
        return ratio.to(self.qpos)

    def forward(self, env_ids: torch.Tensor | None = None, *, acceleration: bool = False) -> None:
        """Recompute position- and velocity-dependent fields (of every world) at the
        current state; a no-op while no derived field is bound. With `acceleration`,
        all of `mj_forward` for every world, then the other worlds' sensors put back
        (theirs are the last step's)."""
        if not self._derived:
            return
        if not acceleration:
            with wp.ScopedDevice(self.device):
                self._kinematics()
        else:
            sensors = wp.to_torch(self._d.sensordata)
            keep = torch.zeros(self.num_worlds, dtype=torch.bool, device=sensors.device)
            if env_ids is not None:  # every world but these
                keep.fill_(True)
                keep[torch.as_tensor(env_ids, device=keep.device).long()] = False
            saved = sensors[keep].clone()
            with wp.ScopedDevice(self.device):
                mjw.forward(self._m, self._d)
            sensors[keep] = saved
        self._static_geoms()

    def _kinematics(self) -> None:
        """Position- and velocity-dependent fields and sensors at the current state, as
        MuJoCo's mj_step1 computes them (acceleration sensors, such as touch, keep the
        values of the last physics step there too)."""
        mjw.fwd_position(self._m, self._d)
        mjw.sensor_pos(self._m, self._d)
        mjw.fwd_velocity(self._m, self._d)
        mjw.sensor_vel(self._m, self._d)

    def _static_geoms(self) -> None:
        """Frames of geoms welded to the world from per-world `geom_pos` / `geom_quat`.

        mujoco_warp computes these frames once, in `put_data`, from the shared model,
        and its kinematics skips them; MuJoCo recomputes them in every kinematics pass.
        """
        if not self._static.numel() or not {"geom_pos", "geom_quat"} & self._model_fields.keys():
            return
        g, b = self._static, self._static_body
        xpos = wp.to_torch(self._d.xpos)[:, b]
        xmat = wp.to_torch(self._d.xmat).reshape(self.num_worlds, -1, 3, 3)[:, b]
        if "geom_pos" in self._model_fields:
            local = self._model_fields["geom_pos"][:, g]
            wp.to_torch(self._d.geom_xpos)[:, g] = xpos + (xmat @ local.unsqueeze(-1)).squeeze(-1)
        if "geom_quat" in self._model_fields:
            rot = _quat_to_mat(self._model_fields["geom_quat"][:, g])
            wp.to_torch(self._d.geom_xmat).reshape(self.num_worlds, -1, 3, 3)[:, g] = xmat @ rot

    def _physics_step(self) -> None:
        for _ in range(self.substeps):
            mjw.step(self._m, self._d)
        if self._derived:  # derived fields at the new state, as the MuJoCo backend has them
            self._kinematics()

    def step(self) -> torch.Tensor:
        with wp.ScopedDevice(self.device):
            if self.device.is_cuda:
                if self._graph is None:
                    with wp.ScopedCapture() as capture:
                        self._physics_step()
                    self._graph = capture.graph
                wp.capture_launch(self._graph)
            else:
                self._physics_step()
        if self._derived:
            self._static_geoms()
        state = torch.cat((self.qpos, self.qvel), 1)
        return ~(state.abs() <= MAXVAL).all(1)  # NaN fails the comparison too

    def settle(self, env_ids: torch.Tensor, nstep: int) -> None:
        """Steps every world (mujoco_warp steps all at once) and puts the others'
        state back: what their next step reads and their sensors."""
        keep = torch.ones(self.num_worlds, dtype=torch.bool, device=self.qpos.device)
        keep[torch.as_tensor(env_ids, device=keep.device).long()] = False
        fields = [wp.to_torch(getattr(self._d, name)) for name in _SETTLE_KEEPS]
        saved = [field[keep].clone() for field in fields]
        with wp.ScopedDevice(self.device):
            for _ in range(nstep):
                mjw.step(self._m, self._d)
        for field, value in zip(fields, saved, strict=True):
            field[keep] = value
        self.forward()

    def reset_worlds(self, env_ids: torch.Tensor | None = None) -> None:
        mask = wp.to_torch(self._reset_mask)
        if env_ids is None:
            mask.fill_(True)
        else:
            mask.zero_()
            mask[torch.as_tensor(env_ids, device=mask.device).long()] = True
        with wp.ScopedDevice(self.device):
            mjw.reset_data(self._m, self._d, reset=self._reset_mask)

    # -------------------------------------------------------------- rendering
    def render(
        self,
        env_ids: Sequence[int] | torch.Tensor | None = None,
        *,
        width: int = 64,
        height: int = 64,
        camera: int | str = 0,
        scene_hook: Callable | None = None,
    ) -> torch.Tensor:
        """RGB frames, uint8 `[n, height, width, 3]`, ray-traced for every world in one
        batch by mujoco_warp's renderer (on the sim's device), then `env_ids` picked.

        Frames show each world's own state and per-world model fields (a target's
        position or size); lights cast shadows and the model's skybox fills the
        background, as in `mujoco.Renderer`'s frames, though shading differs in
        detail (the rails of the cart-pole are too thin to be hit at 64 x 64).
        """
        if scene_hook is not None:
            raise ValueError(
                "scene_hook edits a host MjModel before rasterising, which the warp "
                "backend's batched ray tracer does not use"
            )
        cam = self.object_id("camera", camera) if isinstance(camera, str) else int(camera)
        if not 0 <= cam < self.model.ncam:
            raise ValueError(f"camera {camera!r} not in the model's {self.model.ncam} cameras")
        key = (width, height, cam)
        if key not in self._contexts:
            skybox = bool(np.any(self.model.tex_type == mujoco.mjtTexture.mjTEXTURE_SKYBOX))
            with wp.ScopedDevice(self.device):
                context = mjw.create_render_context(
                    self.model,
                    nworld=self.num_worlds,
                    cam_res=(width, height),
                    render_rgb=True,
                    render_depth=False,
                    cam_active=[cam],
                    use_shadows=True,
                    render_skybox=skybox,
                )
                rgb = wp.zeros((self.num_worlds, height, width), dtype=wp.vec3)
            self._contexts[key] = (context, rgb)
        context, rgb = self._contexts[key]
        with wp.ScopedDevice(self.device):
            mjw.kinematics(self._m, self._d)  # body, geom and camera frames of the state
            mjw.com_pos(self._m, self._d)  # subtree centres of mass: trackcom cameras, lights
            mjw.camlight(self._m, self._d)
        self._static_geoms()
        with wp.ScopedDevice(self.device):
            mjw.refit_bvh(self._m, self._d, context)
            mjw.render(self._m, self._d, context)
            mjw.get_rgb(context, 0, rgb)
        frames = (wp.to_torch(rgb).clamp(0, 1) * 255).round().to(torch.uint8)
        if env_ids is None:
            return frames
        return frames[torch.as_tensor(env_ids, device=frames.device).long()]

    def close(self) -> None:
        self._contexts.clear()


# Data fields of a world that `settle` restores when it steps the others: its state
# (time, qpos, qvel, act, the solver's warm start) and its sensors (touch sensors keep
# the last step's contact forces)
_SETTLE_KEEPS = ("time", "qpos", "qvel", "act", "qacc_warmstart", "sensordata")


def _quat_to_mat(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `[..., 3, 3]` of unit quaternions (w, x, y, z) `[..., 4]`."""
    w, x, y, z = q.unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(r, -1) for r in rows], -2)
