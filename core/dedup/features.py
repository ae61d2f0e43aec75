"""The per-image numbers behind the quality checks, computed in the fingerprint pass (``core.dedup.fingerprints``)
from the same 64x64 reduction as the perceptual hash, and cached with the hashes."""

from __future__ import annotations

import numpy as np

FEATURE_COLUMNS = ["lum_p01", "lum_p99", "lum_mean", "sharpness", "entropy", "colourfulness"]
# Below this gray-level spread an image has no edges to be sharp or blurry: it is low-information instead,
# and the blur ratio (0/0) would be noise.
_MIN_STD_FOR_BLUR = 2.0
# Luminance weights of ITU-R 601, the ones Pillow's convert("L") uses, so scores match what "L" shows.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def quality_features(rgb: np.ndarray) -> dict[str, float]:
    """The per-image numbers behind every check, from one HxWx3 uint8 array (about 64 px a side is plenty)."""
    return {name: float(values[0]) for name, values in quality_features_batch(rgb[None]).items()}


def quality_features_batch(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """``quality_features`` for a stack of same-size images (B x H x W x 3 uint8), one array per feature.

    Whole-batch numpy operations: a few calls per batch instead of per image, so threads spend their time in
    numpy's GIL-free loops rather than in Python.
    """
    pixels = rgb.astype(np.float32)
    lum = pixels @ _LUMA
    n = len(lum)
    # One 256-bin histogram per image gives the percentiles (to the gray level, plenty here) and the entropy.
    levels = np.clip(lum + 0.5, 0, 255).astype(np.int64).reshape(n, -1) + 256 * np.arange(n)[:, None]
    counts = np.bincount(levels.ravel(), minlength=256 * n).reshape(n, 256).astype(np.float64)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    cumulative = np.cumsum(share, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(share > 0, share * np.log2(share), 0.0).sum(axis=1)
    return {
        "lum_p01": (cumulative < 0.01).sum(axis=1).astype(np.float64),
        "lum_p99": (cumulative < 0.99).sum(axis=1).astype(np.float64),
        "lum_mean": lum.reshape(n, -1).mean(axis=1).astype(np.float64),
        "sharpness": _sharpness(lum),
        "entropy": entropy + 0.0,  # + 0.0 turns -0.0 (one gray level) into 0.0
        "colourfulness": _colourfulness(pixels),
    }


def _colourfulness(pixels: np.ndarray) -> np.ndarray:
    """Mean of max(R,G,B) - min(R,G,B) per image: 0 for a gray one. Per channel: a max over an axis of 3 is slow."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return spread.reshape(len(pixels), -1).mean(axis=1).astype(np.float64)


def _sharpness(lum: np.ndarray) -> np.ndarray:
    """Std of the 4-neighbour Laplacian over std of the values, per image: edge strength relative to contrast.

    Dividing by the contrast makes a dim or low-contrast photo as sharp as a bright one; NaN for flat images.
    """
    n = len(lum)
    std = lum.reshape(n, -1).std(axis=1)
    if min(lum.shape[1:]) < 3:
        return np.full(n, np.nan)
    lap = 4 * lum[:, 1:-1, 1:-1] - lum[:, :-2, 1:-1] - lum[:, 2:, 1:-1] - lum[:, 1:-1, :-2] - lum[:, 1:-1, 2:]
    ratio = lap.reshape(n, -1).std(axis=1) / np.maximum(std, 1e-6)
    return np.where(std < _MIN_STD_FOR_BLUR, np.nan, ratio).astype(np.float64)
