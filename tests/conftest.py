# Importing `sim` first selects headless rendering (MUJOCO_GL=egl) before any test
# module imports mujoco or dm_control.
import sim  # noqa: F401
