"""Data-quality checks in the style of cleanvision: dark, bright, blurry, low-information, odd shape, odd size, grayscale.

The per-image numbers (``core.dedup.features``) are computed by ``core.dedup.fingerprints`` in the same decode pass as
the perceptual hash, from the same 64x64 reduction of the image, and cached with the hashes. The checks here
only compare those numbers (and the width/height from the scan) with thresholds a user can move, so moving a
slider on the page re-runs nothing but this module.

Every check gives a score per image and flags the image when the score is past its threshold:

=================  ===============================================  ===================
issue              score                                            flagged when
=================  ===============================================  ===================
dark               99th percentile of luminance (0..255)            score < dark
bright             1st percentile of luminance (0..255)             score > bright
blurry             std of the Laplacian / std of the gray values    score < blurry
low_information    share of pixels away from the main gray level    score < low_information
odd_aspect         longer side / shorter side                       score > odd_aspect
odd_size           robust z of log(width*height) in the dataset     abs(score) > odd_size
grayscale          mean spread between R, G and B (0..255)          score < grayscale, in a
                                                                    mostly colour dataset
=================  ===============================================  ===================

Low information means the picture shows (almost) nothing: a blank page, a lens cap, one colour. It is the share
of pixels more than a few gray levels from the picture's main level, not the entropy of its gray levels: a
handwritten "1" (two levels, a quarter of the pixels ink) has under 2 bits of gray-level entropy, as little as a
blank picture with faint noise, yet it shows a digit.

Limits: blur is judged on the 64x64 reduction, so only blur visible at that size (a Gaussian radius of a few
percent of the picture) is found, and a naturally smooth picture (a plain sky, a soft gradient) scores like a
blurred one; cleanvision, which also looks at 64 px, has the same limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.common.errors import CoreError
from core.datasets.scan import ScanResult, scan_dataset
from core.datasets.sources import DatasetRef
from core.dedup.fingerprints import hash_dataset

# Which scores are bad: "low" (flagged below the threshold), "high" (above) or "abs" (far from 0 either way).
# The one place the directions live: the masks, the page's "worst first" and its words all read it.
DIRECTIONS: dict[str, str] = {"dark": "low", "bright": "high", "blurry": "low", "low_information": "low",
                              "odd_aspect": "high", "odd_size": "abs", "grayscale": "low"}  # fmt: skip
ISSUES = tuple(DIRECTIONS)
ISSUE_COLUMNS = ["path", "issue", "score"]


@dataclass
class QualityThresholds:
    """Where each check starts flagging (see the module table for what each score is).

    Defaults were set on generated photo-like images (gradients, shapes, textures, sensor noise) so that none of
    them is flagged, while the injected bad images (black, white, Gaussian-blurred, one colour, 4:1 strips,
    tiny ones, grayscale among colour ones) all are.
    """

    dark: float = 40.0  # even the brightest 1% of pixels darker than this (of 255): an almost black image
    bright: float = 225.0  # even the darkest 1% brighter than this: washed out / almost white
    # Edges weaker than 0.12 of the contrast. Generated photos: median 0.6, 0.2% below 0.19, the smoothest of 1,100
    # at 0.094; Gaussian blur of 4-6% of the side scores 0.05-0.15 (uint8 rounding keeps heavy blur near 0.1).
    blurry: float = 0.12
    # Under 2% of the pixels away from the main gray level: blank or one colour. Ordinary pictures are far above
    # (generated photos >= 0.5; the 1,797 digits >= 0.25, the ink of the thinnest "1").
    low_information: float = 0.02
    odd_aspect: float = 2.5  # 16:9 is 1.78, a 2:1 banner 2.0; strips and panoramas are past 2.5
    odd_size: float = 3.0  # robust z (spread floored at ln 2): about 8x the area away from the median
    grayscale: float = 4.0  # colour spread under 4/255 counts as gray (JPEG chroma noise stays below it)
    mostly_colour: float = 0.8  # grayscale is only an issue when at least this share of images has colour

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not np.isfinite(value) or value < 0:
                raise CoreError(f"quality threshold {name}={value} must be a finite number >= 0")
        if self.mostly_colour > 1:
            raise CoreError(f"mostly_colour={self.mostly_colour} must be a share between 0 and 1")


def quality_scores(features: pd.DataFrame) -> pd.DataFrame:
    """One score column per issue for each row of ``features`` (needs ``width``, ``height`` and FEATURE_COLUMNS)."""
    area = np.log(features["width"].to_numpy(float) * features["height"].to_numpy(float))
    median = np.median(area) if len(area) else 0.0
    # 1.4826 * MAD estimates the std for normal data; floored so a set of equal sizes does not flag a 2x image.
    spread = max(1.4826 * float(np.median(np.abs(area - median))) if len(area) else 0.0, np.log(2))
    long_side = features[["width", "height"]].max(axis=1).to_numpy(float)
    short_side = features[["width", "height"]].min(axis=1).clip(lower=1).to_numpy(float)
    return pd.DataFrame(
        {
            "path": features["path"].to_numpy(),
            "dark": features["lum_p99"].to_numpy(float),
            "bright": features["lum_p01"].to_numpy(float),
            "blurry": features["sharpness"].to_numpy(float),
            "low_information": features["content_share"].to_numpy(float),
            "odd_aspect": long_side / short_side,
            "odd_size": (area - median) / spread,
            "grayscale": features["colourfulness"].to_numpy(float),
        }
    )


def issue_masks(scores: pd.DataFrame, thresholds: QualityThresholds) -> dict[str, np.ndarray]:
    """A boolean mask per issue: which rows of ``scores`` the thresholds flag (NaN scores are never flagged).

    Grayscale is flagged only in a mostly colour dataset (a set of X-rays is gray by nature).
    """
    masks = {issue: past_threshold(scores[issue].to_numpy(float), getattr(thresholds, issue), direction)
             for issue, direction in DIRECTIONS.items()}  # fmt: skip
    gray = masks["grayscale"]
    colour_share = 1.0 - float(gray.mean()) if len(gray) else 0.0
    masks["grayscale"] = gray & (colour_share >= thresholds.mostly_colour)
    return masks


def past_threshold(values: np.ndarray, threshold: float, direction: str) -> np.ndarray:
    """Which ``values`` are past ``threshold`` in the bad ``direction`` (NaN never is)."""
    if direction == "low":
        return values < threshold
    if direction == "high":
        return values > threshold
    return np.abs(values) > threshold


def worst_first(scores: pd.DataFrame, issue: str) -> pd.DataFrame:
    """``scores`` ordered from the worst score for ``issue`` to the best (NaN last)."""
    direction = DIRECTIONS[issue]
    order = scores[issue].abs() if direction == "abs" else scores[issue]
    return scores.loc[order.sort_values(ascending=direction == "low", na_position="last").index]


def quality_issues(features: pd.DataFrame, thresholds: QualityThresholds | None = None) -> pd.DataFrame:
    """Flagged images, one row per (image, issue): columns path, issue, score; ordered by issue then path."""
    scores = quality_scores(features)
    masks = issue_masks(scores, thresholds or QualityThresholds())
    parts = [
        pd.DataFrame({"path": scores.loc[mask, "path"], "issue": issue, "score": scores.loc[mask, issue]})
        for issue, mask in masks.items()
        if mask.any()
    ]
    if not parts:
        return pd.DataFrame(columns=ISSUE_COLUMNS)
    return pd.concat(parts, ignore_index=True)[ISSUE_COLUMNS]


def issue_counts(issues: pd.DataFrame) -> dict[str, int]:
    """How many images each issue flags, every issue listed (0 when none)."""
    counts = issues["issue"].value_counts()
    return {issue: int(counts.get(issue, 0)) for issue in ISSUES}


@dataclass
class QualityReport:
    """Quality of a dataset: ``scores`` (path + one column per issue), ``issues`` (path, issue, score), counts."""

    scores: pd.DataFrame
    issues: pd.DataFrame
    counts: dict[str, int]
    thresholds: QualityThresholds

    def summary(self) -> dict[str, object]:
        return {"counts": self.counts, "issues": self.issues.to_dict("records"), "thresholds": asdict(self.thresholds)}


def quality_report(features: pd.DataFrame, thresholds: QualityThresholds | None = None) -> QualityReport:
    """Scores, flagged issues and counts from a fingerprint table (``HashTable.table``); no image is opened."""
    thresholds = thresholds or QualityThresholds()
    issues = quality_issues(features, thresholds)
    return QualityReport(quality_scores(features), issues, issue_counts(issues), thresholds)


def check_quality(
    ref: DatasetRef,
    cache_dir: Path | None,
    thresholds: QualityThresholds | None = None,
    *,
    scan: ScanResult | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QualityReport:
    """Scan and fingerprint ``ref`` (both cached; the phash cache the duplicate search uses) and check quality."""
    scan = scan or scan_dataset(ref, cache_dir, workers=workers, progress=progress)
    return quality_report(hash_dataset(scan, cache_dir, workers=workers, progress=progress).table, thresholds)
