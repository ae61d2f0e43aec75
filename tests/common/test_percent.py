"""Tests for core.common.percent: no share is shown as a round figure it has not reached."""

from __future__ import annotations

import numpy as np
import pytest

from core.common.percent import accuracy_with_interval, percent, wilson_interval


@pytest.mark.parametrize(
    ("value", "digits", "shown"),
    [(0.997, 0, "99.7%"), (0.9996, 1, "99.96%"), (0.99999, 0, "99.99%"), (1.0, 0, "100%"), (1.0, 1, "100.0%"),
     (0.0, 0, "0%"), (0.002, 0, "0.2%"), (0.00001, 0, "0.01%"), (0.5, 0, "50%"), (0.994, 1, "99.4%"),
     (0.123, 0, "12%"), (None, 0, "n/a"), (float("nan"), 1, "n/a")],
)  # fmt: skip
def test_a_share_is_shown_as_usual_unless_rounding_would_claim_all_or_nothing(value, digits, shown) -> None:
    assert percent(value, digits) == shown


def test_no_share_short_of_every_image_is_shown_as_100_or_above_none_as_0() -> None:
    for n in (7, 99, 310, 1000, 2999, 100_000):
        for right in (1, n - 1):
            for digits in (0, 1, 2):
                text = percent(right / n, digits)
                assert text not in {"100%", "100.0%", "100.00%", "0%", "0.0%", "0.00%"}, (right, n, digits)
                assert abs(float(text.rstrip("%")) - 100 * right / n) < 10.0**-digits  # still near the value


def test_the_wilson_interval_matches_the_formula_and_stays_inside_0_and_1() -> None:
    # Wilson's closed form, written out, against scipy's
    z = 1.959963984540054
    for right, n in ((308, 310), (5, 10), (0, 12), (45, 45)):
        p = right / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        low, high = wilson_interval(right, n)
        assert low == pytest.approx(centre - half, rel=1e-9, abs=1e-12)
        assert high == pytest.approx(centre + half, rel=1e-9)
        assert 0.0 <= low <= p <= high <= 1.0


def test_the_interval_in_words_names_the_score_both_ends_and_the_count() -> None:
    assert accuracy_with_interval(308 / 310, 310) == "99.4%, between 97.7% and 99.8% for 310 test images"
    assert accuracy_with_interval(1.0, 45).startswith("100.0%, between 92.1% and 100.0% for 45")
