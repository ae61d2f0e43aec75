"""Drawing a CAM heat map over the photo it explains, at the photo's own size.

Colour tables come from matplotlib (installed with grad-cam) and are applied with numpy, so no OpenCV call
and no BGR/RGB confusion (the library's ``show_cam_on_image`` defaults to BGR and wants float images).
Unlike that function the blend is not divided by its own maximum, so the photo keeps its brightness.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from core.common.errors import CoreError

__all__ = ["COLORMAPS", "DEFAULT_COLORMAP", "OverlayError", "colorize", "overlay", "peak", "side_by_side"]

# Name -> why one would pick it. jet is what Grad-CAM papers show; the others read correctly in grey print
# and for colour-blind people (perceptually uniform), gray shows the raw values.
COLORMAPS: dict[str, str] = {
    "jet": "blue (cold) to red (hot), as in the Grad-CAM papers",
    "turbo": "an improved jet: same look, smoother steps",
    "viridis": "perceptually uniform, colour-blind friendly",
    "inferno": "perceptually uniform, black to yellow",
    "magma": "perceptually uniform, black to pale pink",
    "gray": "black to white: the raw values",
}
DEFAULT_COLORMAP = "jet"


class OverlayError(CoreError):
    """A bad overlay option (unknown colormap, opacity outside [0, 1], heat map of the wrong shape)."""


@functools.cache
def _table(colormap: str) -> np.ndarray:
    """(256, 3) uint8 RGB lookup table of a matplotlib colormap."""
    if colormap not in COLORMAPS:
        raise OverlayError(f"unknown colormap {colormap!r}; choose one of: {', '.join(COLORMAPS)}")
    from matplotlib import colormaps  # imported on first use only: matplotlib is slow to import

    rgba = colormaps[colormap](np.linspace(0.0, 1.0, 256))
    return np.rint(rgba[:, :3] * 255).astype(np.uint8)


def colorize(heatmap: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """A (h, w) map in [0, 1] as (h, w, 3) uint8 RGB colours; NaN counts as 0, values outside [0, 1] are clipped."""
    heat = _checked_heatmap(heatmap)
    index = np.rint(np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
    return _table(colormap)[index]


def overlay(
    image: Image.Image, heatmap: np.ndarray, opacity: float = 0.5, colormap: str = DEFAULT_COLORMAP
) -> Image.Image:
    """The heat map coloured and blended over ``image``, as an RGB image of the image's own size.

    Args:
        image: The photo (any mode; converted to RGB).
        heatmap: (h, w) in [0, 1]; resized (bilinear) to the image's size when it differs.
        opacity: Weight of the colours: 0 shows the photo only, 1 the colours only.
        colormap: A key of :data:`COLORMAPS`.
    """
    if not 0.0 <= opacity <= 1.0:
        raise OverlayError(f"opacity must be between 0 and 1, got {opacity}")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    colours = colorize(_fitted(_checked_heatmap(heatmap), rgb.size), colormap).astype(np.float32)
    blended = (1.0 - opacity) * np.asarray(rgb, dtype=np.float32) + opacity * colours
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def side_by_side(original: Image.Image, overlaid: Image.Image, gap: int = 8) -> Image.Image:
    """The two images next to each other on white, ``gap`` pixels apart, vertically centred, as RGB."""
    left, right = original.convert("RGB"), overlaid.convert("RGB")
    height = max(left.height, right.height)
    canvas = Image.new("RGB", (left.width + gap + right.width, height), (255, 255, 255))
    canvas.paste(left, (0, (height - left.height) // 2))
    canvas.paste(right, (left.width + gap, (height - right.height) // 2))
    return canvas


def peak(heatmap: np.ndarray) -> tuple[int, int] | None:
    """(y, x) of the hottest pixel; None when the map has no positive finite value (nothing to point at)."""
    heat = np.nan_to_num(_checked_heatmap(heatmap), nan=0.0, posinf=0.0, neginf=0.0)
    if heat.size == 0 or float(heat.max()) <= 0.0:
        return None
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(y), int(x)


def _checked_heatmap(heatmap: np.ndarray) -> np.ndarray:
    heat = np.asarray(heatmap)
    if heat.ndim != 2:
        raise OverlayError(f"a heat map is a 2-D (height, width) array, got shape {heat.shape}")
    return heat.astype(np.float32, copy=False)


def _fitted(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``heat`` at PIL ``size`` (width, height), bilinear: a map computed at the model's input size fits any photo."""
    if heat.shape == (size[1], size[0]):
        return heat
    return np.asarray(Image.fromarray(heat).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
