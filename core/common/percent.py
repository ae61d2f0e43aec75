"""Percentages that never claim a round figure they have not reached, and their uncertainty in words.

A presenter reads "100%" as "every image right" and "0%" as "none": 99.7% shown as "100%" is a false claim to an
audience that cannot check it. ``percent`` rounds as usual, but where that would give 0 or 100 for a value that
is not exactly 0 or 1, it shows more decimals, and past two more it cuts instead of rounding ("99.99%").
"""

from __future__ import annotations

import math

EXTRA_DIGITS = 2  # at most this many decimals more than asked before cutting


def percent(value: float | None, digits: int = 0, missing: str = "n/a") -> str:
    """``value`` (a share, 0..1) as a percentage with ``digits`` decimals, never "100%" nor "0%" unless exact."""
    if value is None or not math.isfinite(value):
        return missing
    scaled = 100.0 * value
    for d in range(digits, digits + EXTRA_DIGITS + 1):
        text = f"{scaled:.{d}f}"
        if not _false_round(float(text), scaled):
            return f"{text}%"
    cut = math.floor(scaled * 10**d) / 10**d if scaled > 50 else math.ceil(scaled * 10**d) / 10**d
    return f"{cut:.{d}f}%"


def _false_round(shown: float, scaled: float) -> bool:
    return (shown >= 100.0 and scaled < 100.0) or (shown <= 0.0 and scaled > 0.0)


def wilson_interval(right: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of ``right`` of ``n`` (scipy's binomial test): where the true accuracy lies with
    ``confidence``, which stays inside 0..1 and is honest at 0 or n right, unlike the normal approximation."""
    from scipy.stats import binomtest

    ci = binomtest(right, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def interval_words(accuracy: float, n: int) -> str:
    """ "between 97.7% and 99.8%": the 95% interval of ``accuracy`` on ``n`` images, as every page says it."""
    low, high = wilson_interval(round(accuracy * n), n)
    return f"between {percent(low, 1)} and {percent(high, 1)}"


def accuracy_with_interval(accuracy: float, n: int, split_words: str = "test images") -> str:
    """ "99.4%, between 97.7% and 99.8% for 310 test images": the score and its 95% interval in words."""
    if n <= 0:
        return percent(accuracy, 1)
    return f"{percent(accuracy, 1)}, {interval_words(accuracy, n)} for {n:,} {split_words}"
