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


_TASKS: dict[str, TaskSpec] = {}


def register(
    name: str,
    env_cls: type[BatchedEnv],
    cfg_cls: type[EnvCfg],
    gym_id: str | None = None,
    expert: type | None = None,
    **defaults: Any,
) -> None:
    """Add task `name`: `env_cls` built from `cfg_cls` with `defaults` (the values that
    define the task), its Gymnasium id, and its scripted expert class if it has one.
    A task module calls this for its tasks when it is imported (`envs.tasks`)."""
    if name in _TASKS:
        raise ValueError(f"task {name!r} is already registered")
    _TASKS[name] = TaskSpec(name, env_cls, cfg_cls, dict(defaults), gym_id, expert)
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
    `overrides` replace config fields."""
    name = task or args.get("env_name")
    if name is None:
        raise ValueError("env_args names no task (env_name): pass the task explicitly")
    backend = args.get("backend", "mujoco")
    kwargs = {
        k: tuple(v) if isinstance(v, list) else v for k, v in args.get("env_kwargs", {}).items()
    }
    if backend != "isaaclab" and name != args.get("env_name"):
        task_spec = spec(name)
        valid = {f.name for f in dataclasses.fields(task_spec.cfg_cls)}
        kwargs = {k: v for k, v in kwargs.items() if k in valid and k not in task_spec.defaults}
    if isinstance(kwargs.get("randomization"), dict):
        fields = {
            k: tuple(v) if isinstance(v, list) else v for k, v in kwargs["randomization"].items()
        }
        kwargs["randomization"] = RandomizationCfg(**fields)
    kwargs.update(overrides)
    return make(name, num_envs, backend, **kwargs)
