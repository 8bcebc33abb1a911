"""MuJoCo CPU backend: N worlds of one MJCF model on a persistent thread pool.

Built on `mujoco.batch.Batch` (MuJoCo >= 3.17): every world is one row of
mjSTATE_INTEGRATION (time, qpos, qvel, act, warm-start, ctrl, ...), stepped on a
thread pool that lives as long as the sim, with results bit-identical to a loop
of `mj_step` over one MjData per world. Because the warm-start is part of the
row, a world here follows exactly the trajectory of a single dm_control
`Physics` from the same state under the same controls.

State and derived fields are numpy arrays owned by the batch; the tensors this
class hands out are zero-copy views of them (`torch.from_numpy`). Derived fields
a task asks for (`data("xmat")`, `data("geom_xpos")`, sensors) are computed at
the *new* state after each step, as dm_control's legacy step does with its
trailing `mj_step1`; a task that asks for none pays for no extra kinematics pass.

Rendering uses `mujoco.Renderer`, which needs an offscreen OpenGL context:
`MUJOCO_GL=egl` (Debian packages `libegl1 libegl-mesa0 libgl1-mesa-dri`, a
software rasterizer is enough) or `MUJOCO_GL=osmesa` (`libosmesa6`).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import os
import warnings
import weakref
from collections.abc import Callable, Sequence

import mujoco
import numpy as np
import torch

try:
    from mujoco import batch as mjbatch
except ImportError as err:  # before 3.17, e.g. in Isaac Lab's environment (newton pins 3.12)
    raise ImportError(
        f"the mujoco backend needs mujoco >= 3.17 (mujoco.batch); this environment has "
        f"{mujoco.__version__}: run MuJoCo tasks from the project's main environment"
    ) from err

from sim.base import BatchedSim

# Engine warnings that mean the engine found a non-finite or huge value and reset
# the world to its default state in the middle of a step.
_DIVERGENCE_WARNINGS = [
    int(mujoco.mjtWarning.mjWARN_BADQPOS),
    int(mujoco.mjtWarning.mjWARN_BADQVEL),
    int(mujoco.mjtWarning.mjWARN_BADQACC),
]
_STAGE_VEL = int(mujoco.mjtStage.mjSTAGE_VEL)
_STAGE_ACC = int(mujoco.mjtStage.mjSTAGE_ACC)
_STAGE_NONE = int(mujoco.mjtStage.mjSTAGE_NONE)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """Zero-copy tensor over a batch-owned array (read-only outputs included)."""
    view = array.view()
    view.flags.writeable = True  # the batch refreshes outputs; callers only read them
    return torch.from_numpy(view)


def load_model(xml: str | os.PathLike | mujoco.MjModel) -> mujoco.MjModel:
    """Compile an MJCF file, or an MJCF string, into an MjModel (a compiled model is
    returned as it is)."""
    if isinstance(xml, mujoco.MjModel):
        return xml
    text = str(xml)
    if text.lstrip().startswith("<"):
        return mujoco.MjModel.from_xml_string(text)
    return mujoco.MjModel.from_xml_path(text)


class MjModelSim(BatchedSim):
    """What backends built from one host MjModel (`model`) share: object names and
    actuator control limits."""

    model: mujoco.MjModel

    def __init__(self, model: mujoco.MjModel, num_worlds: int, substeps: int):
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be >= 1, got {num_worlds}")
        if substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
        self.model = model
        self.num_worlds = num_worlds
        self.substeps = substeps
        self.nq, self.nv, self.nu = model.nq, model.nv, model.nu
        self.timestep = float(model.opt.timestep)

    @property
    def ctrl_range(self) -> torch.Tensor:
        rng = np.array(self.model.actuator_ctrlrange, dtype=np.float64)
        unlimited = ~np.asarray(self.model.actuator_ctrllimited, dtype=bool)
        rng[unlimited] = (-np.inf, np.inf)
        return torch.from_numpy(rng)

    def object_id(self, kind: str, name: str) -> int:
        """Index of a named model object; `kind` as in mujoco.mjtObj (body, geom, joint)."""
        obj = getattr(mujoco.mjtObj, f"mjOBJ_{kind.upper()}", None)
        if obj is None:
            raise ValueError(f"unknown object kind {kind!r}")
        index = mujoco.mj_name2id(self.model, obj, name)
        if index < 0:
            raise ValueError(f"the model has no {kind} named {name!r}")
        return index

    def set_state(
        self,
        qpos: torch.Tensor,
        qvel: torch.Tensor,
        env_ids: torch.Tensor | None = None,
        *,
        forward: bool = True,
    ) -> None:
        """Write `qpos` `[n, nq]` and `qvel` `[n, nv]` into the given worlds; `forward`
        refreshes their derived fields, acceleration-stage sensors included, as a
        Control Suite reset does (tasks that write the state of a whole reset and
        refresh once afterwards pass False)."""
        ids = slice(None) if env_ids is None else env_ids.to(self.qpos.device)
        self.qpos[ids] = qpos.to(self.qpos)
        self.qvel[ids] = qvel.to(self.qvel)
        if forward:
            self.forward(env_ids, acceleration=True)


class MujocoSim(MjModelSim):
    """N worlds of one MjModel, stepped together on `nthread` threads.

    Args:
        model: the compiled model, shared by every world until a field is made
            per-world with `model_field`.
        num_worlds: N.
        substeps: physics steps per `step` call (dm_control's `n_sub_steps`).
        nthread: worker threads; 0 uses every CPU.
        derived: MjData fields to bind now (`data(name)` binds others on first use);
            a bound field is copied out of the engine after every call.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        num_worlds: int,
        *,
        substeps: int = 1,
        nthread: int = 0,
        derived: Sequence[str] = (),
    ):
        super().__init__(model, num_worlds, substeps)
        self._batch = mjbatch.Batch(model, num_worlds, nthread=nthread)
        self._diverged = np.zeros(num_worlds, dtype=bool)  # found outside `step`
        self._batch.reset(stage=_STAGE_VEL)
        self.time = torch.from_numpy(self._batch.bind("time"))
        self.qpos = torch.from_numpy(self._batch.bind("qpos"))
        self.qvel = torch.from_numpy(self._batch.bind("qvel"))
        self.ctrl = torch.from_numpy(self._batch.bind("ctrl"))
        self._derived = {name: _tensor(self._batch.bind(name)) for name in derived}
        # qpos and qvel are adjacent in a state row: one view checks both for NaN/inf
        start = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_TIME)  # row: time, qpos, qvel
        self._qpos_qvel = self._batch.state[:, start : start + self.nq + self.nv]
        self._model_fields: dict[str, torch.Tensor] = {}
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._render_model: mujoco.MjModel | None = None
        self._render_data: mujoco.MjData | None = None
        self.nthread = self._batch.nthread
        self._acc_sensors = torch.from_numpy(_acceleration_sensor_entries(model))

    # ------------------------------------------------------------------ state
    def data(self, name: str) -> torch.Tensor:
        """A derived MjData field of every world, `[N, ...]`, current after `step`.

        Only bound fields are computed at the new state after each step (an extra
        position and velocity stage, 20-70% of a step's cost on small models), so a
        task that needs no body frames pays nothing for them.
        """
        if name not in self._derived:
            self._derived[name] = _tensor(self._batch.bind(name))
            # fill it now (afterwards every call refreshes it); new sensor readings
            # need the acceleration stage for the accelerometers, forces and touch
            self.forward(acceleration=name == "sensordata")
        return self._derived[name]

    def contact_counts(self) -> torch.Tensor:
        return self.data("ncon").reshape(self.num_worlds).long()

    def model_field(self, name: str) -> torch.Tensor:
        """Make an MjModel field per-world and return its live `[N, ...]` tensor.

        Writes take effect at the next `step` or `forward` (e.g. `geom_pos`,
        `body_mass`, `dof_damping`, `actuator_gear`; MjOption fields as
        `opt.gravity`). Fields that `mj_setConst` derives from need `set_const()`.
        """
        if name not in self._model_fields:
            self._model_fields[name] = torch.from_numpy(self._batch.expand(name))
        return self._model_fields[name]

    def set_const(self, env_ids: torch.Tensor | None = None) -> None:
        """Recompute derived model constants after writing per-world fields."""
        self._batch.set_const(_ids(env_ids))

    def forward(self, env_ids: torch.Tensor | None = None, *, acceleration: bool = False) -> None:
        """Recompute position- and velocity-dependent fields at the current state (and
        with `acceleration`, the acceleration stage: all of `mj_forward`).

        A no-op while no derived field is bound. A state the engine rejects here
        (huge or non-finite) is reset by it and reported as diverged by the next `step`.
        """
        if not self._derived:
            return
        ids = _ids(env_ids)
        if acceleration:
            self._guarded(lambda: self._batch.forward(ids, stage=_STAGE_ACC))
            return
        # the batch's threads leave another world's acceleration-stage sensors in the
        # outputs of a call that stops before that stage: put each world's own back
        sensors, keep = self._derived.get("sensordata"), self._acc_sensors
        saved = sensors[:, keep].clone() if sensors is not None and len(keep) else None
        self._guarded(lambda: self._batch.forward(ids, stage=_STAGE_VEL))
        if saved is not None:
            sensors[:, keep] = saved

    def step(self) -> torch.Tensor:
        stage = _STAGE_VEL if self._derived else _STAGE_NONE
        self._guarded(lambda: self._batch.step(nstep=self.substeps, stage=stage))
        diverged = self._diverged | ~np.isfinite(self._qpos_qvel).all(axis=1)
        self._diverged = np.zeros(self.num_worlds, dtype=bool)
        return torch.from_numpy(diverged)

    def settle(self, env_ids: torch.Tensor, nstep: int) -> None:
        stage = _STAGE_VEL if self._derived else _STAGE_NONE
        self._guarded(lambda: self._batch.step(_ids(env_ids), nstep=nstep, stage=stage))

    def _guarded(self, call) -> None:
        """Run a batch call and record the worlds the engine reset or failed in it."""
        before = self._batch.warning[:, _DIVERGENCE_WARNINGS, 1].sum(axis=1)
        try:
            call()
        except mjbatch.SimulationError as err:  # engine error in some worlds only
            self._diverged[err.ids] = True
            logging.getLogger(__name__).warning("MuJoCo error: %s", err)
        after = self._batch.warning[:, _DIVERGENCE_WARNINGS, 1].sum(axis=1)
        self._diverged |= after != before

    def reset_worlds(self, env_ids: torch.Tensor | None = None) -> None:
        self._batch.reset(_ids(env_ids), stage=_STAGE_NONE)

    # -------------------------------------------------------------- rendering
    def render(
        self,
        env_ids: Sequence[int] | torch.Tensor | None = None,
        *,
        width: int = 64,
        height: int = 64,
        camera: int | str = 0,
        scene_hook: Callable[[mujoco.MjModel, mujoco.MjData, int], None] | None = None,
    ) -> torch.Tensor:
        """RGB frames, uint8 `[n, height, width, 3]`, one MjData at a time.

        `scene_hook(model, data, world)` may edit the render copy of the model
        (colors, decorative geoms) before each frame.
        """
        ids = range(self.num_worlds) if env_ids is None else [int(i) for i in env_ids]
        renderer = self._renderer(width, height)
        model, data = self._render_model, self._render_data
        frames = np.empty((len(ids), height, width, 3), dtype=np.uint8)
        for k, world in enumerate(ids):
            if self._model_fields:
                self._batch.get_model(world, model)
            self._batch.get_data(world, data)
            mujoco.mj_forward(model, data)
            if scene_hook is not None:
                scene_hook(model, data, world)
            renderer.update_scene(data, camera=camera)
            renderer.render(out=frames[k])
        return torch.from_numpy(frames)

    def _renderer(self, width: int, height: int) -> mujoco.Renderer:
        if self._render_model is None:
            self._render_model = copy.copy(self.model)
            self._render_data = mujoco.MjData(self._render_model)
        key = (width, height)
        if key not in self._renderers:
            # The shadow map is rendered every frame; the model's (2048 texels a side)
            # is sized for large images and dominates the cost of small frames on a CPU
            # rasterizer. 4 texels per pixel a side looks the same there (mean
            # difference 0.05/255 at 64x64) and renders 64x64 frames 2-3x faster.
            quality = self._render_model.vis.quality
            quality.shadowsize = min(int(self.model.vis.quality.shadowsize), 4 * max(key))
            # the offscreen buffer (the model's 640 x 480 unless it says otherwise) must
            # hold the frame: a video pane may be larger than any camera frame
            buffer = self._render_model.vis.global_
            buffer.offwidth = max(buffer.offwidth, width)
            buffer.offheight = max(buffer.offheight, height)
            try:
                self._renderers[key] = mujoco.Renderer(self._render_model, height, width)
            except Exception as err:  # GL context creation fails in many distinct ways
                raise RuntimeError(
                    f"offscreen rendering is unavailable (MUJOCO_GL="
                    f"{os.environ.get('MUJOCO_GL', 'unset')}): {err}. Install EGL "
                    "(apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri) or OSMesa "
                    "(libosmesa6 with MUJOCO_GL=osmesa)."
                ) from err
        if not _RENDERING:
            atexit.unregister(_close_renderers)
            atexit.register(_close_renderers)
        _RENDERING.add(self)
        return self._renderers[key]

    def close(self) -> None:
        for renderer in self._renderers.values():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                renderer.close()
        self._renderers.clear()

    def __del__(self):
        with contextlib.suppress(Exception):  # best effort during garbage collection
            self.close()


# GL contexts must be released before interpreter shutdown tears EGL down. mujoco's
# GL module registers its own exit hook when the first context is made; ours is
# registered after it (see `_renderer`), so it runs first.
_RENDERING: weakref.WeakSet[MujocoSim] = weakref.WeakSet()


def _close_renderers() -> None:
    for sim in list(_RENDERING):
        with contextlib.suppress(Exception):
            sim.close()


def _acceleration_sensor_entries(model: mujoco.MjModel) -> np.ndarray:
    """sensordata indices of the sensors computed in the acceleration stage."""
    acc = int(mujoco.mjtStage.mjSTAGE_ACC)
    return np.array(
        [
            int(model.sensor_adr[k]) + i
            for k in range(model.nsensor)
            if int(model.sensor_needstage[k]) == acc
            for i in range(int(model.sensor_dim[k]))
        ],
        dtype=np.int64,
    )


def _ids(env_ids: torch.Tensor | Sequence[int] | None) -> np.ndarray | None:
    """World ids as the batch takes them: sorted and unique (the calls that take ids
    act on each world alone, so their order does not matter)."""
    if env_ids is None:
        return None
    if isinstance(env_ids, torch.Tensor):
        env_ids = env_ids.detach().cpu().numpy()
    return np.unique(np.asarray(env_ids, dtype=np.int64))
