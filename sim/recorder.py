"""Per-env episode buffers for a batched env whose episodes end at different steps.

Each env row owns preallocated `[max_steps, ...]` arrays and a write position;
one `record` call stores a whole batch step (one indexed write per field), and
`take(i)` hands out env i's finished episode as numpy copies. Pixels hold one
more frame than steps: frame t shows observation t, the last one the final state.
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
        state_dim: int,
        pixel_shape: tuple[int, int, int] | None = None,
    ):
        n, t = num_envs, max_steps
        self.max_steps = max_steps
        self._buf = {
            "obs": torch.empty(n, t, obs_dim),
            "next_obs": torch.empty(n, t, obs_dim),
            "actions": torch.empty(n, t, action_dim),
            "rewards": torch.empty(n, t),
            "terminated": torch.empty(n, t, dtype=torch.bool),
            "truncated": torch.empty(n, t, dtype=torch.bool),
            "states": torch.empty(n, t, state_dim, dtype=torch.float64),
        }
        self.pixels = (
            torch.empty(n, t + 1, *pixel_shape, dtype=torch.uint8) if pixel_shape else None
        )
        self.pos = torch.zeros(n, dtype=torch.long)  # steps recorded in each env's episode
        self._rows = torch.arange(n)

    def record(self, **step: torch.Tensor) -> None:
        """Store one step of every env: obs, actions, rewards, terminated, truncated,
        next_obs, states, each `[N, ...]` (on any device)."""
        if int(self.pos.max()) >= self.max_steps:
            raise RuntimeError(
                f"an episode ran past max_steps={self.max_steps}; make the recorder as long "
                "as the env's episodes"
            )
        missing = set(self._buf) - set(step)
        if missing:
            raise ValueError(f"record() is missing {', '.join(sorted(missing))}")
        # all rows at one position (episodes started together): a plain slice write,
        # several times cheaper than the scattered write of the general case
        lo, hi = self.pos.aminmax()
        where = (slice(None), int(lo)) if lo == hi else (self._rows, self.pos)
        for key, buf in self._buf.items():
            buf[where] = step[key].detach().to("cpu")
        self.pos += 1

    def record_frames(self, frames: torch.Tensor, env_ids: torch.Tensor) -> None:
        """Frames `[n, H, W, 3]` of the current observation of `env_ids`."""
        self.pixels[env_ids, self.pos[env_ids]] = frames.to("cpu")

    def take(self, env: int) -> dict[str, np.ndarray]:
        """The episode recorded in row `env` (numpy copies); the row restarts empty."""
        length = int(self.pos[env])
        out = {key: buf[env, :length].numpy().copy() for key, buf in self._buf.items()}
        if self.pixels is not None:
            out["pixels"] = self.pixels[env, : length + 1].numpy().copy()
        self.pos[env] = 0
        return out

    def restart(self, env_ids: torch.Tensor) -> None:
        """Drop whatever rows `env_ids` hold (their episodes are not wanted)."""
        self.pos[env_ids] = 0

    def nbytes(self) -> int:
        total = sum(b.numel() * b.element_size() for b in self._buf.values())
        if self.pixels is not None:
            total += self.pixels.numel()
        return total
