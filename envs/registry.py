"""Task registry: `make(name, num_envs=..., backend=..., seed=..., **cfg)`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from envs.base import BatchedEnv, EnvCfg
from sim import BACKENDS
from sim.randomization import RandomizationCfg


@dataclass(frozen=True)
class TaskSpec:
    name: str
    env_cls: type[BatchedEnv]
    cfg_cls: type[EnvCfg]
    defaults: dict[str, Any] = field(default_factory=dict)  # cfg values that define the task
    gym_id: str | None = None  # Gymnasium id, registered with the task
    expert: type | None = None  # scripted expert (`envs.experts.Expert`) or None
    twins: dict[str, str] = field(default_factory=dict)
    """backend -> the same task in that engine's own registry (`isaaclab`: an Isaac
    Lab task id), for evaluating across engines (`engine_task`)."""


_TASKS: dict[str, TaskSpec] = {}


def register(
    name: str,
    env_cls: type[BatchedEnv],
    cfg_cls: type[EnvCfg],
    gym_id: str | None = None,
    expert: type | None = None,
    twins: dict[str, str] | None = None,
    **defaults: Any,
) -> None:
    """Add task `name`: `env_cls` built from `cfg_cls` with `defaults` (the values that
    define the task), its Gymnasium id, its scripted expert class if it has one, and
    its twins in other engines (`{"isaaclab": "Isaac-Cartpole-Direct"}`). A task
    module calls this for its tasks when it is imported (`envs.tasks`)."""
    if name in _TASKS:
        raise ValueError(f"task {name!r} is already registered")
    _TASKS[name] = TaskSpec(name, env_cls, cfg_cls, dict(defaults), gym_id, expert, twins or {})
    if gym_id is not None and gym_id not in gym.registry:  # loaded on first gym.make
        gym.register(
            id=gym_id,
            entry_point="envs.gym_adapter:GymEnv",
            vector_entry_point="envs.gym_adapter:GymVectorEnv",
            kwargs={"task": name},
        )


def list_tasks() -> list[str]:
    """Names accepted by `make`, sorted."""
    return sorted(_TASKS)


def spec(name: str) -> TaskSpec:
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(list_tasks())}")
    return _TASKS[name]


def make_cfg(name: str, **overrides: Any) -> EnvCfg:
    """The task's config with `overrides` applied (unknown fields are an error)."""
    task = spec(name)
    valid = {f.name for f in dataclasses.fields(task.cfg_cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(
            f"{name}: unknown config field(s) {', '.join(unknown)}; valid fields: "
            f"{', '.join(sorted(valid))}"
        )
    return task.cfg_cls(**{**task.defaults, **overrides})


def engine_task(name: str, backend: str) -> str:
    """Task `name` as `backend` knows it: itself where it runs there, else its twin in
    that engine (a task of ours for an Isaac Lab id on mujoco or warp, an Isaac Lab id
    for a task of ours on isaaclab); a ValueError where it has none."""
    ours = name in _TASKS
    if backend == "isaaclab" and ours:
        twin = _TASKS[name].twins.get("isaaclab")
        if twin is None:
            twinned = [s.name for s in _TASKS.values() if "isaaclab" in s.twins]
            raise ValueError(
                f"task {name!r} has no Isaac Lab twin (tasks with one: {', '.join(twinned)})"
            )
        return twin
    if backend != "isaaclab" and not ours:
        for task in _TASKS.values():
            if task.twins.get("isaaclab") == name:
                return task.name
        raise ValueError(f"{name!r} has no twin among the {backend} tasks of wam-sandbox")
    return name


def _config_fields(name: str, backend: str) -> set[str]:
    """The config fields the env of task `name` takes on `backend`."""
    if backend == "isaaclab":
        from envs.isaaclab import IsaacLabCfg

        return {f.name for f in dataclasses.fields(IsaacLabCfg)}
    task_spec = spec(name)
    return {f.name for f in dataclasses.fields(task_spec.cfg_cls)} - set(task_spec.defaults)


def make(
    name: str, num_envs: int = 1, backend: str = "mujoco", seed: int = 0, **cfg: Any
) -> BatchedEnv:
    """Build `num_envs` parallel copies of task `name` on `backend`. With backend
    "isaaclab", `name` is an Isaac Lab task id (`envs.isaaclab`)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if backend == "isaaclab":
        if name in _TASKS:
            raise ValueError(
                f"{name!r} is a wam-sandbox task (backend mujoco); backend 'isaaclab' runs "
                "Isaac Lab's own tasks, such as Isaac-Cartpole-Direct"
            )
        from envs.isaaclab import make as make_isaaclab

        return make_isaaclab(name, num_envs, seed, **cfg)
    task = spec(name)
    env = task.env_cls(make_cfg(name, num_envs=num_envs, backend=backend, seed=seed, **cfg))
    env.name = name  # used in error messages
    return env


def make_from_args(
    args: dict[str, Any], num_envs: int, task: str | None = None, **overrides: Any
) -> BatchedEnv:
    """The env a dataset was recorded with, rebuilt from its `env_args` (`num_envs`
    copies; the inverse of `agents.jobs.collect.env_args`). `task` swaps in another task:
    the recorded settings it shares carry over (episode length, randomization,
    camera), its own defining values (swing-up, sparse reward, target size) win.
    `overrides` replace config fields; a `backend` of the other engine family (isaaclab
    against mujoco or warp) swaps in the recorded task's twin there (`engine_task`),
    with the recorded settings it shares."""
    name = task or args.get("env_name")
    if name is None:
        raise ValueError("env_args names no task (env_name): pass the task explicitly")
    recorded = args.get("backend", "mujoco")
    backend = overrides.pop("backend", None) or recorded
    if task is None and (backend == "isaaclab") != (recorded == "isaaclab"):
        name = engine_task(name, backend)  # the recorded task's twin in the other engine
    kwargs = {
        k: tuple(v) if isinstance(v, list) else v for k, v in args.get("env_kwargs", {}).items()
    }
    if name != args.get("env_name"):
        valid = _config_fields(name, backend)
        kwargs = {k: v for k, v in kwargs.items() if k in valid}
    if isinstance(kwargs.get("randomization"), dict):
        fields = {
            k: tuple(v) if isinstance(v, list) else v for k, v in kwargs["randomization"].items()
        }
        kwargs["randomization"] = RandomizationCfg(**fields)
    kwargs.update(overrides)
    return make(name, num_envs, backend, **kwargs)
