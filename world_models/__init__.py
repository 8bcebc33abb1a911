"""World models learned from recorded data and served as simulators (`ImaginedEnv`):
the model protocol and checkpoints (`base`), the model kinds (`models`, each registering
itself), their training (`train`), metrics and fidelity evaluation (`evaluate`)."""

import world_models.models  # noqa: F401  (registers every model kind)
from world_models.base import KINDS, WorldModel, load

__all__ = ["KINDS", "WorldModel", "load"]
