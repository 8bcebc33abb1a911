"""Loaders: transitions and windows equal the recorded episodes, windows never mix
episodes unmasked, pixels stream from disk (also in DataLoader workers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.jobs.collect import CollectCfg, collect
from sim.data.dataset import Dataset
from sim.data.loader import EpisodeData


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Real collected data whose episodes have different lengths (conftest task)."""
    out = tmp_path_factory.mktemp("data") / "ds"
    collect(
        CollectCfg(
            task="test_cartpole_falls",
            num_envs=3,
            episodes=6,
            policy="noise",
            seed=2,
            out=out,
            pixels=16,
            progress=False,
        )
    )
    return Dataset(out)


def _where(ds: Dataset, index: int) -> tuple[int, int]:
    for e in ds.episodes:
        if index < ds.length(e):
            return e, index
        index -= ds.length(e)
    raise IndexError(index)


def test_transitions_are_the_recorded_steps(recorded):
    data = EpisodeData(recorded)
    assert len(data) == recorded.total
    assert len({recorded.length(e) for e in recorded.episodes}) > 1
    for i in [
        0,
        1,
        len(data) // 2,
        len(data) - 1,
        *np.random.default_rng(0).integers(0, len(data), 20),
    ]:
        item = data[int(i)]
        e, t = _where(recorded, int(i))
        ep = recorded.episode(e)
        for key in ("obs", "next_obs", "actions", "rewards", "terminated", "truncated"):
            np.testing.assert_array_equal(item[key].numpy(), ep[key][t], err_msg=key)
        assert bool(item["is_first"]) == (t == 0)


def test_windows_stop_at_episode_ends(recorded):
    L = 64
    data = EpisodeData(recorded, sequence_length=L)
    batch = data.__getitems__(list(range(len(data))))  # every window
    assert batch["obs"].shape == (len(data), L, 5) and batch["mask"].shape == (len(data), L)
    for i in range(0, len(data), 7):
        e, t = _where(recorded, i)
        ep = recorded.episode(e)
        valid = min(L, len(ep["actions"]) - t)
        mask = batch["mask"][i]
        assert mask[:valid].all() and not mask[valid:].any()
        np.testing.assert_array_equal(batch["obs"][i, :valid].numpy(), ep["obs"][t : t + valid])
        np.testing.assert_array_equal(
            batch["actions"][i, :valid].numpy(), ep["actions"][t : t + valid]
        )
        # padding repeats the last step of the same episode, never the next episode
        assert (batch["obs"][i, valid:] == batch["obs"][i, valid - 1]).all()
    # an episode start appears inside a window only at its first position
    assert not (batch["is_first"][:, 1:] & batch["mask"][:, 1:]).any()
    done = batch["terminated"] | batch["truncated"]
    assert not (done[:, :-1] & batch["mask"][:, 1:]).any()  # nothing valid after an end


def test_pixels_stream_in_workers(recorded):
    data = EpisodeData(recorded, sequence_length=8, pixels=True)
    first = recorded.episode(recorded.episodes[0])
    item = data[0]
    np.testing.assert_array_equal(item["pixels"].numpy(), first["pixels"][:8])
    np.testing.assert_array_equal(item["next_pixels"].numpy(), first["pixels"][1:9])
    # a window over an episode's end: next frames end with the final one, then repeat
    T = recorded.length(recorded.episodes[0])
    item = data[T - 3]
    np.testing.assert_array_equal(item["pixels"][:3].numpy(), first["pixels"][T - 3 : T])
    np.testing.assert_array_equal(item["next_pixels"][:3].numpy(), first["pixels"][T - 2 :])
    assert (item["pixels"][3:] == item["pixels"][2]).all()
    assert (item["next_pixels"][3:] == first["pixels"][T]).all()
    seen = 0
    for batch in data.loader(16, shuffle=False, num_workers=2):
        assert batch["pixels"].shape[1:] == (8, 16, 16, 3) and batch["pixels"].dtype == torch.uint8
        seen += len(batch["pixels"])
    assert seen == len(data)
    steps = EpisodeData(recorded, pixels=True)
    last = recorded.length(recorded.episodes[0]) - 1
    item = steps[last]  # the final transition: next frame is the final state
    np.testing.assert_array_equal(item["next_pixels"].numpy(), first["pixels"][-1])
    with pytest.raises(ValueError, match="sequence_length must be >= 1"):
        EpisodeData(recorded, sequence_length=0)


def test_loader_covers_every_transition_once(recorded):
    data = EpisodeData(recorded)
    got = torch.cat([b["rewards"] for b in data.loader(100, shuffle=False)])
    torch.testing.assert_close(got, data.data["rewards"], rtol=0, atol=0)
    with pytest.raises(IndexError):
        data.__getitems__([len(data)])
