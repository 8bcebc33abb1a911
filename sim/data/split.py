"""Whole-episode splits of a dataset into training, validation and test episodes.

Validation episodes choose things (early stopping, the checkpoint kept, an
ensemble's elites); test episodes choose nothing and are what a command reports.
Episodes are drawn from a seeded generator, validation first, so a split without
test episodes holds the same validation episodes as before test episodes existed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Split(NamedTuple):
    """Episode positions (0 .. n-1), each list sorted."""

    train: list[int]
    val: list[int]
    test: list[int]

    def part_of(self, episode_of: torch.Tensor) -> torch.Tensor:
        """The part of each transition, 0 training, 1 validation, 2 test, from the
        position of its episode (`EpisodeData.episode_of`); on the CPU."""
        part = torch.zeros(len(self.train) + len(self.val) + len(self.test), dtype=torch.long)
        part[self.val], part[self.test] = 1, 2
        return part[episode_of.cpu()]


def split_episodes(
    n: int, val_fraction: float, test_fraction: float, generator: torch.Generator, what: str
) -> Split:
    """Split `n` episodes: `val_fraction` of them (at least one) for validation,
    `test_fraction` (at least one unless 0) for the test, the rest (at least one) for
    training. `what` names the data in errors."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must lie in [0, 1), got {value}")
    n_val = max(1, round(val_fraction * n))
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        parts = "training, validation" + (" and test" if n_test else "")
        hint = " (--test-fraction 0: no test episodes)" if n_test else ""
        raise ValueError(
            f"{what}: need at least {n_val + n_test + 1} episodes ({parts}), got {n}{hint}"
        )
    order = torch.randperm(n, generator=generator).tolist()
    val, test = order[:n_val], order[n_val : n_val + n_test]
    return Split(sorted(order[n_val + n_test :]), sorted(val), sorted(test))
