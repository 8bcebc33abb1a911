"""The task suite: every module in this folder defines tasks and registers them (with
their config, Gymnasium id and scripted expert) when it is imported; importing this
package imports them all, so a new task is one new module here."""

import importlib
import pkgutil

import sim  # noqa: F401  (before any task module imports mujoco: it picks headless GL)


def _import_task_modules() -> None:
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_import_task_modules()
