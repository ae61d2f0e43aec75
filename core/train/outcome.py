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
