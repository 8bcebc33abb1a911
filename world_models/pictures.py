"""Pictures of a world model's predictions: image metrics and the files that show them.

- `psnr`, `ssim`: per-image peak signal-to-noise ratio and structural similarity
  of uint8 RGB frames `[B, H, W, 3]`, batched in torch. SSIM is Wang et al.
  (2004): local means, variances and covariance under an 11-tap Gaussian window
  (sigma 1.5, population statistics), K1 = 0.01, K2 = 0.03, data range 255,
  averaged over the pixels whose window lies inside the image and over the
  three channels (what `skimage.metrics.structural_similarity` computes with
  `gaussian_weights=True, use_sample_covariance=False, channel_axis=-1`).
- `side_by_side`, `strip`: frame layouts with thin white separators.
- `resize` (nearest-neighbour), `label`: frames for people: a pane scaled to the
  size a video shows, and lines of white text on a darkened box in its top-left
  corner. The font is Pillow's own (`ImageFont.load_default`: Aileron Regular at
  `font_size(height)` px, built into Pillow, where Pillow has FreeType; else its
  bitmap font, scaled by a whole factor); nothing is read from disk or downloaded.
- `write_video` (H.264 through PyAV, MPEG-4 Part 2 where the build lacks libx264),
  `write_png` (Pillow), `plot_errors` (matplotlib's Agg canvas, no pyplot state).
Every file is written atomically: to a temporary file beside it, then renamed.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sim.data.atomic import write_atomic, write_bytes_atomic

SEPARATOR = 2  # [px] between panels
WHITE = 255
SSIM_SIGMA, SSIM_TRUNCATE, SSIM_K1, SSIM_K2 = 1.5, 3.5, 0.01, 0.03
DATA_RANGE = 255.0


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4 or a.shape[-1] != 3:
        raise ValueError(
            f"frames must be two [B, H, W, 3] batches of one shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio [dB] of each pair of uint8 frames `[B, H, W, 3]`:
    10 log10(255^2 / MSE), float64 `[B]` (inf for identical frames)."""
    _check_pair(a, b)
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(DATA_RANGE**2 / mse)


def _gaussian_window(device: torch.device) -> torch.Tensor:
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5: an 11-tap window
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    w = torch.exp(-0.5 * x**2 / SSIM_SIGMA**2)
    return w / w.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Mean structural similarity of each pair of uint8 frames `[B, H, W, 3]`,
    float64 `[B]` in [-1, 1] (see the module docstring)."""
    _check_pair(a, b)
    w = _gaussian_window(a.device)
    if min(a.shape[1:3]) < len(w):
        raise ValueError(
            f"SSIM needs frames of at least {len(w)} x {len(w)} px, got {tuple(a.shape[1:3])}"
        )
    rows, cols = w.reshape(1, 1, -1, 1), w.reshape(1, 1, 1, -1)
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    out = []
    for i in range(0, len(a), chunk):
        x = a[i : i + chunk].permute(0, 3, 1, 2).double()  # [b, 3, H, W]
        y = b[i : i + chunk].permute(0, 3, 1, 2).double()
        # the five local moments of every channel, filtered together; a "valid"
        # filter keeps exactly the pixels whose window lies inside the image
        maps = torch.stack((x, y, x * x, y * y, x * y), 2).reshape(-1, 1, *x.shape[2:])
        mu = F.conv2d(F.conv2d(maps, rows), cols)
        mx, my, mxx, myy, mxy = mu.reshape(len(x), 3, 5, *mu.shape[2:]).unbind(2)
        vx, vy, cov = mxx - mx * mx, myy - my * my, mxy - mx * my
        s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        out.append(s.flatten(2).mean(2).mean(1))
    return torch.cat(out)


# ------------------------------------------------------------------- layouts
def side_by_side(real: torch.Tensor, imagined: torch.Tensor) -> torch.Tensor:
    """Video frames `[T, H', W', 3]` from panels `[R, T, H, W, 3]`: each of the R rows
    real (left) beside imagined (right), rows stacked, white separators; padded to
    even sizes (yuv420p video)."""
    if real.shape != imagined.shape or real.dim() != 5:
        raise ValueError(
            f"panels must be two [R, T, H, W, 3] tensors of one shape, got "
            f"{tuple(real.shape)} and {tuple(imagined.shape)}"
        )
    r, t, h, w, _ = real.shape
    height, width = r * h + (r - 1) * SEPARATOR, 2 * w + SEPARATOR
    frames = torch.full((t, height + height % 2, width + width % 2, 3), WHITE, dtype=torch.uint8)
    for i in range(r):
        top = i * (h + SEPARATOR)
        frames[:, top : top + h, :w] = real[i]
        frames[:, top : top + h, w + SEPARATOR : 2 * w + SEPARATOR] = imagined[i]
    return frames


def strip(real: torch.Tensor, imagined: torch.Tensor) -> torch.Tensor:
    """One image `[2H + sep, N W + (N - 1) sep, 3]`: frames `[N, H, W, 3]` of the real
    run on top, the imagined ones below."""
    if real.shape != imagined.shape or real.dim() != 4:
        raise ValueError(
            f"strip frames must be two [N, H, W, 3] tensors of one shape, got "
            f"{tuple(real.shape)} and {tuple(imagined.shape)}"
        )
    n, h, w, _ = real.shape
    image = torch.full(
        (2 * h + SEPARATOR, n * w + (n - 1) * SEPARATOR, 3), WHITE, dtype=torch.uint8
    )
    for k in range(n):
        left = k * (w + SEPARATOR)
        image[:h, left : left + w] = real[k]
        image[h + SEPARATOR :, left : left + w] = imagined[k]
    return image


# ------------------------------------------------------------- frames for people
LABEL_PAD = 3  # [px] between a label's text and the edge of its box
LABEL_SHADE = 0.45  # what is left of the picture under a label's box (0: black)


def resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 frames `[N, h, w, 3]` scaled to `[N, height, width, 3]`, nearest neighbour
    (a whole factor turns every pixel into a block: what a model predicted, not a
    smoothed guess)."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3], got {tuple(frames.shape)}")
    if tuple(frames.shape[1:3]) == (height, width):
        return frames
    chw = frames.permute(0, 3, 1, 2).float()
    out = F.interpolate(chw, size=(height, width), mode="nearest")
    return out.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def font_size(height: int) -> int:
    """Label font size [px] on a pane `height` px high: 1/16 of it (16 px on 256 px),
    at least 10."""
    return max(10, round(height / 16))


@functools.cache
def label_font(size: int) -> tuple:
    """(font, scale): Pillow's built-in Aileron Regular at `size` px (needs Pillow's
    FreeType support) and scale 1; without FreeType, Pillow's bitmap font and the
    whole factor that brings its capitals (6 px) nearest to Aileron's (0.7 `size`)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size), 1
    except (ImportError, OSError, TypeError):  # no FreeType (DeferredError: ImportError)
        bitmap = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)
        return bitmap(), max(1, round(0.7 * size / 6))


def _label_mask(lines: Sequence[str], size: int) -> np.ndarray:
    """The text of `lines` as coverage uint8 `[h, w]` (255: ink), `LABEL_PAD` around."""
    from PIL import Image, ImageDraw

    font, scale = label_font(size)
    text = "\n".join(lines)
    spacing = max(1, round(size / 6 / scale))  # between lines
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.multiline_textbbox((0, 0), text, font=font, spacing=spacing)
    pad = math.ceil(LABEL_PAD / scale)
    mask = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(mask).multiline_text(
        (pad - left, pad - top), text, fill=255, font=font, spacing=spacing
    )
    if scale > 1:
        mask = mask.resize((mask.width * scale, mask.height * scale), Image.Resampling.NEAREST)
    return np.asarray(mask)


def _fitted_mask(lines: Sequence[str], height: int, width: int) -> np.ndarray:
    """`_label_mask` at `font_size(height)`, smaller where that is wider than the pane
    (down to 10 px; what still does not fit is cut off)."""
    size = font_size(height)
    mask = _label_mask(lines, size)
    while mask.shape[1] > width and size > 10:
        size = max(10, int(size * 0.85))
        mask = _label_mask(lines, size)
    return mask[:height, :width]


def label_box(lines: Sequence[str], height: int, width: int) -> tuple[int, int]:
    """(rows, columns) [px] of the top-left corner that `label` changes on a pane of
    `height` x `width` px."""
    rows, cols = _fitted_mask(lines, height, width).shape
    return rows, cols


def label(image: torch.Tensor, lines: Sequence[str]) -> torch.Tensor:
    """A copy of the uint8 pane `[H, W, 3]` with `lines` of white text on a darkened
    box in its top-left corner (font: `label_font(font_size(H))`, smaller where the
    text would be wider than the pane)."""
    image = torch.as_tensor(image)
    if image.dim() != 3 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"a pane must be uint8 [H, W, 3], got {image.dtype} {tuple(image.shape)}")
    height, width = image.shape[:2]
    mask = _fitted_mask(lines, height, width)
    rows, cols = mask.shape
    out = image.cpu().numpy().copy()
    ink = mask[..., None].astype(np.float32) / 255.0
    box = out[:rows, :cols].astype(np.float32) * LABEL_SHADE
    out[:rows, :cols] = np.rint(box * (1.0 - ink) + WHITE * ink).astype(np.uint8)
    return torch.from_numpy(out)


# --------------------------------------------------------------------- files
VIDEO_CODECS = ("libx264", "mpeg4")


def write_video(path: str | os.PathLike, frames: torch.Tensor, fps: int) -> str:
    """Encode uint8 frames `[T, H, W, 3]` (even H and W) as an MP4 at `fps` frames per
    second, atomically; returns the codec used."""
    import av

    frames = torch.as_tensor(frames)
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(
            f"video frames must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}"
        )
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"frames of {height}x{width} px: yuv420p video needs even sizes")
    codec = next((c for c in VIDEO_CODECS if c in av.codecs_available), None)
    if codec is None:
        raise ImportError(f"this PyAV build encodes none of {', '.join(VIDEO_CODECS)}")
    array = frames.cpu().numpy()

    def encode(f) -> None:
        with av.open(f, "w", format="mp4") as container:
            options = {"crf": "12", "preset": "medium"} if codec == "libx264" else {}
            stream = container.add_stream(codec, rate=int(fps), options=options)
            stream.pix_fmt, stream.width, stream.height = "yuv420p", width, height
            if codec == "mpeg4":
                stream.bit_rate = 4_000_000  # no crf: a rate high enough for small frames
            for image in array:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())  # flush the encoder

    write_atomic(path, encode)
    return codec


def write_png(path: str | os.PathLike, image: torch.Tensor) -> None:
    """A uint8 image `[H, W, 3]` as a PNG, atomically."""
    from PIL import Image

    array = np.ascontiguousarray(torch.as_tensor(image).cpu().numpy())
    write_atomic(path, lambda f: Image.fromarray(array, "RGB").save(f, format="PNG"))


def figure(width: float, height: float):
    """A matplotlib `Figure` of `width` x `height` inches (100 dpi, constrained layout)
    on an Agg canvas: drawn off screen, whatever backend pyplot would pick."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def write_figure(path: str | os.PathLike, fig) -> None:
    """`fig` as a PNG at `path`, atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(path, buffer.getvalue())


def plot_errors(
    path: str | os.PathLike,
    horizons: Sequence[int],
    model: Sequence[float],
    copy_last: Sequence[float],
    const_velocity: Sequence[float],
    psnr_model: Sequence[float] | None = None,
    psnr_copy_last: Sequence[float] | None = None,
    title: str = "",
) -> tuple[int, int]:
    """PNG of the normalised state error against the horizon (model, copy-last and
    constant velocity, log y axis), and beside it PSNR against the horizon where
    given. 100 dpi, 5 x 4 inches a panel; returns the (width, height) in pixels."""
    panels = 1 if psnr_model is None else 2
    fig = figure(5 * panels, 4)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    ax.plot(horizons, _positive(model), "o-", label="model")
    ax.plot(horizons, _positive(copy_last), "s--", label="copy last observation")
    ax.plot(horizons, _positive(const_velocity), "^:", label="constant velocity")
    ax.set_yscale("log")
    ax.set_xlabel("horizon [steps]")
    ax.set_ylabel("state error / variance")
    ax.set_title("open-loop state error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if psnr_model is not None:
        ax = axes[1]
        ax.plot(horizons, psnr_model, "o-", label="model")
        ax.plot(horizons, psnr_copy_last, "s--", label="copy last frame")
        ax.set_xlabel("horizon [steps]")
        ax.set_ylabel("PSNR [dB]")
        ax.set_title("imagined frames")
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    write_figure(path, fig)
    return 5 * panels * 100, 400


def plot_scatter(
    path: str | os.PathLike,
    real: Sequence[float],
    imagined: Sequence[float],
    labels: Sequence[str],
    title: str = "",
) -> None:
    """PNG of imagined against real return, one labelled point per policy, with the
    line imagined = real (100 dpi, 6 x 5 inches)."""
    fig = figure(6, 5)
    ax = fig.subplots()
    ax.scatter(real, imagined, zorder=3)
    for x, y, label in zip(real, imagined, labels, strict=True):
        ax.annotate(
            Path(label).name if os.sep in label else label,
            (x, y),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    finite = [v for v in (*real, *imagined) if np.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite)
        ax.plot([lo, hi], [lo, hi], "--", color="grey", label="imagined = real")
        ax.legend()
    ax.set_xlabel("real return")
    ax.set_ylabel("imagined return")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    write_figure(path, fig)


def _positive(values: Sequence[float]) -> list[float]:
    """Values for a log axis: zeros (a perfect prediction) drawn at the smallest float."""
    return [v if v > 0 or math.isnan(v) else np.finfo(np.float64).tiny for v in values]


def decode_video(path: str | os.PathLike) -> torch.Tensor:
    """Every frame of a video file, uint8 `[T, H, W, 3]` (for checks and notebooks)."""
    import av

    with av.open(str(Path(path))) as container:
        return torch.from_numpy(
            np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        )
