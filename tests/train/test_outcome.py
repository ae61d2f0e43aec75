"""Chance level is the biggest class's share; "about chance" allows for the noise of a small set."""

from __future__ import annotations

import pytest

from core.train.outcome import about_chance, chance_level


def test_chance_is_the_majority_share_not_one_over_the_classes() -> None:
    assert chance_level({"cat": 90, "dog": 10}) == pytest.approx(0.9)
    assert chance_level({"a": 1, "b": 1, "c": 1}) == pytest.approx(1 / 3)
    assert chance_level({}) == 0.0


def test_about_chance_allows_for_the_noise_of_a_small_set() -> None:
    assert about_chance(0.49, 0.5, 300)  # 49% on two balanced classes: chance
    assert about_chance(0.60, 0.5, 20)  # 12 of 20: inside two standard errors (22 points) of a coin
    assert not about_chance(0.60, 0.5, 2_000)  # the same share on 2,000 images is a result
    assert about_chance(0.52, 0.5, 100_000)  # however many images, 2 points above chance is not a result
    assert not about_chance(0.994, 0.1, 310)
    assert about_chance(0.9, 0.9, 0)  # nothing measured
