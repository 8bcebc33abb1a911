"""Tasks over the `sim` protocol: the batched env base class, the task registry (every
module of `envs.tasks` registers itself), scripted experts, and the Gymnasium and
Stable-Baselines3 adapters.

env = envs.make("cartpole_swingup", num_envs=1024, backend="mujoco", seed=0)
obs = env.reset()
obs, reward, terminated, truncated, info = env.step(action)
"""

import envs.tasks  # noqa: F401  (each task module registers its tasks)
from envs.base import BatchedEnv, EnvCfg
from envs.registry import (
    engine_task,
    list_tasks,
    make,
    make_cfg,
    make_from_args,
    register,
    spec,
)

__all__ = [
    "BatchedEnv",
    "EnvCfg",
    "engine_task",
    "list_tasks",
    "make",
    "make_cfg",
    "make_from_args",
    "register",
    "spec",
]
