# Importing `sim` first selects headless rendering (MUJOCO_GL=egl) before any test
# module imports mujoco or dm_control.
import sim  # noqa: F401
from envs.registry import list_tasks, register
from envs.tasks.cartpole import CartpoleCfg, CartpoleEnv


class FallingCartpole(CartpoleEnv):
    """Cart-pole balance that terminates when the pole leans past 25 degrees: a task
    whose episodes end at different steps, for the recorder and loader tests."""

    def _get_dones(self):
        _, time_out = super()._get_dones()
        return self.sim.qpos[:, 1].abs() > 0.44, time_out


if "test_cartpole_falls" not in list_tasks():
    register("test_cartpole_falls", FallingCartpole, CartpoleCfg, episode_length=300)
