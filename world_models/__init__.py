"""World models learned from recorded data, served as simulators (`ImaginedEnv`)."""

from world_models import cascaded, ensemble, joint, rssm  # noqa: F401  (registers the model kinds)
from world_models.base import load

__all__ = ["load"]
