"""Metrics of a classifier from its stored per-image predictions (``core.train.predictions``).

scikit-learn computes every metric it has: ``accuracy_score``, ``top_k_accuracy_score`` (on the full probability
vectors, stored up to 100 classes; beyond that the true class's stored rank among the top 5 gives the same
number), ``precision_recall_fscore_support`` (macro, weighted and per class), ``confusion_matrix`` and
``log_loss``. Two are not in scikit-learn and are written out here:

* MAP@5 as the whale report (Kaggle's humpback competition) scored it: an image scores 1, 1/2, 1/3, 1/4 or 1/5
  when its true label is the model's 1st..5th guess, and 0 beyond; MAP@5 is the mean over the images.
* calibration (``core.evaluate.calibration``): the reliability curve and the expected calibration error.

Only the top-5, the true class's rank and its probability are needed, so a 4,251-class model costs the same as
a 3-class one: 10,000 images in a few tens of milliseconds (bench/bench_eval.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.evaluate.calibration import Calibration, calibration
from core.train.predictions import TOP_K, StoredPredictions

MAP_K = 5


@dataclass
class Metrics:
    """Every number of one split's evaluation. Per-class rows are in the model's class order."""

    n: int
    n_classes: int
    accuracy: float
    top_k: int  # k of ``top_k_accuracy``: 5, or one less than the classes when there are 5 or fewer
    top_k_accuracy: float
    top5: float  # top-5 accuracy (1.0 by definition with 5 classes or fewer)
    macro: dict[str, float]  # precision, recall, f1
    weighted: dict[str, float]
    per_class: pd.DataFrame  # label, precision, recall, f1, support, correct, accuracy, confused_with
    confusion: np.ndarray  # rows: true class, columns: predicted class (model's class order)
    labels: list[str]
    map5: float
    log_loss: float
    calibration: Calibration
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The metric part of the ``evaluate --json`` object (plain Python numbers)."""
        per_class = [{"label": r.label, "precision": _f(r.precision), "recall": _f(r.recall), "f1": _f(r.f1),
                      "support": int(r.support), "accuracy": _f(r.accuracy)}
                     for r in self.per_class.itertuples()]  # fmt: skip
        return {
            "n": self.n,
            "accuracy": _f(self.accuracy),
            "top5": _f(self.top5),
            "top_k": {"k": self.top_k, "accuracy": _f(self.top_k_accuracy)},
            "macro": {k: _f(v) for k, v in self.macro.items()},
            "weighted": {k: _f(v) for k, v in self.weighted.items()},
            "per_class": per_class,
            "confusion": {"labels": list(self.labels), "matrix": self.confusion.astype(int).tolist()},
            "map5": _f(self.map5),
            "ece": _f(self.calibration.ece),
            "log_loss": _f(self.log_loss),
            "calibration": self.calibration.to_json(),
        }


def _f(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def compute_metrics(predictions: StoredPredictions) -> Metrics:
    """All metrics of one split's stored predictions (an empty split raises ValueError: nothing to measure)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    frame, classes = predictions.frame, predictions.classes
    if not len(frame):
        raise ValueError("no predictions to measure")
    index = np.arange(len(classes))
    y_true, y_pred = frame["target"].to_numpy(), _predicted_index(frame, classes)
    k = top_k_for(len(classes))
    macro = precision_recall_fscore_support(y_true, y_pred, labels=index, average="macro", zero_division=0)
    weighted = precision_recall_fscore_support(y_true, y_pred, labels=index, average="weighted", zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=index)
    top5 = top_k_accuracy(predictions, TOP_K)
    return Metrics(
        n=len(frame), n_classes=len(classes), accuracy=float(accuracy_score(y_true, y_pred)), top_k=k,
        top_k_accuracy=top5 if k == TOP_K else top_k_accuracy(predictions, k), top5=top5,
        macro=_prf(macro), weighted=_prf(weighted), per_class=per_class_table(y_true, y_pred, classes, matrix),
        confusion=matrix, labels=list(classes), map5=map_at_5(frame["rank"].to_numpy()),
        log_loss=log_loss_of(frame["p_true"].to_numpy()),
        calibration=calibration(frame["p1"].to_numpy(), frame["pred1"].to_numpy() == frame["label"].to_numpy()),
    )  # fmt: skip


def top_k_for(n_classes: int) -> int:
    """The k worth reporting: 5, or one less than the classes (top-k of every class is always 100%)."""
    return max(1, min(TOP_K, n_classes - 1))


def _predicted_index(frame: pd.DataFrame, classes: list[str]) -> np.ndarray:
    index_of = {c: i for i, c in enumerate(classes)}
    return frame["pred1"].map(index_of).to_numpy(dtype=np.int64)


def _prf(values: tuple) -> dict[str, float]:
    precision, recall, f1, _ = values
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def top_k_accuracy(predictions: StoredPredictions, k: int) -> float:
    """Share of images whose true class is among the model's ``k`` most probable (k <= 5)."""
    from sklearn.metrics import top_k_accuracy_score

    n_classes = len(predictions.classes)
    rank = predictions.frame["rank"].to_numpy()
    if k >= n_classes:
        return 1.0
    if k == 1:  # plain accuracy; scikit-learn's top-k wants one score column for two classes
        return float(np.mean(rank == 1))
    probs = predictions.full_probs
    if probs is not None:
        return float(
            top_k_accuracy_score(predictions.frame["target"].to_numpy(), probs, k=k, labels=np.arange(n_classes))
        )
    return float(np.mean((rank >= 1) & (rank <= k)))


def map_at_5(rank: np.ndarray) -> float:
    """Mean average precision at 5 with one true label per image: mean of 1/rank for ranks 1..5, 0 beyond.

    ``rank`` holds the true label's position among the model's guesses (1 = top guess), 0 when it is not in
    the top 5.
    """
    rank = np.asarray(rank, dtype=np.float64)
    if not len(rank):
        return float("nan")
    scores = np.where((rank >= 1) & (rank <= MAP_K), 1.0 / np.maximum(rank, 1), 0.0)
    return float(scores.mean())


def log_loss_of(p_true: np.ndarray) -> float:
    """Mean cross-entropy, ``sklearn.metrics.log_loss``. Only the true class's probability enters it, so it is
    computed on the two-column split (p_true, 1 - p_true): the same number as on the full vectors."""
    from sklearn.metrics import log_loss

    p = np.clip(np.asarray(p_true, dtype=np.float64), 0.0, 1.0)
    return float(log_loss(np.zeros(len(p), dtype=int), np.column_stack([p, 1.0 - p]), labels=[0, 1]))


def per_class_table(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], matrix: np.ndarray) -> pd.DataFrame:
    """One row per class: precision, recall, F1 and support (scikit-learn), right answers, accuracy (= recall:
    the share of the class's images labelled right) and the class its images are most often mistaken for."""
    from sklearn.metrics import precision_recall_fscore_support

    index = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=index, average=None,
                                                                     zero_division=0)  # fmt: skip
    correct = np.diag(matrix)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    worst = off.argmax(1)
    confused = [classes[j] if off[i, j] else "" for i, j in enumerate(worst)]
    accuracy = np.divide(correct, support, out=np.full(len(classes), np.nan), where=support > 0)
    return pd.DataFrame({"label": classes, "precision": precision, "recall": recall, "f1": f1, "support": support,
                         "correct": correct, "accuracy": accuracy, "confused_with": confused,
                         "confused_count": off[index, worst]})  # fmt: skip


def confused_pairs(metrics: Metrics, limit: int = 10) -> pd.DataFrame:
    """The (true, predicted) class pairs with the most mistakes, most first: true, predicted, count, share (of
    the true class's images)."""
    off = metrics.confusion.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    counts = off[rows, cols]
    order = np.lexsort((cols, rows, -counts))[:limit]
    support = metrics.confusion.sum(1)
    return pd.DataFrame({"true": [metrics.labels[r] for r in rows[order]],
                         "predicted": [metrics.labels[c] for c in cols[order]], "count": counts[order],
                         "share": counts[order] / np.maximum(support[rows[order]], 1)})  # fmt: skip


def worst_classes(metrics: Metrics) -> pd.DataFrame:
    """The per-class table, classes with test images first, worst F1 first (then fewer images, then name)."""
    table = metrics.per_class.copy()
    table["_empty"] = table["support"] == 0
    table = table.sort_values(["_empty", "f1", "support", "label"], kind="stable")
    return table.drop(columns="_empty").reset_index(drop=True)


def confusion_view(metrics: Metrics, max_classes: int = 30) -> tuple[list[str], np.ndarray]:
    """The confusion matrix cut to at most ``max_classes`` classes (those in the most mistakes, in class order):
    thousands of classes do not fit a screen, and the rows that matter are those with mistakes."""
    n = len(metrics.labels)
    if n <= max_classes:
        return list(metrics.labels), metrics.confusion
    off = metrics.confusion.copy()
    np.fill_diagonal(off, 0)
    involvement = off.sum(0) + off.sum(1)
    keep = np.sort(np.lexsort((np.arange(n), -involvement))[:max_classes])
    return [metrics.labels[i] for i in keep], metrics.confusion[np.ix_(keep, keep)]
