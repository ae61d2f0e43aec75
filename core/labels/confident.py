"""Confident learning (Northcutt, Jiang and Chuang, "Confident learning: estimating uncertainty in dataset labels",
JAIR 70, 2021): which images' given labels are probably wrong, from out-of-sample predicted probabilities.

The method, as the paper gives it (section 3), for n images, K classes, given labels y~ and probabilities p:

1. **Per-class thresholds**: t_j = the mean of p_j over the images labelled j (a class's own average
   self-confidence), so a class the model is always unsure of is judged by its own standard.
2. **The confident joint** C (K x K, given x suggested): an image labelled i is counted in C[i][j] when p_j >= t_j;
   when several classes pass their thresholds it goes to the most probable of those (the paper's argmax over the
   classes above threshold); an image that passes none is not counted.
3. **Calibration**: each row is scaled to the number of images that carry that label, then the whole matrix to n,
   and rounded to whole images keeping each row's total (the largest remainders round up): Q = C~ / n estimates
   the joint distribution of given and true labels.
4. **Prune by noise rate**: for every off-diagonal cell (i, j), the n Q[i][j] images labelled i with the largest
   margin p_j - p_i are flagged (at least one image of each label is always left to it).
5. **Rank by self-confidence**: the flagged images, lowest p_{given} first.

Two details the paper leaves open are settled as cleanlab (its reference implementation, AGPL: never imported
here; tests compare with it) settles them, so the rankings agree: a class's diagonal count is at least 1 before
calibration (a class with no confident image still has a row to scale), and a flagged image whose best guess *is*
its given label (within 1e-6) is dropped, since nothing better can be suggested for it. Where cleanlab differs from
the paper (in step 2 it sends an image above several thresholds to its most probable class overall, even when that
class is below its own threshold), this module follows the paper; ``tests/labels/test_confident.py`` measures and
explains the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.labels.probabilities import OutOfSample

NEAR = 1e-6  # probabilities this close count as equal (a threshold met, a best guess tied with the given label)
MIN_THRESHOLD = 2 * NEAR  # a class whose images all score 0 for it still needs a threshold above the fuzz
CHUNK_CELLS = 1 << 22  # probabilities handled at once in the n x K steps (32 MB of float64)
ABSENT = 2.0  # the threshold of a class no image carries: above every probability, so never confident
SUSPECT_COLUMNS = ["path", "given", "suggested", "p_given", "p_suggested", "rank"]


@dataclass
class LabelIssues:
    """The images whose label is probably wrong, and the per-class picture, for one set of probabilities."""

    suspects: pd.DataFrame  # SUSPECT_COLUMNS, rank 1 = most likely wrong (lowest confidence in its given label)
    confident_joint: np.ndarray  # (K, K) int, calibrated: images given row's label that belong to column's class
    per_class: pd.DataFrame  # class, n_images, n_suspects, estimated_wrong, threshold
    n_images: int
    classes: list[str]
    source: dict[str, Any] = field(default_factory=dict)  # dataset, run, mode, folds, fold_runs of the probabilities
    left_out: list[dict[str, str]] = field(default_factory=list)  # images not judged, with why

    def to_json(self) -> dict[str, Any]:
        """The ``label-issues --json`` object (and what a page stores or shows)."""
        suspects = [{"image": r.path, "given": r.given, "suggested": r.suggested, "p_given": round(r.p_given, 4),
                     "p_suggested": round(r.p_suggested, 4), "rank": int(r.rank)}
                    for r in self.suspects.itertuples()]  # fmt: skip
        suggested = self.suspects.groupby(["given", "suggested"], sort=False).size()
        per_class = []
        for i, row in enumerate(self.per_class.to_dict("records")):
            mine = suggested[row["class"]].sort_values(ascending=False) if row["class"] in suggested.index else {}
            wrong = {self.classes[j]: int(self.confident_joint[i, j]) for j in np.flatnonzero(self.confident_joint[i])
                     if j != i}  # fmt: skip
            per_class.append({"class": row["class"], "n_images": int(row["n_images"]),
                              "n_suspects": int(row["n_suspects"]), "estimated_wrong": int(row["estimated_wrong"]),
                              "threshold": _rounded(row["threshold"]),
                              "suggested": {c: int(n) for c, n in dict(mine).items()},
                              "estimated_as": wrong})  # fmt: skip
        return {**self.source, "n_images": self.n_images, "n_suspects": len(self.suspects), "classes": self.classes,
                "suspects": suspects, "per_class": per_class, "left_out": self.left_out}  # fmt: skip


def _rounded(value: float) -> float | None:
    """4 decimals; NaN (a class no image carries has no threshold) as None, which JSON can hold."""
    return None if np.isnan(value) else round(float(value), 4)


def find_label_issues(oos: OutOfSample) -> LabelIssues:
    """Confident learning over ``oos`` (see the module): the suspects ranked, the confident joint, per class."""
    labels, probs, k = oos.labels, oos.probs, len(oos.classes)
    thresholds = confident_thresholds(labels, probs, k)
    joint = calibrate(confident_joint(labels, probs, thresholds), np.bincount(labels, minlength=k))
    flagged = prune_by_noise_rate(labels, probs, joint)
    order = rank_by_self_confidence(flagged, labels, probs)
    suggested = probs.argmax(axis=1)
    suspects = pd.DataFrame({
        "path": [oos.paths[i] for i in order],
        "given": [oos.given[i] for i in order],
        "suggested": [oos.classes[suggested[i]] for i in order],
        "p_given": probs[order, labels[order]].astype(float),
        "p_suggested": probs[order, suggested[order]].astype(float),
        "rank": np.arange(1, len(order) + 1),
    }, columns=SUSPECT_COLUMNS)  # fmt: skip
    counts = np.bincount(labels, minlength=k)
    per_class = pd.DataFrame({
        "class": oos.classes,
        "n_images": counts,
        "n_suspects": np.bincount(labels[order], minlength=k),
        "estimated_wrong": joint.sum(axis=1) - np.diag(joint),
        "threshold": np.where(counts > 0, thresholds, np.nan),
    })  # fmt: skip
    source = {"dataset": oos.dataset, "run": oos.run_id, "mode": oos.mode, "folds": oos.folds,
              "fold_runs": list(oos.fold_runs)}  # fmt: skip
    return LabelIssues(suspects, joint, per_class, len(labels), list(oos.classes), source, list(oos.left_out))


def confident_thresholds(labels: np.ndarray, probs: np.ndarray, k: int) -> np.ndarray:
    """t_j: the mean probability of class j over the images labelled j (step 1)."""
    sums = np.zeros(k)
    np.add.at(sums, labels, probs[np.arange(len(labels)), labels])
    counts = np.bincount(labels, minlength=k)
    means = np.divide(sums, counts, out=np.full(k, ABSENT), where=counts > 0)
    return np.maximum(means, MIN_THRESHOLD)


def confident_joint(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """C[i][j]: images labelled i confidently in class j (step 2), the diagonal at least 1."""
    k = probs.shape[1]
    joint = np.zeros((k, k), dtype=np.int64)
    for rows in row_chunks(*probs.shape):
        above = probs[rows] >= thresholds - NEAR
        confident = above.any(axis=1)
        # The most probable class among those above their threshold (the paper's tie-break).
        guess = np.where(above, probs[rows], -np.inf).argmax(axis=1)
        np.add.at(joint, (labels[rows][confident], guess[confident]), 1)
    np.fill_diagonal(joint, np.maximum(np.diag(joint), 1))
    return joint


def row_chunks(n: int, k: int) -> list[slice]:
    """Row ranges of about ``CHUNK_CELLS`` cells: the whales' 4,251 classes would otherwise need n x K temporaries
    (25,000 images: 0.85 GB each in float64)."""
    step = max(1, CHUNK_CELLS // max(k, 1))
    return [slice(start, start + step) for start in range(0, n, step)]


def calibrate(joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Step 3: rows scaled to the images carrying each label, the whole to n, rounded keeping row totals (row by
    row: K x K floats at once would be 145 MB for 4,251 classes)."""
    rows = joint.sum(axis=1).astype(float)
    carried = label_counts * (rows > 0)
    whole = label_counts.sum() / max(float(carried.sum()), 1e-100)  # 1 unless a label's row is empty
    out = np.empty_like(joint, dtype=np.int64)
    for i in range(len(joint)):
        out[i] = round_keeping_total(joint[i] / max(rows[i], 1e-100) * label_counts[i] * whole)
    return out


def round_keeping_total(values: np.ndarray) -> np.ndarray:
    """Whole numbers summing to the rounded total of ``values``: floors, then the largest remainders round up (of
    equal remainders, the earlier cell first: the paper leaves ties open, and cleanlab's order there follows numpy's
    unstable sort, which differs between machines)."""
    floors = np.floor(values)
    short = int(round(values.sum() - floors.sum()))
    # Remainders equal in exact arithmetic (two cells of one count: 2.333... and 72.333...) tie, whatever their last
    # bits say.
    remainders = np.round(values - floors, 9)
    up = np.argsort(-remainders, kind="stable")[: max(short, 0)]
    floors[up] += 1
    return floors.astype(np.int64)


def prune_by_noise_rate(labels: np.ndarray, probs: np.ndarray, joint: np.ndarray) -> np.ndarray:
    """Step 4: the flagged images (a boolean mask), without those whose best guess is their given label."""
    n, k = probs.shape
    counts = _leave_one_per_label(joint)
    np.fill_diagonal(counts, 0)
    by_label = np.split(np.argsort(labels, kind="stable"), np.cumsum(np.bincount(labels, minlength=k))[:-1])
    flagged = np.zeros(n, dtype=bool)
    for given, true in np.argwhere(counts > 0):  # the non-zero off-diagonal cells only: K x K can be 18 million
        mine = by_label[given]
        if len(mine) <= 1:  # a label on one image: nothing to weigh it against
            continue
        margin = probs[mine, true] - probs[mine, given]
        flagged[mine[np.argsort(-margin, kind="stable")[: counts[given, true]]]] = True
    for rows in row_chunks(n, k):
        boosted = probs[rows].astype(np.float64)
        boosted[np.arange(len(boosted)), labels[rows]] += NEAR  # a tie with the given label is the given label
        flagged[rows] &= boosted.argmax(axis=1) != labels[rows]
    return flagged


def _leave_one_per_label(joint: np.ndarray) -> np.ndarray:
    """The prune counts with at least one image of each label left to it: a row whose diagonal rounded to 0 gets
    1 there, taken evenly from its non-zero off-diagonal cells (the images that label keeps count as its own)."""
    counts = joint.astype(float)
    for i in np.flatnonzero(np.diag(counts) < 1):
        others = [j for j in np.flatnonzero(counts[i] > 0) if j != i]
        need = 1 - counts[i, i]
        for j in others:
            counts[i, j] = max(counts[i, j] - need / len(others), 0.0)
        counts[i, i] = 1
    return np.floor(counts + 1e-9).astype(np.int64)


def rank_by_self_confidence(flagged: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Step 5: indices of the flagged images, lowest probability of their given label first."""
    index = np.flatnonzero(flagged)
    return index[np.argsort(probs[index, labels[index]], kind="stable")]
