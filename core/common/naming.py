"""Ordering labels the way people read them: "2" before "10", "class_9" before "class_10"."""

from __future__ import annotations

import re
from collections.abc import Iterable

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that compares digit runs as numbers and the rest case-insensitively."""
    return tuple((0, int(part)) if part.isdigit() else (1, part.lower()) for part in _DIGITS.split(text) if part)


def natural_sorted(labels: Iterable[str]) -> list[str]:
    return sorted(labels, key=natural_key)
