"""core.evaluate.metrics and calibration against scikit-learn on the same predictions, and MAP@5 and the
calibration error worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from core.evaluate.calibration import calibration
from core.evaluate.metrics import (
    compute_metrics,
    confused_pairs,
    confusion_view,
    map_at_5,
    top_k_for,
    worst_classes,
)
from core.train.predictions import FULL_PROBS_MAX_CLASSES, StoredPredictions, from_probabilities


def random_predictions(n: int, n_classes: int, seed: int = 0, skill: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(targets, softmax probabilities): logits that favour the true class by ``skill``, so some are right."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, n_classes, n)
    targets[targets == n_classes - 1] = 0  # the last class never occurs in the truth: zero support
    logits = rng.normal(0, 1.5, (n, n_classes))
    logits[np.arange(n), targets] += skill
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return targets, probs.astype(np.float32)


def stored(targets: np.ndarray, probs: np.ndarray) -> StoredPredictions:
    classes = [f"class {i}" for i in range(probs.shape[1])]
    return from_probabilities([f"img{i}.png" for i in range(len(targets))], targets, probs, classes)


@pytest.mark.parametrize("n_classes", [7, FULL_PROBS_MAX_CLASSES + 50])
def test_every_metric_matches_scikit_learn_on_the_same_predictions(n_classes: int) -> None:
    targets, probs = random_predictions(400, n_classes, seed=n_classes)
    preds = stored(targets, probs)
    assert (preds.probs is not None) == (n_classes <= FULL_PROBS_MAX_CLASSES)  # beyond: the top-5 and ranks only
    m = compute_metrics(preds)
    y_pred = probs.argmax(1)
    labels = np.arange(n_classes)
    assert m.accuracy == pytest.approx(accuracy_score(targets, y_pred))
    assert m.top5 == pytest.approx(top_k_accuracy_score(targets, probs, k=5, labels=labels))
    assert m.top_k == 5 and m.top_k_accuracy == m.top5
    for average, got in (("macro", m.macro), ("weighted", m.weighted)):
        p, r, f, _ = precision_recall_fscore_support(targets, y_pred, labels=labels, average=average, zero_division=0)
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f))
    p, r, f, s = precision_recall_fscore_support(targets, y_pred, labels=labels, average=None, zero_division=0)
    table = m.per_class
    assert np.allclose(table["precision"], p) and np.allclose(table["recall"], r) and np.allclose(table["f1"], f)
    assert list(table["support"]) == list(s) and table["support"].iloc[-1] == 0
    seen = s > 0  # accuracy of a class = share of its images labelled right; none for a class without images
    assert np.allclose(table["accuracy"][seen], r[seen]) and table["accuracy"][~seen].isna().all()
    assert (m.confusion == confusion_matrix(targets, y_pred, labels=labels)).all()
    exact = probs.astype(np.float64) / probs.astype(np.float64).sum(1, keepdims=True)  # float32 rows sum to 1 +- 1e-7
    assert m.log_loss == pytest.approx(log_loss(targets, exact, labels=labels), rel=1e-6)
    curve_true, curve_pred = calibration_curve(y_pred == targets, probs.max(1), n_bins=15, strategy="uniform")
    used = m.calibration.count > 0
    assert np.allclose(m.calibration.accuracy[used], curve_true)
    assert np.allclose(m.calibration.confidence[used], curve_pred)


def test_map_at_5_matches_a_hand_worked_case() -> None:
    # 5 images, 6 classes; the true class is the model's 1st, 2nd, 7th-ish (beyond 5), 5th and 3rd guess.
    order = {0: [0, 1, 2, 3, 4, 5], 1: [1, 0, 2, 3, 4, 5], 2: [1, 2, 3, 4, 5, 0], 3: [1, 2, 3, 4, 0, 5],
             4: [2, 1, 0, 3, 4, 5]}  # fmt: skip
    probs = np.zeros((5, 6), np.float32)
    for image, ranking in order.items():
        probs[image, ranking] = [0.40, 0.25, 0.15, 0.10, 0.06, 0.04]
    targets = np.zeros(5, np.int64)  # the true class is class 0 for every image
    frame = stored(targets, probs).frame
    assert list(frame["rank"]) == [1, 2, 0, 5, 3]
    # (1 + 1/2 + 0 + 1/5 + 1/3) / 5 = (30 + 15 + 0 + 6 + 10) / 150
    assert map_at_5(frame["rank"].to_numpy()) == pytest.approx(61 / 150)
    assert compute_metrics(stored(targets, probs)).map5 == pytest.approx(61 / 150)


def test_calibration_error_matches_a_hand_worked_case() -> None:
    # Four images at 95% confidence, three right; two at 55%, one right:
    # ECE = 4/6 * |0.95 - 0.75| + 2/6 * |0.55 - 0.50| = (0.8 + 0.1) / 6 = 0.15
    cal = calibration(np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55]), np.array([1, 1, 1, 0, 1, 0], bool))
    assert cal.ece == pytest.approx(0.15)
    assert cal.count.sum() == 6 and cal.count[14] == 4 and cal.count[8] == 2
    assert cal.gap == pytest.approx(0.15)  # overconfident: its confidence is above its accuracy everywhere


def test_calibration_bins_are_cut_as_scikit_learn_cuts_them() -> None:
    edges = np.linspace(0, 1, 16)
    confidence = np.concatenate([edges, [0.0, 1.0]])  # values exactly on the edges
    correct = np.arange(len(confidence)) % 2 == 0
    cal = calibration(confidence, correct)
    want_true, want_pred = calibration_curve(correct, confidence, n_bins=15)
    used = cal.count > 0
    assert np.allclose(cal.accuracy[used], want_true) and np.allclose(cal.confidence[used], want_pred)


def test_top_k_is_below_the_number_of_classes() -> None:
    assert [top_k_for(n) for n in (2, 3, 5, 6, 1000)] == [1, 2, 4, 5, 5]
    targets, probs = random_predictions(60, 3, seed=3, skill=0.5)
    m = compute_metrics(stored(targets, probs))
    assert m.top5 == 1.0  # by definition with 3 classes
    assert m.top_k == 2 and m.top_k_accuracy == pytest.approx(
        top_k_accuracy_score(targets, probs, k=2, labels=np.arange(3))
    )


def test_confused_pairs_worst_classes_and_the_cut_matrix() -> None:
    targets, probs = random_predictions(500, 40, seed=5, skill=1.0)
    m = compute_metrics(stored(targets, probs))
    pairs = confused_pairs(m, limit=5)
    off = m.confusion - np.diag(np.diag(m.confusion))
    assert pairs["count"].iloc[0] == off.max() and list(pairs["count"]) == sorted(pairs["count"], reverse=True)
    worst = worst_classes(m)
    with_images = worst[worst["support"] > 0]
    assert list(with_images["f1"]) == sorted(with_images["f1"]) and worst["support"].iloc[-1] == 0
    labels, matrix = confusion_view(m, max_classes=10)
    assert len(labels) == 10 and matrix.shape == (10, 10)
    involvement = off.sum(0) + off.sum(1)
    kept = [m.labels.index(label) for label in labels]
    assert min(involvement[kept]) >= sorted(involvement, reverse=True)[9]  # the classes in the most mistakes


def test_two_classes_and_a_test_split_holding_one_class_only() -> None:
    """k = 1 with two classes (top-1 is the accuracy); scikit-learn's top-k refuses two score columns there."""
    targets = np.zeros(6, np.int64)
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55], [0.99, 0.01]], np.float32)
    m = compute_metrics(stored(targets, probs))
    assert m.top_k == 1 and m.top_k_accuracy == m.accuracy == pytest.approx(4 / 6) and m.top5 == 1.0
    assert m.per_class["support"].tolist() == [6, 0] and m.map5 == pytest.approx((4 + 2 * 0.5) / 6)
