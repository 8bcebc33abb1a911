"""PyTorch datasets over recorded episodes: transitions and fixed-length windows.

`EpisodeData` is a map-style `torch.utils.data.Dataset` whose item i starts at
transition i (episodes concatenated in index order). With `sequence_length=None`
an item is one transition; with `sequence_length=L` it is the window of the L
steps from there, cut at the episode's end: steps past the end repeat the last
valid one and have `mask` 0, so no window mixes two episodes unmasked (DreamerV3
and TD-MPC2 replay windows, with an explicit mask instead of crossing episodes).

State data (observations, actions, rewards, flags, and `at_goal` where every episode
recorded it: whether a goal task is at its goal after each step) lives in memory as flat
tensors and batches are gathered with one indexed read per field
(`__getitems__`, used by DataLoader's batched fetching, and `sample`). Pixels are
streamed: read from the HDF5 shards per item, files opened lazily in each worker;
a damaged shard raises `sim.data.dataset.DatasetError` naming it and the episode.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader

from sim.data.dataset import Dataset

_STATE_KEYS = ("obs", "next_obs", "actions", "rewards", "terminated", "truncated")


class EpisodeData(torch.utils.data.Dataset):
    """Transitions or windows of a recorded dataset.

    Args:
        source: a dataset directory, a robomimic-layout file, or an open `Dataset`.
        sequence_length: None for single transitions, else the window length L.
        pixels: also return frames (`pixels`, and `next_pixels` of the next
            observations), uint8 `[..., H, W, 3]`, streamed from disk.
        device: where the in-memory tensors (and so the batches) live.
    """

    def __init__(
        self,
        source: str | os.PathLike | Dataset,
        sequence_length: int | None = None,
        pixels: bool = False,
        device: str | torch.device = "cpu",
    ):
        self.dataset = source if isinstance(source, Dataset) else Dataset(source)
        if sequence_length is not None and sequence_length < 1:
            raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
        if pixels and not self.dataset.has_pixels():
            raise ValueError(f"{self.dataset.path}: the dataset has no pixels")
        if not self.dataset.episodes:
            raise ValueError(f"{self.dataset.path}: the dataset has no episodes")
        self.sequence_length, self.pixels = sequence_length, pixels
        self.device = torch.device(device)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in (*_STATE_KEYS, "at_goal")}
        lengths = []
        for e in self.dataset.episodes:
            data = self.dataset.episode(e, (*_STATE_KEYS, "at_goal"))
            for key, value in data.items():
                parts[key].append(value)
            lengths.append(len(data["actions"]))
        if len(parts["at_goal"]) < len(lengths):  # recorded in every episode, or not at all
            del parts["at_goal"]
        self.data = {
            k: torch.from_numpy(np.concatenate(v)).to(self.device) for k, v in parts.items()
        }
        self.lengths = torch.tensor(lengths)
        starts = torch.cumsum(self.lengths, 0) - self.lengths
        self.episode_of = torch.repeat_interleave(torch.arange(len(lengths)), self.lengths)
        # for every transition: its step in the episode and the end of its episode
        self.step = torch.arange(len(self.episode_of)) - starts[self.episode_of]
        self.end = (starts + self.lengths)[self.episode_of].to(self.device)
        self.step, self.episode_of = self.step.to(self.device), self.episode_of.to(self.device)

    def __len__(self) -> int:
        return len(self.episode_of)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([index])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        """A batch of items (dict of tensors `[B, ...]` or `[B, L, ...]`)."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.device)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices must lie in [0, {len(self)})")
        if self.sequence_length is None:
            batch = {k: v[idx] for k, v in self.data.items()}
            batch["is_first"] = self.step[idx] == 0
        else:
            window = idx[:, None] + torch.arange(self.sequence_length, device=self.device)
            end = self.end[idx][:, None]
            mask = window < end
            window = torch.minimum(window, end - 1)  # past the end: repeat the last step
            batch = {k: v[window] for k, v in self.data.items()}
            batch["is_first"] = (self.step[window] == 0) & mask
            batch["mask"] = mask
        if self.pixels:
            batch.update(self._frames(idx.cpu()))
        return batch

    def _frames(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frames of the items, read from the shards (one slice per item): `pixels`
        of the observations and `next_pixels` of the next observations, padded past
        an episode's end like the state fields."""
        length = 1 if self.sequence_length is None else self.sequence_length
        now, nxt = [], []
        for i in idx.tolist():
            e = int(self.episode_of[i])
            step, ep_len = int(self.step[i]), int(self.lengths[e])
            episode = self.dataset.episodes[e]
            group = self.dataset._group(episode)
            n = min(length, ep_len - step)  # valid steps in the window
            # frames of observations step .. step + n: the last may be the final one
            with self.dataset.reading(episode):  # a damaged shard: DatasetError
                frames = group["obs/pixels"][step : min(step + n + 1, ep_len)]
                if step + n == ep_len:
                    frames = np.concatenate((frames, group["next_obs/pixels"][-1:]))
            if n < length:  # past the end: repeat the last step
                pad = length - n
                now.append(np.concatenate((frames[:n], np.repeat(frames[n - 1 : n], pad, 0))))
                nxt.append(np.concatenate((frames[1:], np.repeat(frames[n:], pad, 0))))
            else:
                now.append(frames[:n])
                nxt.append(frames[1:])
        pixels = torch.from_numpy(np.stack(now)).to(self.device)
        next_pixels = torch.from_numpy(np.stack(nxt)).to(self.device)
        if self.sequence_length is None:
            return {"pixels": pixels[:, 0], "next_pixels": next_pixels[:, 0]}
        return {"pixels": pixels, "next_pixels": next_pixels}

    def sample(self, batch_size: int, generator: torch.Generator | None = None):
        """A uniformly random batch of items."""
        idx = torch.randint(len(self), (batch_size,), generator=generator)
        return self.__getitems__(idx)

    def loader(self, batch_size: int, shuffle: bool = True, **kwargs) -> DataLoader:
        """A DataLoader fetching whole batches at once (`__getitems__`)."""
        return DataLoader(
            self, batch_size=batch_size, shuffle=shuffle, collate_fn=_identity, **kwargs
        )


def _identity(batch):
    return batch
