"""Pixel verification of hash matches: two images are copies only when they show the same picture.

A perceptual-hash match is a candidate. A copy is the same picture re-encoded, resized, turned gray, given an
alpha channel or lightly edited (brighter, darker); a *look-alike* is a different picture that happens to be
similar (two people's handwritten "1", two shots of a white wall). ``verify_pairs`` tells them apart on the 16x16
gray thumbnails, compared at the resolution both images really have (an 8x8 image holds 8x8 values: its
thumbnail is compared after averaging back to 8x8, so enlarging a copy changes nothing):

1. the thumbnails must correlate (``min_correlation``);
2. after the best brightness/contrast fit (y = a x + b, both ways), the mean difference left must be small:
   at most ``MAX_RESIDUAL`` gray levels (of 255) for images of 16 px and more, ``MAX_RESIDUAL_TINY`` below;
   a pair differing by compression noise only (``NOISE_RESIDUAL``) needs a correlation of just 0.9, as a
   low-contrast texture's copies do;
3. colour balance and brightness must agree (a grayscale copy of a colour photo is compared on brightness only);
4. flat thumbnails have nothing to correlate: they are copies only of another flat one of almost the same colour.

Where the numbers come from (measured with the test generators and ``tests.realphotos``):

* copies on the acceptance generator (re-encodes at q50-95, 0.5x-2x resizes, +-15% brightness; 3 seeds):
  correlation >= 0.973, residual <= 4.7 levels; on real photos (``tests.realphotos`` with scikit-image's 15
  photos: half and quarter size, gray, alpha, q40-q60, PNM, +-15% brightness or contrast, which clip highlights):
  correlation >= 0.974, residual <= 3.4 (low-contrast textures: see ``NOISE_RESIDUAL``); crops of one photo
  shifted by a few pixels reach 6, and count as copies below ``MAX_RESIDUAL``;
* the 1,797 digits of ``sample:digits`` (8x8): no two are the same picture, yet hundreds of pairs correlate at
  0.97-0.99; within the default search radius their residual is >= 8.5 levels (5.6 for the one pair whose pixels
  differ by 4 levels of 255 on average, 12 hash bits apart). At 8x8 a q50 JPEG re-encode changes pixels by 6-12
  levels: as much as another writer's hand. So tiny images pass only near-lossless copies (q90 re-encodes
  measured <= 2.9 levels); the rest are reported as look-alikes, never as copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_MIN_CORRELATION = 0.97
MAX_RESIDUAL = 6.0  # gray levels left after the brightness/contrast fit, images of 16 px a side and more
MAX_RESIDUAL_TINY = 4.5  # ... for images under 16 px a side (see the module docstring)
LOOK_ALIKE_CORRELATION = 0.9  # a candidate that correlates this well but is not a copy is called a look-alike
# A low-contrast texture (grass, gravel, a star field) decoded from a JPEG at reduced scale and from a PNG at full
# size correlates only 0.93-0.96 with itself, yet differs by 1.3-2.5 levels: within this, copies need only
# LOOK_ALIKE_CORRELATION (distinct pictures measured: digits >= 8.5 levels, other photos' crops >= 4.4).
NOISE_RESIDUAL = 2.75
FLAT_STD = 2.0  # a thumbnail whose gray levels spread less than this has no structure to correlate
FLAT_COLOUR_TOLERANCE = 6.0  # flat thumbnails are copies only if their mean colours agree this closely
BRIGHTNESS_TOLERANCE = 0.25  # copies may differ this much in mean brightness (+-15% edits pass), plus 8 levels
CHROMA_TOLERANCE = 0.04  # ... and this much in colour balance, r/(r+g+b) etc., when both have colour
VERIFY_BATCH = 4096  # candidate pairs verified at once: each of the ~6 (pairs x 256) float32 arrays is 4 MiB
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as Pillow's convert("L")


@dataclass
class PairCheck:
    """The verdict on candidate pairs, one entry per pair."""

    verified: np.ndarray  # bool: the same picture (a copy)
    look_alike: np.ndarray  # bool: similar (correlation >= LOOK_ALIKE_CORRELATION) but not the same picture
    correlation: np.ndarray  # float32: thumbnail correlation at the compared resolution
    residual: np.ndarray  # float32: mean gray levels left after the brightness/contrast fit (NaN if flat)


def verify_pairs(
    i: np.ndarray,
    j: np.ndarray,
    thumbs: np.ndarray,
    colours: np.ndarray,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    *,
    sides: np.ndarray | None = None,
    gray: np.ndarray | None = None,
) -> PairCheck:
    """Whether each pair (i[k], j[k]) shows the same picture.

    Args:
        i, j: row numbers of the pairs.
        thumbs: (n, 256) uint8 gray thumbnails, 16x16.
        colours: (n, 3) mean RGB.
        min_correlation: the thumbnail correlation a copy needs.
        sides: (n,) the shorter side of each image in pixels (default: 16, i.e. compared at 16x16).
        gray: (n,) bool, images without colour (default: judged from the mean colour alone).
    """
    n = len(thumbs)
    sides = np.full(n, 16) if sides is None else np.asarray(sides)
    side = np.clip(np.minimum(sides[i], sides[j]), 1, 16).astype(np.int64)
    corr = np.full(len(i), np.nan, np.float32)
    residual = np.full(len(i), np.nan, np.float32)
    flat_a = np.zeros(len(i), bool)
    flat_b = np.zeros(len(i), bool)
    for s in np.unique(side):
        for lo in range(0, len(i), VERIFY_BATCH):
            k = np.nonzero(side[lo : lo + VERIFY_BATCH] == s)[0] + lo
            a, b = _at_side(thumbs[i[k]], int(s)), _at_side(thumbs[j[k]], int(s))
            corr[k], residual[k], flat_a[k], flat_b[k] = _compare(a, b)
    ci, cj = colours[i].astype(np.float32), colours[j].astype(np.float32)
    no_colour = _no_colour(colours) if gray is None else np.asarray(gray, bool)
    limit = np.where(side >= 16, MAX_RESIDUAL, MAX_RESIDUAL_TINY)
    textured = ~flat_a & ~flat_b & _same_colour(ci, cj, no_colour[i] | no_colour[j])
    close = (corr >= min_correlation) & (residual <= limit)
    noise_only = (corr >= min(LOOK_ALIKE_CORRELATION, min_correlation)) & (residual <= NOISE_RESIDUAL)
    verified = textured & (close | noise_only)
    verified |= flat_a & flat_b & (np.abs(ci - cj).max(axis=1) <= FLAT_COLOUR_TOLERANCE)
    look_alike = ~verified & ~flat_a & ~flat_b & (corr >= min(LOOK_ALIKE_CORRELATION, min_correlation))
    return PairCheck(verified, look_alike, corr, residual)


def _at_side(thumbs: np.ndarray, side: int) -> np.ndarray:
    """16x16 thumbnails averaged down to side x side (area weights), as (m, side*side) float32."""
    values = thumbs.astype(np.float32).reshape(-1, 16, 16)
    if side >= 16:
        return values.reshape(len(values), -1)
    weights = _area_weights(side)
    return np.einsum("ai,mij,bj->mab", weights, values, weights).reshape(len(values), -1)


def _area_weights(side: int) -> np.ndarray:
    """(side, 16) matrix averaging 16 cells into ``side`` equal spans (partial cells weighted by overlap)."""
    edges = np.linspace(0, 16, side + 1)
    cells = np.arange(17)
    overlap = np.clip(np.minimum(edges[1:, None], cells[None, 1:]) - np.maximum(edges[:-1, None], cells[None, :-1]),
                      0, None)  # fmt: skip
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Correlation, symmetric brightness/contrast-fit residual, and flatness of row pairs (m, p) x (m, p)."""
    ca, cb = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    saa, sbb, sab = (ca * ca).sum(axis=1), (cb * cb).sum(axis=1), (ca * cb).sum(axis=1)
    corr = sab / np.sqrt(np.maximum(saa * sbb, 1e-12))
    # Least squares both ways (b from a, a from b): a copy fits either way, and the verdict must not depend on order.
    fit_b = np.abs(cb - (sab / np.maximum(saa, 1e-12))[:, None] * ca).mean(axis=1)
    fit_a = np.abs(ca - (sab / np.maximum(sbb, 1e-12))[:, None] * cb).mean(axis=1)
    flat_a, flat_b = ca.std(axis=1) < FLAT_STD, cb.std(axis=1) < FLAT_STD
    residual = np.where(flat_a | flat_b, np.nan, (fit_a + fit_b) / 2)
    return corr.astype(np.float32), residual.astype(np.float32), flat_a, flat_b


def _no_colour(colours: np.ndarray) -> np.ndarray:
    """Images whose mean colour is gray (used when the caller has no per-pixel colour measure)."""
    c = colours.astype(np.float32)
    return (c.max(axis=1) - c.min(axis=1)) < 2.0


def _same_colour(ci: np.ndarray, cj: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """Brightness within BRIGHTNESS_TOLERANCE (plus 8 levels) and, when both have colour, colour balance within
    CHROMA_TOLERANCE. Brightness is compared as luminance, so a grayscale copy of a colour photo matches it."""
    li, lj = ci @ _LUMA, cj @ _LUMA
    bright_ok = np.abs(li - lj) <= BRIGHTNESS_TOLERANCE * np.maximum(li, lj) + 8
    si, sj = ci.sum(axis=1), cj.sum(axis=1)
    chroma = np.abs(ci / np.maximum(si, 1)[:, None] - cj / np.maximum(sj, 1)[:, None]).max(axis=1)
    # Dark pictures carry little colour information: their chroma ratios are noise, so they are not compared.
    dark = np.minimum(si, sj) < 3 * 24
    return bright_ok & (gray | dark | (chroma <= CHROMA_TOLERANCE))
