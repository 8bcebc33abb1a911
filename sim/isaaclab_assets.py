"""Local assets for Isaac Lab tasks, so that they run offline (kit-less, Newton).

Isaac Lab's task configs name their USD files on a Nucleus server or NVIDIA's
asset host (`ISAACLAB_NUCLEUS_DIR`). Without network access, a task runs when
each asset it spawns is a local file. What is known here:

- the cart-pole tasks (`Isaac-Cartpole-Direct`, `Isaac-Cartpole`): the `newton`
  package ships the same cart-pole (`examples/assets/cartpole_single_pendulum.usda`,
  flattened from Isaac Lab's `Robots/Classic/Cartpole/cartpole.usd`, visuals
  removed). Its `defaultPrim` is spelt `cartPole` while the prim is `cartpole`, so
  a corrected copy is written next to the other cached assets; the remote
  ground plane and dome light are dropped (the cart-pole touches neither).

Other tasks run unchanged where their assets resolve: with Isaac Sim installed
(its local asset root), with `ISAACLAB_NUCLEUS_DIR` pointing at a Nucleus server
or a mirror on disk, or with `scene.<asset>.spawn.usd_path` set by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CARTPOLE_TASKS = ("Isaac-Cartpole-Direct", "Isaac-Cartpole")


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "wam-sandbox" / "isaaclab-assets"


def cartpole_usd() -> Path:
    """A local cart-pole USD whose default prim is the articulation Isaac Lab spawns."""
    import newton

    src = Path(newton.__file__).parent / "examples" / "assets" / "cartpole_single_pendulum.usda"
    if not src.exists():
        raise FileNotFoundError(f"the newton package has no cart-pole asset at {src}")
    text = src.read_text()
    fixed = text.replace('defaultPrim = "cartPole"', 'defaultPrim = "cartpole"')
    dst = cache_dir() / "cartpole.usda"
    if not dst.exists() or dst.read_text() != fixed:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(fixed)
        os.replace(tmp, dst)  # atomic: concurrent builders never see half a file
    return dst


def use_local_assets(task: str, task_cfg: Any) -> bool:
    """Point `task_cfg` at local assets where this module knows them; True if it did."""
    if task not in CARTPOLE_TASKS:
        return False
    # the direct task names the robot `cartpole`, the manager-based one `robot`
    robots = [name for name in ("cartpole", "robot") if hasattr(task_cfg.scene, name)]
    if not robots:
        raise ValueError(f"{task}: its scene has no cart-pole articulation to point at local files")
    getattr(task_cfg.scene, robots[0]).spawn.usd_path = str(cartpole_usd())
    for remote in ("ground", "light", "dome_light"):
        if getattr(task_cfg.scene, remote, None) is not None:
            setattr(task_cfg.scene, remote, None)
    return True
