"""Isaac Lab's `Isaac-Cartpole-Direct` stepped from fixed states on fixed actions:
the reference its MuJoCo twin (`isaac_cartpole`) is held to.

`tests/data/isaac_cartpole_reference.npz` holds it, so that the twin's test runs in
the project's environment, which has no Isaac Lab; `test_isaac_cartpole_twin.py`
(marker `isaac`, in Isaac Lab's environment) checks that Isaac Lab still produces
it. Regenerate it there with
`PYTHONPATH=$PWD $py -m tests.isaaclab.twin_reference` (py: `python -m sim.isaaclab_setup`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import envs

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "isaac_cartpole_reference.npz"
ROWS, STEPS = 8, 150


def record() -> dict[str, np.ndarray]:
    """Isaac Lab's steps from its own reset states (seed 3): rows 0-1 without force,
    rows 2-3 at full force either way (until they fail), the others on uniform random
    forces (seed 0); `alive` marks each row's steps up to and including the one that
    ended its first episode."""
    env = envs.make("Isaac-Cartpole-Direct", num_envs=ROWS, backend="isaaclab", seed=0)
    try:
        env.reset(seed=3)
        qpos, qvel = env.get_physics_state()
        obs0 = env.set_physics_state(qpos, qvel)
        actions = torch.rand(STEPS, ROWS, 1, generator=torch.Generator().manual_seed(0)) * 2 - 1
        actions[:, :2] = 0.0
        actions[:, 2:4] = torch.tensor([1.0, -1.0])[:, None]  # full force: off the rail's 3 m
        obs, rewards, terminated, alive = [], [], [], []
        running = torch.ones(ROWS, dtype=torch.bool)
        for t in range(STEPS):
            o, r, term, trunc, info = env.step(actions[t])
            alive.append(running.clone())
            obs.append(info["final_obs"])
            rewards.append(r)
            terminated.append(term)
            running &= ~(term | trunc)
    finally:
        env.close()
    stack = lambda xs: torch.stack(xs).cpu().numpy()  # noqa: E731
    return {
        "qpos": qpos.numpy(),
        "qvel": qvel.numpy(),
        "obs0": obs0.cpu().numpy(),
        "actions": actions.numpy(),
        "obs": stack(obs),
        "rewards": stack(rewards),
        "terminated": stack(terminated),
        "alive": stack(alive),
    }


if __name__ == "__main__":
    np.savez_compressed(REFERENCE, **record())
    print(f"wrote {REFERENCE}")
