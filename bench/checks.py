"""What every benchmark uses to refuse a broken run."""

from __future__ import annotations


def check(ok: bool, message: str) -> None:
    """Stop with ``BROKEN RUN: message`` unless ``ok``; not ``assert``: ``python -O`` must not turn a broken run
    into a fast number."""
    if not ok:
        raise SystemExit(f"BROKEN RUN: {message}")
