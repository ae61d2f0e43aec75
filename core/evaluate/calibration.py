"""Calibration: does "90% sure" come true 90% of the time?

The reliability curve bins the images by the model's confidence (the probability of its top class) into 15
equal-width bins over [0, 1] and compares, per bin, the mean confidence with the share of right answers. The
expected calibration error (ECE, Guo et al. 2017, "On calibration of modern neural networks") is the mean gap,
weighted by each bin's share of the images. Bins are right-closed, as ``sklearn.calibration.calibration_curve``
cuts them (a confidence of exactly 0.4 falls in the bin ending at 0.4), so its curve and ours agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

N_BINS = 15


@dataclass
class Calibration:
    """Per bin (``N_BINS``): edges, images, mean confidence, share right (NaN in empty bins); and the ECE."""

    edges: np.ndarray  # N_BINS + 1
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float

    @property
    def gap(self) -> float:
        """Mean confidence minus accuracy over all images: > 0 overconfident, < 0 underconfident."""
        n = self.count.sum()
        if not n:
            return float("nan")
        used = self.count > 0
        return float(((self.confidence - self.accuracy)[used] * self.count[used]).sum() / n)

    def to_json(self) -> dict[str, Any]:
        used = self.count > 0
        return {"bins": [{"low": round(float(self.edges[i]), 6), "high": round(float(self.edges[i + 1]), 6),
                          "n": int(self.count[i]), "confidence": round(float(self.confidence[i]), 6),
                          "accuracy": round(float(self.accuracy[i]), 6)}
                         for i in np.flatnonzero(used)], "ece": round(float(self.ece), 6)}  # fmt: skip


def calibration(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> Calibration:
    """The reliability curve and ECE of top-class ``confidence`` (0..1) against ``correct`` (bool) per image."""
    confidence = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence)  # as calibration_curve: right-closed bins
    count = np.bincount(bins, minlength=n_bins)
    sums = np.bincount(bins, weights=confidence, minlength=n_bins)
    hits = np.bincount(bins, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, accuracy = sums / count, hits / count
    used = count > 0
    n = len(confidence)
    ece = float((np.abs(mean_conf - accuracy)[used] * count[used]).sum() / n) if n else float("nan")
    return Calibration(edges, count, mean_conf, accuracy, ece)
