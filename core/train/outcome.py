"""Whether a score means anything: chance level and "about chance".

A classifier that always answers the biggest class scores that class's share of the images without looking at
them: that share, not 1 / classes, is the chance level a score must beat (on a set of 90% cats, 90% is chance).
A score counts as "about chance" when it is not clearly above it: within the noise of a score on ``n`` images (two
standard errors of a proportion at the chance level) or within 5 points of it, whichever is wider. The Runs page,
the result card, a search's trials and the Evaluate page all ask here, so one run is never "about chance" on one
page and a success on another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

MARGIN = 0.05  # a score less than 5 points above chance is not a result to present, however many images


def chance_level(counts: Mapping[str, int]) -> float:
    """The majority class's share of ``counts`` (images per class); 0 for no images."""
    total = sum(counts.values())
    return max(counts.values()) / total if total else 0.0


def about_chance(accuracy: float, chance: float, n: int) -> bool:
    """Whether ``accuracy`` on ``n`` images is not clearly above ``chance`` (see the module docstring)."""
    if n <= 0:
        return True
    noise = 2 * math.sqrt(max(chance * (1 - chance), 0.0) / n)
    return accuracy <= chance + max(MARGIN, noise)


@dataclass(frozen=True)
class ChanceCheck:
    """A score judged against the images it was measured on: their ``chance`` level (None without images), whether
    they ``can_tell`` at all (so few images that even 100% would be about chance cannot), and whether the score is
    ``at_chance`` (never where they cannot tell, nor without a score)."""

    chance: float | None
    can_tell: bool
    at_chance: bool


def check_score(score: float | None, counts: Mapping[str, int]) -> ChanceCheck:
    """Judge ``score`` (an accuracy, or None/NaN when there is none) on images of ``counts`` per class: the one
    rule a run's verdict and a search's trials share."""
    n = sum(counts.values())
    chance = chance_level(counts) if n else None
    can_tell = chance is not None and not about_chance(1.0, chance, n)
    scored = score is not None and not math.isnan(score)
    return ChanceCheck(chance, can_tell, bool(can_tell and scored and about_chance(float(score), chance, n)))
