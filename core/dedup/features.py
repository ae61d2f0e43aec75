"""The per-image numbers behind the quality checks, computed in the fingerprint pass (``core.dedup.fingerprints``)
from the same 64x64 reduction as the perceptual hash, and cached with the hashes."""

from __future__ import annotations

import numpy as np

FEATURE_COLUMNS = ["lum_p01", "lum_p99", "lum_mean", "sharpness", "entropy", "content_share", "colourfulness"]
# Below this gray-level spread an image has no edges to be sharp or blurry: it is low-information instead,
# and the blur ratio (0/0) would be noise.
_MIN_STD_FOR_BLUR = 2.0
# A pixel shows something when its gray level is more than this far from the picture's main level: JPEG noise on
# a one-colour picture stays within it (0 levels measured at q50-95 on 640x480, after the 64x64 reduction).
CONTENT_TOLERANCE = 6
# Luminance weights of ITU-R 601, the ones Pillow's convert("L") uses, so scores match what "L" shows.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def quality_features(rgb: np.ndarray) -> dict[str, float]:
    """The per-image numbers behind every check, from one HxWx3 uint8 array (about 64 px a side is plenty)."""
    return {name: float(values[0]) for name, values in quality_features_batch(rgb[None]).items()}


def quality_features_batch(rgb: np.ndarray, gray: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``quality_features`` for a stack of same-size images (B x H x W x 3 uint8), one array per feature.

    ``gray`` (B x H x W uint8, Pillow's ``convert("L")`` of the same images) saves computing the luminance.
    Whole-batch numpy operations: a few calls per batch instead of per image, so threads spend their time in
    numpy's GIL-free loops rather than in Python.
    """
    n = len(rgb)
    if gray is None:
        gray = np.clip(rgb.astype(np.float32) @ _LUMA + 0.5, 0, 255).astype(np.uint8)
    # One 256-bin histogram per image gives the percentiles (to the gray level, plenty here) and the entropy.
    levels = gray.reshape(n, -1).astype(np.int64) + 256 * np.arange(n)[:, None]
    counts = np.bincount(levels.ravel(), minlength=256 * n).reshape(n, 256).astype(np.float64)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    cumulative = np.cumsum(share, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(share > 0, share * np.log2(share), 0.0).sum(axis=1)
    lum = gray.astype(np.float32)
    return {
        "lum_p01": (cumulative < 0.01).sum(axis=1).astype(np.float64),
        "lum_p99": (cumulative < 0.99).sum(axis=1).astype(np.float64),
        "lum_mean": lum.reshape(n, -1).mean(axis=1).astype(np.float64),
        "sharpness": _sharpness(lum),
        "entropy": entropy + 0.0,  # + 0.0 turns -0.0 (one gray level) into 0.0
        "content_share": _content_share(share),
        "colourfulness": _colourfulness(rgb),
    }


def _content_share(share: np.ndarray) -> np.ndarray:
    """Share of the pixels more than CONTENT_TOLERANCE levels from the main gray level (the histogram's peak).

    0 for a blank or one-colour picture; a handwritten "1" on black (two gray levels, a quarter of the pixels ink)
    scores 0.25, where a histogram entropy would call it as empty as a blank page.
    """
    main = share.argmax(axis=1)
    level = np.arange(share.shape[1])[None, :]
    near = np.abs(level - main[:, None]) <= CONTENT_TOLERANCE
    return 1.0 - np.where(near, share, 0.0).sum(axis=1)


def _colourfulness(rgb: np.ndarray) -> np.ndarray:
    """Mean of max(R,G,B) - min(R,G,B) per image: 0 for a gray one. Per channel on uint8: a max over an axis of 3
    is slow, and uint8 moves a quarter of the bytes float32 would."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return spread.reshape(len(rgb), -1).mean(axis=1, dtype=np.float64)


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
