"""The model kinds: every module in this folder defines world models (or World Action
Models) that register themselves by subclassing `world_models.base.WorldModel` with a
`kind` and a `settings` dataclass; importing this package imports them all, so a new
kind is one new module here."""

import importlib
import pkgutil


def _import_model_modules() -> None:
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_import_model_modules()
