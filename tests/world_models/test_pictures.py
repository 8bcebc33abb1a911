"""Frames for people: nearest-neighbour scaling and labels, with Pillow's FreeType
font and without it (its bitmap font, scaled by a whole factor)."""

from __future__ import annotations

import pytest
import torch
from PIL import ImageFont

from world_models import pictures


def test_resize_is_nearest_neighbour():
    frames = torch.arange(2 * 2 * 2 * 3, dtype=torch.uint8).reshape(2, 2, 2, 3)
    big = pictures.resize(frames, 6, 4)
    assert big.shape == (2, 6, 4, 3)
    assert torch.equal(big, frames.repeat_interleave(3, 1).repeat_interleave(2, 2))
    assert pictures.resize(frames, 2, 2) is frames


@pytest.mark.parametrize("freetype", [True, False])
def test_labels_are_white_text_on_a_darkened_box(freetype, monkeypatch):
    if not freetype:  # Pillow built without FreeType: load_default(size=...) raises

        def no_freetype(size=None):
            raise ImportError("The _imagingft C module is not installed")

        monkeypatch.setattr(ImageFont, "load_default", no_freetype)
    pictures.label_font.cache_clear()
    try:
        size = pictures.font_size(512)
        font, scale = pictures.label_font(size)
        assert size == 32 and (scale == 1) == freetype
        assert isinstance(font, ImageFont.FreeTypeFont) == freetype
        pane = torch.full((512, 384, 3), 200, dtype=torch.uint8)
        lines = ["imagined", "step 7  return 12.50"]
        out = pictures.label(pane, lines)
    finally:
        pictures.label_font.cache_clear()
    rows, cols = pictures.label_box(lines, 512, 384) if freetype else out.shape[:2]
    changed = (out != pane).any(-1).nonzero()
    assert changed[:, 0].max() < rows and changed[:, 1].max() < cols  # only the box
    assert 2 * size <= changed[:, 0].max() + 1 <= 4 * size  # two lines of about `size` px
    box = out[: changed[:, 0].max() + 1, : changed[:, 1].max() + 1].int()
    assert (box == 255).all(-1).sum() > 100  # white ink
    assert (box == round(200 * pictures.LABEL_SHADE)).all(-1).sum() > box.shape[0]  # shade
    assert torch.equal(pane, torch.full_like(pane, 200))  # a copy: the pane is untouched
    # a narrow, short pane cuts the text off
    tiny = pictures.label(torch.zeros(16, 20, 3, dtype=torch.uint8), lines)
    assert tiny.shape == (16, 20, 3) and tiny.max() > 200  # some ink
