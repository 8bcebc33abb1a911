"""The task suite. Every task registered here gets a Gymnasium id too."""

from envs.registry import register
from envs.tasks.cartpole import CartpoleCfg, CartpoleEnv
from envs.tasks.pendulum import PendulumCfg, PendulumEnv
from envs.tasks.push import PushCfg, PushEnv
from envs.tasks.reacher import ReacherCfg, ReacherEnv


def register_all() -> None:
    for name, gym_id, swing_up, sparse in (
        ("cartpole_balance", "wam/CartpoleBalance-v0", False, False),
        ("cartpole_balance_sparse", "wam/CartpoleBalanceSparse-v0", False, True),
        ("cartpole_swingup", "wam/CartpoleSwingup-v0", True, False),
        ("cartpole_swingup_sparse", "wam/CartpoleSwingupSparse-v0", True, True),
    ):
        register(name, CartpoleEnv, CartpoleCfg, gym_id, swing_up=swing_up, sparse=sparse)
    register("pendulum_swingup", PendulumEnv, PendulumCfg, "wam/PendulumSwingup-v0")
    register("reacher_easy", ReacherEnv, ReacherCfg, "wam/ReacherEasy-v0", target_size=0.05)
    register("reacher_hard", ReacherEnv, ReacherCfg, "wam/ReacherHard-v0", target_size=0.015)
    register("push", PushEnv, PushCfg, "wam/Push-v0", sparse=False)
    register("push_sparse", PushEnv, PushCfg, "wam/PushSparse-v0", sparse=True)
