"""Per-env episode buffers for a batched env whose episodes end at different steps.

Each env row owns preallocated `[max_steps, ...]` arrays and a write position;
one `record` call stores a whole batch step, and `take` hands out a finished
episode as numpy arrays. Only what changes within an episode is written per step
(observation, action, reward, physics state, and whether a goal task is at its goal): inside
an episode `next_obs[t]` is `obs[t + 1]` and no step but the last is terminal, so
the final observation and the end flags are given once, to `take`. Pixels hold
one frame more than steps: frame t shows observation t, the last one the final state.
"""

from __future__ import annotations

import numpy as np
import torch


class EpisodeRecorder:
    """Buffers of N concurrent episodes of at most `max_steps` agent steps."""

    def __init__(
        self,
        num_envs: int,
        max_steps: int,
        obs_dim: int,
        action_dim: int,
        nq: int,
        nv: int,
        pixel_shape: tuple[int, int, int] | None = None,
    ):
        n, t = num_envs, max_steps
        self.max_steps, self.nq = max_steps, nq
        self.obs = torch.empty(n, t, obs_dim)
        self.actions = torch.empty(n, t, action_dim)
        self.rewards = torch.empty(n, t)
        self.states = torch.empty(n, t, nq + nv, dtype=torch.float64)  # qpos, qvel
        self.at_goal = torch.zeros(n, t, dtype=torch.bool)
        self.has_goal = False  # a task with a goal: `record` was given at_goal
        self.pixels = (
            torch.empty(n, t + 1, *pixel_shape, dtype=torch.uint8) if pixel_shape else None
        )
        self.pos = torch.zeros(n, dtype=torch.long)  # steps recorded in each env's episode
        self._rows = torch.arange(n)

    def record(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        qpos: torch.Tensor,
        qvel: torch.Tensor,
        at_goal: torch.Tensor | None = None,
    ) -> None:
        """Store one step of every env: the observation and physics state the action
        was taken in, the action and its reward, and for a task with a goal whether
        the episode is at it after the step (`info["at_goal"]`), each `[N, ...]`."""
        lo, hi = (int(v) for v in self.pos.aminmax())
        if hi >= self.max_steps:
            raise RuntimeError(
                f"an episode ran past max_steps={self.max_steps}; make the recorder as long "
                "as the env's episodes"
            )
        # all rows at one position (episodes started together): plain slice writes,
        # several times cheaper than the scattered writes of the general case
        at = (slice(None), lo) if lo == hi else (self._rows, self.pos)
        self.obs[at] = obs.detach().to("cpu")
        self.actions[at] = actions.detach().to("cpu")
        self.rewards[at] = rewards.detach().to("cpu")
        self.states[(*at, slice(0, self.nq))] = qpos.detach().to("cpu")
        self.states[(*at, slice(self.nq, None))] = qvel.detach().to("cpu")
        if at_goal is not None:
            self.at_goal[at] = at_goal.detach().to("cpu")
            self.has_goal = True
        self.pos += 1

    def record_frames(self, frames: torch.Tensor, env_ids: torch.Tensor) -> None:
        """Frames `[n, H, W, 3]` of the current observation of `env_ids`."""
        self.pixels[env_ids, self.pos[env_ids]] = frames.to("cpu")

    def take(
        self, env: int, final_obs: torch.Tensor, terminated: bool, truncated: bool
    ) -> dict[str, np.ndarray]:
        """The episode recorded in row `env`, ended with observation `final_obs` and
        the given flags (numpy copies); the row restarts empty."""
        length = int(self.pos[env])
        obs = self.obs[env, :length].numpy().copy()
        next_obs = np.empty_like(obs)
        next_obs[:-1] = obs[1:]
        next_obs[-1] = final_obs.detach().cpu().numpy()
        ends = np.zeros((2, length), dtype=bool)
        ends[:, -1] = terminated, truncated
        out = {
            "obs": obs,
            "next_obs": next_obs,
            "actions": self.actions[env, :length].numpy().copy(),
            "rewards": self.rewards[env, :length].numpy().copy(),
            "terminated": ends[0],
            "truncated": ends[1],
            "states": self.states[env, :length].numpy().copy(),
        }
        if self.has_goal:
            out["at_goal"] = self.at_goal[env, :length].numpy().copy()
        if self.pixels is not None:
            out["pixels"] = self.pixels[env, : length + 1].numpy().copy()
        self.pos[env] = 0
        return out

    def restart(self, env_ids: torch.Tensor) -> None:
        """Drop whatever rows `env_ids` hold (their episodes are not wanted)."""
        self.pos[env_ids] = 0
