"""Joint WAM: the window state agrees with the transformer's causal read-outs, rows
step independently, the loss masks what lies past an episode's end and leaves play
windows' actions out. A model that sees: patches tile the frame, attention is causal
between steps and full within one step's patches, its window steps as the
transformer reads, and it learns action-dependent frame motion. Training,
imagination and acting on real data: `test_wam.py`."""

from __future__ import annotations

import pytest
import torch

from world_models.models.joint import JointWAM
from world_models.models.rssm import compose

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
            ref_o, ref_a = model._tokens(x[:, lo : t + 1], act[:, lo : t + 1])
            chunk = model.action_head(ref_o[:, -1, 0]).reshape(3, 3, 2)
            torch.testing.assert_close(model.action_chunk(state), chunk)
            step = model.next(state, act[:, t])
            change = model.obs_head(ref_a[:, -1]) * model.delta_std
            torch.testing.assert_close(
                step.obs, (x[:, t] + change) * model.obs_std + model.obs_mean
            )
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
    return {
        "obs": torch.randn(b, length, 5),
        "next_obs": torch.randn(b, length, 5),
        "actions": torch.rand(b, length, 2),
        "rewards": torch.rand(b, length),
        "terminated": torch.zeros(b, length, dtype=torch.bool),
        "mask": torch.ones(b, length, dtype=torch.bool),
    }


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
    with pytest.raises(ValueError, match="do not split into patches of 16 px"):
        JointWAM(5, 2, {"pixels": True, "frame_shape": [24, 24, 3]})
    with pytest.raises(ValueError, match="sees pixels: pass frames"):
        _pixel_model().encode(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"frames \[\.\.\., 16, 16, 3\], got \(2, 8, 8, 3\)"):
        _pixel_model().encode(None, torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiple of heads"):
        JointWAM(5, 2, {"width": 30, "heads": 4})


# ---------------------------------------------------------------- pixel patches
PIXELS = {**SMALL, "pixels": True, "patch": 8, "frame_shape": [16, 16, 3]}


def _pixel_model(seed: int = 0) -> JointWAM:
    torch.manual_seed(seed)
    return JointWAM(5, 2, PIXELS).eval()


def _frames(*lead: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*lead, 16, 16, 3), generator=g, dtype=torch.uint8)


def test_patches_tile_the_frame_row_by_row():
    model = _pixel_model()
    frames = _frames(2, 3)
    x = model._step_input(None, frames)
    patches = model._patchify(x)
    assert patches.shape == (2, 3, 4, 8 * 8 * 3)
    unit = frames.float() / 255 - 0.5
    for i, (r, c) in enumerate(((0, 0), (0, 8), (8, 0), (8, 8))):
        torch.testing.assert_close(
            patches[:, :, i].reshape(2, 3, 8, 8, 3),
            unit[:, :, r : r + 8, c : c + 8],
            rtol=0,
            atol=0,
        )
    assert torch.equal(model._unpatchify(patches), x)


def test_attention_is_causal_between_steps_and_full_within_a_steps_patches():
    model = _pixel_model()
    x = model._step_input(None, _frames(1, 3))
    act = torch.rand(1, 3, 2) * 2 - 1
    with torch.no_grad():
        base_o, base_a = model._tokens(x, act)

        def changed(x2, act2):
            o, a = model._tokens(x2, act2)
            return (o - base_o).abs().amax((0, 2, 3)) > 1e-6, (a - base_a).abs().amax((0, 2)) > 1e-6

        # step 1's frame: steps 1 and 2 change (all of step 1's patches), step 0 does not
        x2 = x.clone()
        x2[0, 1, :10] += 0.3  # pixels of the first patch only
        obs_changed, act_changed = changed(x2, act)
        assert obs_changed.tolist() == [False, True, True]
        assert act_changed.tolist() == [False, True, True]
        o, _ = model._tokens(x2, act)
        assert ((o - base_o)[0, 1].abs().amax(-1) > 1e-6).all()  # every patch of step 1 saw it
        # step 1's action: its own action token and step 2 change, no observation token of step 1
        act2 = act.clone()
        act2[0, 1] += 0.5
        obs_changed, act_changed = changed(x, act2)
        assert obs_changed.tolist() == [False, False, True]
        assert act_changed.tolist() == [False, True, True]


def test_a_seeing_window_steps_as_the_transformer_reads_its_frames():
    model = _pixel_model()
    frames, act = _frames(3, 8, seed=1), torch.rand(3, 7, 2) * 2 - 1
    x = model._step_input(None, frames)
    state = model.encode(None, frames[:, 0])
    assert torch.equal(model.frames(state), frames[:, 0])  # the observed frame, exactly
    with torch.no_grad():
        for t in range(7):
            lo = max(0, t - 3)
            ref_o, ref_a = model._tokens(x[:, lo : t + 1], act[:, lo : t + 1])
            chunk = model.action_head(ref_o[:, -1].mean(1)).reshape(3, 3, 2)
            torch.testing.assert_close(model.action_chunk(state), chunk)
            step = model.next(state, act[:, t])
            maps = model.frame_head(ref_o[:, -1] + ref_a[:, -1, None])  # [3, P, p * p * 6]
            maps = model._unpatchify(maps, 6).reshape(3, 16, 16, 6).permute(0, 3, 1, 2)
            prev = x[:, t].reshape(3, 16, 16, 3).permute(0, 3, 1, 2)
            want = compose(maps, prev, model.pixel_grid, model.flow_scale, 4.0).clamp(-0.5, 0.5)
            want = ((want + 0.5) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
            assert torch.equal(model.frames(step.state), want)
            obs = model.obs_head(ref_a[:, -1]) * model.obs_std + model.obs_mean
            torch.testing.assert_close(step.obs, obs)
            state = model.advance(state, act[:, t], None, frames[:, t + 1])
            torch.testing.assert_close(
                state, model.observe(None, act[:, : t + 1], frames[:, : t + 2])
            )


def test_a_seeing_model_learns_frame_motion_that_the_action_chooses():
    """Textures that move one pixel right or left as the action's sign says: the
    predicted next frames beat copying the last one by far, and so only because the
    model reads the action (the opposite action predicts the other way)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    b, length = 16, 4 + 3 - 1
    sign = torch.where(torch.rand(b, length, generator=g) < 0.5, -1, 1)
    texture = torch.randint(0, 256, (b, 16, 16 + 2 * length, 3), generator=g, dtype=torch.uint8)
    offset = length + torch.cat((torch.zeros(b, 1, dtype=torch.long), sign.cumsum(1)), 1)
    video = torch.stack(
        [
            torch.stack(
                [texture[i, :, offset[i, t] : offset[i, t] + 16] for t in range(length + 1)]
            )
            for i in range(b)
        ]
    )
    batch = _batch(b, length)
    batch["actions"] = sign[..., None].float().expand(b, length, 2) * 0.5
    batch["pixels"], batch["next_pixels"] = video[:, :-1], video[:, 1:]
    model = JointWAM(5, 2, {**PIXELS, "width": 64}).train()
    model.prepare(
        {
            "obs": batch["obs"].flatten(0, 1),
            "next_obs": batch["next_obs"].flatten(0, 1),
            "pixels": video[:, :-1].flatten(0, 1),
            "next_pixels": video[:, 1:].flatten(0, 1),
        }
    )
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    first = model.loss(batch)[1]["frame"]
    for _ in range(400):
        loss, scalars = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # the frame loss is in units of the pixel change: copying the last frame scores 1
    assert first > 0.5 and scalars["frame"] < 0.1, (first, scalars["frame"])  # measured 0.014
    model.eval()
    with torch.no_grad():
        state = model.encode(None, video[:, 0])
        step = model.next(state, batch["actions"][:, 0])
        other = model.next(state, -batch["actions"][:, 0])

    def err(frames):
        return float((frames.float() - video[:, 1].float()).pow(2).mean())

    copy = err(video[:, 0])
    right, wrong = err(model.frames(step.state)), err(model.frames(other.state))
    assert right < 0.1 * copy and right < 0.2 * wrong, (copy, right, wrong)  # 0.016x, 0.03x
