"""One error vocabulary for the whole core.

A ``CoreError`` is bad *input* (a file, a path, an option): the command line turns it into one
``error: ...`` line and exit 2, the pages into an ``st.error``. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


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
