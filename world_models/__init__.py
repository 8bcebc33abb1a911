"""World models and ImaginedEnv (arrive with the world-model issue)."""

from world_models import ensemble  # noqa: E402, F401  (registers the model kinds)
from world_models.base import load  # noqa: E402

__all__ = ["load"]
