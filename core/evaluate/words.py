"""The sentences that explain each number to someone who does not program: the page and the report share them
(with the names of the metrics and splits, from ``core.common.words``).

Every sentence says what the number means for the user's own images, with counts, and says when it could
mislead (too few images, copies of training images in the test).
"""

from __future__ import annotations

import math

from core.common.percent import interval_words, percent
from core.common.words import split_word
from core.evaluate.calibration import Calibration
from core.evaluate.leakage import HonestScore
from core.evaluate.metrics import Metrics

FEW_IMAGES = 20  # below this a score moves by 5+ points per image: say so beside it


def pct(value: float | None, digits: int = 0) -> str:
    return percent(value, digits)  # never "100%" short of every image


def accuracy_sentence(accuracy: float, n: int, split: str = "test", chance: float | None = None) -> str:
    """How many are right, the likely range of the true figure, and (given) the chance level beside it, with
    "about chance" in words when the score is no better (``core.train.outcome.about_chance``)."""
    from core.train.outcome import about_chance

    right = round(accuracy * n)
    likely = interval_words(accuracy, n) if n else "between n/a and n/a"
    text = (f"{right:,} of {n:,} {split_word(split)} images get the right label ({pct(accuracy, 1)}). With this many "
            f"images the true figure is likely {likely} (95% interval).")  # fmt: skip
    if chance is None:
        return text
    if about_chance(accuracy, chance, n):
        return (f"{text} That is about chance: always answering the biggest class gets {pct(chance, 1)}. This model "
                "has not learned to tell the classes apart.")  # fmt: skip
    return f"{text} Chance level (always answering the biggest class): {pct(chance, 1)}."


def score_sentence(metrics: Metrics, split: str) -> str:
    """The accuracy card's sentence for an evaluation, chance level from its own per-class counts (the page and the
    report both say this one)."""
    from core.train.outcome import chance_level

    support = metrics.per_class["support"].tolist()
    chance = chance_level(dict(enumerate(support))) if sum(support) else None
    return accuracy_sentence(metrics.accuracy, metrics.n, split, chance)


def top_k_sentence(value: float, n: int, k: int) -> str:
    if k == 1:
        return "With two classes, the best guess is the only guess: the same as accuracy."
    return f"For {round(value * n):,} of {n:,} images the right label is among the model's {k} best guesses."


def map5_sentence(value: float) -> str:
    return (f"1 point when the first guess is right, 1/2 when it is the second guess, ... 1/5 for the fifth, 0 "
            f"otherwise. Average: {value:.2f} of 1.")  # fmt: skip


def f1_sentence(macro_f1: float, n_classes: int) -> str:
    return (f"The balance of finding each class and being right when naming it, averaged over the {n_classes} "
            f"classes with each class counting the same: {macro_f1:.2f} of 1. A class the model handles badly "
            "pulls it down even when that class is rare.")  # fmt: skip


def log_loss_sentence(value: float, n_classes: int) -> str:
    chance = math.log(max(n_classes, 2))
    return (f"How surprised the model is by the right answers, on average: 0 is never surprised, blind guessing "
            f"among {n_classes} classes scores {chance:.2f}. This model: {value:.2f}.")  # fmt: skip


def calibration_sentence(cal: Calibration) -> str:
    gap = cal.gap
    if not math.isfinite(gap):
        return "No images to judge the model's confidence on."
    side = "more sure of itself than it should be" if gap > 0 else "less sure of itself than it could be"
    if abs(gap) < 0.02:
        side = "about as sure of itself as it should be"
    return (f"When the model says it is 90% sure, is it right 9 times in 10? On average its confidence is "
            f"{pct(cal.ece, 1)} off (calibration error): it is {side}.")  # fmt: skip


def few_images_warning(n: int, accuracy: float | None = None) -> str:
    """Empty when ``n`` is enough; otherwise how rough the score is, with the likely range of the accuracy."""
    if n >= FEW_IMAGES:
        return ""
    step = 100 / max(n, 1)
    text = f"Only {n} image{'s' if n != 1 else ''}: one image more or less right moves the score by {step:.0f} points."
    if accuracy is not None and n > 0:
        low, high = likely_range(round(accuracy * n), n)
        text += f" The true accuracy is likely between {pct(low)} and {pct(high)}."
    return text


def likely_range(right: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a share ``right`` of ``n`` (scipy)."""
    from scipy.stats import binomtest

    ci = binomtest(int(right), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def leakage_sentence(score: HonestScore, split: str = "test") -> str:
    """What the two scores mean: all images, and only those without a copy in train."""
    words = split_word(split)
    if score.n_leaking == 0:
        return (f"Not one of the {score.n_all:,} {words} images has a copy among the training images: the score "
                "is measured on images the model never saw.")  # fmt: skip
    if score.accuracy_clean is None:
        return (f"Every one of the {score.n_all:,} {words} images has a copy among the training images: the "
                "score only shows that the model remembers what it saw. Remove the copies (Duplicates page, "
                "'move leaks') and train again to measure it.")  # fmt: skip
    head = (f"{score.n_leaking:,} of the {score.n_all:,} {words} images have a copy (or near copy) among the "
            f"training images. On all {score.n_all:,} the model scores {pct(score.accuracy_all)}; on the "
            f"{score.n_clean:,} without a copy, {pct(score.accuracy_clean)}.")  # fmt: skip
    gap = score.gap or 0.0
    if gap > 0.005:
        return (f"{head} The {100 * gap:.0f}-point gap is the part of the score that came from recognising images "
                f"it had already seen: expect about {pct(score.accuracy_clean)} on new images.")  # fmt: skip
    return f"{head} The copies did not raise the score here, but they are still not a fair test."
