"""Tasks over the `sim` protocol, the batched env base class, registry and adapters.

env = envs.make("cartpole_swingup", num_envs=1024, backend="mujoco", seed=0)
obs = env.reset()
obs, reward, terminated, truncated, info = env.step(action)
"""

from envs.base import BatchedEnv, EnvCfg
from envs.gym_adapter import register_gym_envs
from envs.registry import list_tasks, make, make_cfg, make_from_args, register, spec
from envs.tasks import register_all

register_all()
register_gym_envs()

__all__ = [
    "BatchedEnv",
    "EnvCfg",
    "list_tasks",
    "make",
    "make_cfg",
    "make_from_args",
    "register",
    "spec",
]
