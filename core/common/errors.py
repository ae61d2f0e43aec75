"""One error vocabulary for the whole core.

A ``CoreError`` is bad *input* (a file, a path, an option): the command line turns it into one
``error: ...`` line and exit 2, the pages into an ``st.error``. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class CoreError(Exception):
    """Bad input: the message says what was received and what was expected."""


class ImageError(CoreError):
    """An image that cannot be used. ``reason`` is short enough for a table cell."""

    def __init__(self, reason: str, path: str | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class DatasetError(CoreError):
    """A dataset that cannot be read (missing folder, CSV without a label column, ...)."""


class ArchiveError(CoreError):
    """A ZIP upload that is refused (unsafe names, too large, not a ZIP)."""


class DedupError(CoreError):
    """Bad duplicate-search or cleaning settings: the message names the value and the allowed ones."""


class PathNotAllowedError(CoreError):
    """A path typed by a user that lies outside the allowed roots."""


class RunStoreError(CoreError):
    """An unknown run, or a run in a state that does not allow the action."""


class ChoiceError(CoreError):
    """A value that is not one of the allowed ones. ``field``, ``value`` and ``allowed`` let a page word it
    (the field's label, the allowed values in words) without reading the message; the message is the command
    line's, in one wording for every choice: ``optimizer 'sdg': choose one of sgd, adam``."""

    def __init__(self, field: str, value: object, allowed: Sequence[object]) -> None:
        self.field = field
        self.value = value
        self.allowed = tuple(allowed)
        super().__init__(f"{field} {value!r}: choose one of {', '.join(map(str, self.allowed))}")


def check_choice(field: str, value: object, allowed: Sequence[object], error: type[ChoiceError] = ChoiceError) -> None:
    """Raise ``error`` (:class:`ChoiceError` or a subclass that is also a domain's error) unless ``value`` is one of
    ``allowed``."""
    if value not in allowed:
        raise error(field, value, allowed)
