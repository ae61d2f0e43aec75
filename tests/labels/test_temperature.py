"""core.labels.temperature: the fit agrees with scikit-learn's temperature scaling, and it only ever sharpens
the answers of networks trained with label smoothing."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from core.labels import temperature as t


class _Table(ClassifierMixin, BaseEstimator):
    """A classifier whose answers are a table of probabilities, row i for the sample [i]: sklearn's calibration
    wants an estimator, the label check has only probabilities."""

    def __init__(self, probs: np.ndarray | None = None) -> None:
        self.probs = probs

    def fit(self, _x, _y):
        self.classes_ = np.arange(self.probs.shape[1])
        return self

    def predict_proba(self, x):
        return self.probs[np.asarray(x)[:, 0].astype(int)]

    def predict(self, x):
        return self.predict_proba(x).argmax(axis=1)


def _answers(n: int, k: int, sharpness: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a noisy classifier (the true class usually, not always, first) and the true labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 2.0
    probs = np.exp(logits * sharpness)
    return probs / probs.sum(axis=1, keepdims=True), labels


@pytest.mark.parametrize("sharpness", [0.3, 1.0, 3.0])
def test_the_fit_is_scikit_learns_temperature_scaling(sharpness: float) -> None:
    probs, labels = _answers(600, 6, sharpness)
    x = np.arange(len(labels))[:, None]
    theirs = CalibratedClassifierCV(FrozenEstimator(_Table(probs).fit(x, labels)), method="temperature")
    theirs.fit(x, labels)
    ours = t.fit_temperature(probs, labels)
    beta = theirs.calibrated_classifiers_[0].calibrators[0].beta_
    assert ours == pytest.approx(1 / beta, rel=1e-4)
    np.testing.assert_allclose(t.scaled(probs, ours), theirs.predict_proba(x), atol=1e-5)


def test_scaling_keeps_each_images_order_of_classes_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    probs, labels = _answers(500, 7, 0.5, seed=1)
    probs[0] = [1.0, 0, 0, 0, 0, 0, 0]  # a zero has no logarithm: it stays (almost) zero
    whole, fitted = t.scaled(probs, 0.5), t.fit_temperature(probs, labels)
    monkeypatch.setattr("core.labels.confident.CHUNK_CELLS", 7 * 33)  # 33 rows at a time: the same numbers
    np.testing.assert_allclose(t.scaled(probs, 0.5), whole, rtol=1e-6)
    assert t.fit_temperature(probs, labels) == pytest.approx(fitted, rel=1e-6)
    np.testing.assert_allclose(whole.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.argsort(-whole[1:], axis=1), np.argsort(-probs[1:], axis=1))
    assert whole[0, 0] == pytest.approx(1.0) and whole[1:].max(axis=1).mean() > probs[1:].max(axis=1).mean()
    np.testing.assert_allclose(t.scaled(probs, 1.0), probs, rtol=1e-5, atol=1e-7)


def test_only_the_answers_of_a_smoothed_network_are_sharpened_and_never_softened() -> None:
    under, labels = _answers(800, 10, 0.4)  # squeezed answers, as label smoothing leaves them: fitted T < 1
    over, _ = _answers(800, 10, 4.0)  # over-confident ones: fitted T > 1
    sharpened, temp = t.undo_smoothing(under, labels, label_smoothing=0.1)
    assert temp < 1 and sharpened.max(axis=1).mean() > under.max(axis=1).mean()
    assert t.undo_smoothing(under, labels, label_smoothing=0.0) == (under, 1.0)  # no smoothing: nothing to undo
    assert t.fit_temperature(over, labels) > 1 and t.undo_smoothing(over, labels, 0.1) == (over, 1.0)
