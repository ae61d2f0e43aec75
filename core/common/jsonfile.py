"""Reading JSON that a user, an upload or a dataset supplies: bounded, typed, and never a traceback.

``json.loads`` recurses once per nesting level, so a file of 100,000 ``[`` raises ``RecursionError`` (not the
``ValueError`` callers catch) and one 900 levels deep parses but breaks whatever walks it next. It also reads a
file of any size, and ``open`` on a FIFO named ``x.json`` waits forever for a writer. ``read_json`` and
``parse_json`` check all of this, and the type the caller expects (an object, a list), and raise one
``JsonFileError`` whose ``reason`` is short enough for a table cell ("nested deeper than 64 levels"), so every
reader lists a bad file with its reason and goes on with the others.

Only the studio's own files (the run store, caches it wrote) are read with plain ``json``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from core.common.errors import CoreError

MAX_BYTES = 16 * 2**20  # far above any metadata file, cleaning record or search space; far below memory
MAX_DEPTH = 64  # real documents nest a few levels; the recursive readers downstream stay far from Python's limit
_TYPE_WORDS = {dict: "an object", list: "a list", str: "a text", int: "a number", float: "a number", bool: "true or false"}  # fmt: skip


class JsonFileError(CoreError):
    """A JSON file or text that cannot be used. ``reason`` is short and never repeats the content."""

    def __init__(self, reason: str, what: str = "") -> None:
        self.reason = reason
        super().__init__(f"{what}: {reason}" if what else reason)


def read_json(
    path: str | os.PathLike[str],
    what: str = "",
    *,
    expect: type | tuple[type, ...] = (dict, list),
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """The document in the regular file ``path``, checked as ``parse_json`` checks it.

    The file is opened without blocking and must be a regular file (a FIFO or a device named ``.json`` is
    refused, not waited on); at most ``max_bytes + 1`` bytes are read. ``what`` names it in the message.

    Raises:
        JsonFileError: unreadable, not a regular file, too large, not JSON, too deep, or not of type ``expect``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise JsonFileError(f"cannot be read ({exc.strerror or exc})", what) from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise JsonFileError("not a regular file", what)
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise JsonFileError(f"cannot be read ({exc.strerror or exc})", what) from None
    return parse_json(data, what, expect=expect, max_bytes=max_bytes, max_depth=max_depth)


def parse_json(
    text: str | bytes,
    what: str = "",
    *,
    expect: type | tuple[type, ...] = (dict, list),
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """The document ``text`` holds, if it is at most ``max_bytes`` long, nested at most ``max_depth`` levels
    (objects and lists), and of type ``expect`` (``object``: any). Invalid UTF-8 is replaced, as a text editor would show it.

    Raises:
        JsonFileError: too large, not JSON, too deep, or not of type ``expect``.
    """
    import json  # here: the command line's start-up does not pay for it when no JSON is read

    if len(text) > max_bytes:
        raise JsonFileError(f"too large (over {_mb(max_bytes)} MB)", what)
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except RecursionError:  # the C decoder stops cleanly at the interpreter's recursion limit
        raise JsonFileError(f"nested deeper than {max_depth} levels", what) from None
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        detail = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else str(exc)[:80]
        raise JsonFileError(f"not valid JSON ({detail})", what) from None
    if _depth_over(doc, max_depth):
        raise JsonFileError(f"nested deeper than {max_depth} levels", what)
    kinds = _as_tuple(expect)
    if not (bool in kinds or object in kinds if isinstance(doc, bool) else isinstance(doc, kinds)):  # True is an int
        raise JsonFileError(f"holds {type_words(doc)}, not {' or '.join(map(type_words, kinds))}", what)
    return doc


def type_words(value: object) -> str:
    """A JSON value's kind in words ("an object", "a list"); a type gives its own words too."""
    kind = value if isinstance(value, type) else type(value)
    return "null" if value is None or kind is type(None) else _TYPE_WORDS.get(kind, kind.__name__)


def _as_tuple(expect: type | tuple[type, ...]) -> tuple[type, ...]:
    return expect if isinstance(expect, tuple) else (expect,)


def _depth_over(doc: object, limit: int) -> bool:
    """True when objects and lists nest deeper than ``limit``; walked without recursion."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:g}"


def is_regular_file(path: Path) -> bool:
    """True for a regular file that is not a symlink (what the studio writes): a link is never its record."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
