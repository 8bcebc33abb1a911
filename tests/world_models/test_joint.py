"""Joint WAM: the window state agrees with the transformer's causal read-outs, rows
step independently, the loss masks what lies past an episode's end and leaves play
windows' actions out. Training, imagination and acting: `test_wam.py`."""

from __future__ import annotations

import pytest
import torch

from world_models.joint import JointWAM

SMALL = {"context": 4, "chunk": 3, "width": 32, "heads": 2, "layers": 2}


def _model(seed: int = 0) -> JointWAM:
    torch.manual_seed(seed)
    return JointWAM(5, 2, SMALL).eval()


def test_stepping_the_window_reads_the_causal_transformer_at_the_newest_step():
    model = _model()
    obs, act = torch.randn(3, 9, 5), torch.rand(3, 8, 2) * 2 - 1
    x = model._norm(obs)
    state = model.encode(obs[:, 0])
    with torch.no_grad():
        for t in range(8):
            lo = max(0, t - 3)  # the window holds steps lo .. t
            # the transformer over exactly those steps, no padding
            ref = model._tokens(x[:, lo : t + 1], act[:, lo : t + 1])
            chunk = model.action_head(ref[:, -2]).reshape(3, 3, 2)
            torch.testing.assert_close(model.action_chunk(state), chunk)
            step = model.next(state, act[:, t])
            change = model.obs_head(ref[:, -1]) * model.delta_std
            torch.testing.assert_close(step.obs, (x[:, t] + change) * model.obs_std
                                       + model.obs_mean)  # fmt: skip
            state = model.advance(state, act[:, t], obs[:, t + 1])
            # the same window as filtering the history from its start
            torch.testing.assert_close(state, model.observe(obs[:, : t + 2], act[:, : t + 1]))


def test_rows_with_windows_of_different_lengths_step_independently():
    model = _model()
    obs, act = torch.randn(2, 7, 5), torch.rand(2, 6, 2) * 2 - 1
    short, full = model.observe(obs[:1, :2], act[:1, :1]), model.observe(obs[1:], act[1:])
    both = model.next(torch.cat((short, full)), act[:, 0])
    for i, state in enumerate((short, full)):
        alone = model.next(state, act[i : i + 1, 0])
        torch.testing.assert_close(both.obs[i : i + 1], alone.obs)
        torch.testing.assert_close(both.state[i : i + 1], alone.state)
    assert both.state[:, -1].tolist() == [3.0, 4.0]


def _batch(b: int, length: int = 4 + 3 - 1) -> dict[str, torch.Tensor]:
    return {"obs": torch.randn(b, length, 5), "next_obs": torch.randn(b, length, 5),
            "actions": torch.rand(b, length, 2), "rewards": torch.rand(b, length),
            "terminated": torch.zeros(b, length, dtype=torch.bool),
            "mask": torch.ones(b, length, dtype=torch.bool)}  # fmt: skip


def test_loss_masks_steps_past_the_episode_end():
    model = _model()
    batch = _batch(4)
    batch["mask"][:, 3:] = False
    loss, _ = model.loss(batch)
    garbled = {k: v.clone() for k, v in batch.items()}
    for key in ("obs", "next_obs", "actions", "rewards"):
        garbled[key][:, 3:] = 99.0  # past the end: must not count
    torch.testing.assert_close(model.loss(garbled)[0], loss)
    with pytest.raises(ValueError, match="need context \\+ chunk - 1 = 6"):
        model.loss({k: v[:, :5] for k, v in batch.items()})


def test_play_windows_train_the_dynamics_but_not_the_actions():
    model = _model()
    batch = _batch(8)
    _, plain = model.loss(batch)
    _, demos_only = model.loss({k: v[:3] for k, v in batch.items()})
    batch["demo"] = torch.arange(8) < 3
    _, mixed = model.loss(batch)
    for key in ("action", "action_first"):
        assert mixed[key] == pytest.approx(demos_only[key], rel=1e-5)
    for key in ("obs", "reward", "cont"):
        assert mixed[key] == pytest.approx(plain[key], rel=1e-6)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown config key"):
        JointWAM(5, 2, {"contxt": 4})
    with pytest.raises(ValueError, match="pixel patches"):
        JointWAM(5, 2, {"pixels": True})
    with pytest.raises(ValueError, match="multiple of heads"):
        JointWAM(5, 2, {"width": 30, "heads": 4})
